"""A sweep's plan: every cell of the grid, written to DIR/sweep.json before anything runs.

A cell is one run: a shared superior (phase 1 only) or a student. It has an index (stable:
a grown grid appends cells, so a running SLURM array never sees its indices move), its
kind, method, seed, variant, workdir, the config keys that differ from the plan's base
config, and the index of the superior it depends on. Any executor (in this process, one
subprocess per device, SLURM job arrays, a Kubernetes Indexed Job) runs cells of the same
plan; `cell_config` gives every one of them the same config.

Layout (docs/reproducing.md):
  DIR/sweep.json                   the plan: base config, grid and cells
  DIR/superior/seed<k>/            the shared superior of seed k (phase 1, seed k + 1)
  DIR/<method>/seed<k>/            a student cell: an ordinary run workdir
  DIR/<variant>/<method>/seed<k>/  the cells of a preset's variant (named config overrides)
  DIR/<variant>/superior/seed<k>/  a variant's own superior, only when its overrides change
                                   phase 1 (e.g. augment with superior_augment='same')
  <cell workdir>/cell.json         the last execution of the cell: state, exit, job id
  .../seeds<a>-<b>-<c>/            with --pack_seeds: the checkpoints of a pack of cells that
                                   differ only in their seed (docs/reproducing.md)

With --pack_seeds the cells of one kind, variant and method are packed: every member
keeps its index, workdir and outputs, and the first member stands for the pack (an
executor runs it, and it runs the whole pack as one program; train/seeds.py).
"""
import copy
import dataclasses
import json
import os

from etils import epath

from aikd_jax import paths, preflight, workdir_lock
from aikd_jax.errors import ConfigError, WorkdirError

SWEEP_JSON = 'sweep.json'
CELL_JSON = 'cell.json'
SUPERIOR, STUDENT = 'superior', 'student'
STATES = ('done', 'running', 'partial', 'failed', 'pending')
# Keys of the base config that may differ when a sweep is planned again (they do not change
# results), besides those of preflight.RESUMABLE_KEYS; method and seed are set per cell.
_PER_CELL = ('method', 'seed')
_NO_AUGMENT = {'cutout': 0, 'mixup': 0.0, 'cutmix': 0.0, 'cutmix_prob': 1.0}


@dataclasses.dataclass(frozen=True)
class Cell:
  """One run of the plan. `overrides` are flat keys ('aikd.omega') over the base config."""
  index: int
  kind: str  # SUPERIOR or STUDENT
  method: str  # what it trains: 'baseline' (plain CE) for a superior
  seed: int
  variant: str | None
  workdir: str
  overrides: dict
  depends_on: int | None = None  # the index of the superior a student needs
  pack: tuple | None = None  # with --pack_seeds: the indices of its pack (first leads)
  pack_dir: str | None = None  # where the pack's checkpoints go

  @property
  def is_superior(self) -> bool:
    return self.kind == SUPERIOR

  @property
  def name(self) -> str:
    prefix = f'{self.variant}/' if self.variant else ''
    packed = f' (pack of {len(self.pack)})' if self.pack else ''
    return f'{prefix}{SUPERIOR if self.is_superior else self.method} seed {self.seed}{packed}'

  @property
  def phase_dir(self) -> str:
    return os.path.join(self.workdir, SUPERIOR if self.is_superior else STUDENT)

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Plan:
  """sweep.json: the base config (a nested dict), the grid it came from, and its cells."""
  workdir: str
  base_config: dict
  methods: tuple
  seeds: tuple
  variants: dict
  cells: tuple
  extra: dict = dataclasses.field(default_factory=dict)  # e.g. the command line
  pack_seeds: bool = False  # cells that differ only in their seed run as one program

  def cell(self, index: int) -> Cell:
    if not 0 <= index < len(self.cells):
      raise ConfigError(f'--cell {index}: the plan in {self.workdir} has cells 0 to '
                        f'{len(self.cells) - 1} (python -m aikd_jax.sweep --workdir='
                        f'{self.workdir} --list)')
    return self.cells[index]

  def to_json(self) -> dict:
    return {**self.extra, 'base_config': self.base_config, 'methods': list(self.methods),
            'seeds': list(self.seeds), 'variants': self.variants,
            'pack_seeds': self.pack_seeds, 'cells': [c.to_json() for c in self.cells]}


# -- configs --------------------------------------------------------------------------


def plain(raw) -> dict:
  """A ConfigDict (or dict) as a JSON-normal nested dict (tuples become lists)."""
  return json.loads(json.dumps(raw.to_dict() if hasattr(raw, 'to_dict') else dict(raw)))


def set_key(config: dict, key: str, value, where: str) -> None:
  """config[a][b] = value for key 'a.b'; an unknown key is a one-line ConfigError."""
  *parents, leaf = key.split('.')
  node = config
  for p in parents:
    if not isinstance(node.get(p), dict):
      raise ConfigError(f'{where}: unknown config key {key}')
    node = node[p]
  if leaf not in node:
    raise ConfigError(f'{where}: unknown config key {key}')
  node[leaf] = value


def with_overrides(base: dict, overrides: dict, where: str = 'the sweep') -> dict:
  config = copy.deepcopy(base)
  for key, value in overrides.items():
    set_key(config, key, value, where)
  return config


def cell_config(plan: Plan, cell: Cell) -> dict:
  """The raw config (nested dict) of a cell, as every executor gives it to run.run."""
  return with_overrides(plan.base_config, cell.overrides, f'cell {cell.index}')


def _diff(base: dict, config: dict) -> dict:
  """The flat keys where `config` differs from `base`; method and seed always."""
  flat_base, flat = preflight.flatten(base), preflight.flatten(config)
  return {k: v for k, v in sorted(flat.items())
          if flat_base.get(k) != v or k in _PER_CELL}


# -- building the grid ----------------------------------------------------------------


def _superior_config(base: dict, overrides: dict, seed: int, groups) -> dict:
  """The config of a shared superior workdir: what phase 1 depends on, nothing else.

  Overrides of method groups (aikd.omega, ...) are left out, so variants that differ only
  in the student's objective share one superior. With superior_augment='none' the
  augment group is zeroed, so augmentation variants share it too.
  """
  phase1 = {k: v for k, v in overrides.items() if k.split('.')[0] not in groups}
  c = with_overrides(base, phase1, 'superior')
  c.update(method='baseline', seed=seed, train_superior='auto')
  if c.get('superior_augment') == 'none':
    c['augment'] = dict(_NO_AUGMENT)
  return c


def _check_names(methods, seeds, variants) -> None:
  from aikd_jax import methods as methods_lib  # pylint: disable=g-import-not-at-top
  for what, values in (('--methods', methods), ('--seeds', seeds)):
    if not values:
      raise ConfigError(f'{what} is empty')
    dupes = sorted({str(v) for v in values if list(values).count(v) > 1})
    if dupes:
      raise ConfigError(f'{what} names {dupes[0]} twice')
  for name in variants or {}:
    if (not isinstance(name, str) or not name or name == SUPERIOR or name == STUDENT
        or name in methods_lib.names() or '/' in name):
      raise ConfigError(f'variant name {name!r} cannot be a folder of the sweep; rename it')


def _parse(config: dict, where: str):
  from aikd_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from aikd_jax import methods as methods_lib  # pylint: disable=g-import-not-at-top
  try:
    return methods_lib.create(config_lib.parse(config))
  except ConfigError as e:
    raise ConfigError(f'{where}: {e}') from None


def grid_cells(base: dict, workdir: str, methods, seeds, variants) -> list[dict]:
  """Every run of the grid in run order (per seed: superiors, then students), as dicts
  {kind, method, seed, variant, workdir, config, superior (its workdir)}; each config is
  checked with config.parse and methods.create. Writes nothing; raises ConfigError."""
  from aikd_jax import methods as methods_lib  # pylint: disable=g-import-not-at-top
  _check_names(methods, seeds, variants)
  external = base.get('superior_workdir') or base.get('superior_init')
  groups = set(methods_lib.config_groups())
  runs, superiors = [], set()
  for seed in seeds:
    base_superior = _superior_config(base, {}, seed, groups)
    for variant, overrides in (variants or {None: {}}).items():
      where = f'variant {variant}' if variant else 'the sweep'
      students = []
      for method in methods:
        c = with_overrides(base, overrides, where)
        c.update(method=method, seed=seed, train_superior='auto')
        folder = os.path.join(workdir, variant or '', method, f'seed{seed}')
        name = f'{variant + "/" if variant else ""}{method} seed {seed}'
        run = {'kind': STUDENT, 'method': method, 'seed': seed, 'variant': variant,
               'workdir': os.path.normpath(folder), 'config': c, 'superior': None}
        if _parse(c, f'cell {name}').needs_superior and not external:
          sup = _superior_config(base, overrides, seed, groups)
          own = sup != base_superior
          sup_dir = os.path.normpath(
              os.path.join(workdir, variant if own else '', SUPERIOR, f'seed{seed}'))
          if sup_dir not in superiors:
            _parse(sup, f'superior of {name}')
            superiors.add(sup_dir)
            runs.append({'kind': SUPERIOR, 'method': 'baseline', 'seed': seed,
                         'variant': variant if own else None, 'workdir': sup_dir,
                         'config': sup, 'superior': None})
          c['superior_workdir'] = sup_dir
          run['superior'] = sup_dir
        students.append(run)
      runs += students
  return runs


def build(base, workdir: str, methods, seeds, variants: dict | None = None,
          previous: Plan | None = None, extra: dict | None = None,
          pack_seeds: bool = False) -> Plan:
  """The plan of a grid. With `previous` (DIR's sweep.json), its cells keep their indices
  and new ones are appended; another base config is refused. With `pack_seeds`, new
  cells that differ only in their seed are packed. Writes nothing."""
  base = plain(base)
  variants = json.loads(json.dumps(dict(variants or {})))
  if previous is not None:
    _check_compatible(previous, base, variants, pack_seeds)
    methods = list(dict.fromkeys(list(previous.methods) + list(methods)))
    seeds = sorted(set(previous.seeds) | set(seeds))
    variants = {**previous.variants, **variants}
  runs = grid_cells(base, workdir, list(methods), list(seeds), variants)
  index = {c.workdir: c.index for c in previous.cells} if previous else {}
  for run in runs:
    index.setdefault(run['workdir'], len(index))
  cells = [Cell(index[r['workdir']], r['kind'], r['method'], r['seed'], r['variant'],
                r['workdir'], _diff(base, r['config']),
                index[r['superior']] if r['superior'] else None) for r in runs]
  old = {c.index: c for c in previous.cells} if previous else {}
  cells = [old.get(c.index, c) for c in cells]  # a planned cell keeps its pack
  if pack_seeds:
    cells = _packed(cells, set(old))
  kept = {c.index for c in cells}
  # Cells of the previous plan that this grid no longer builds stay, so indices stay dense.
  cells += [c for c in old.values() if c.index not in kept]
  cells.sort(key=lambda c: c.index)
  return Plan(workdir, base, tuple(methods), tuple(seeds), variants, tuple(cells),
              {**(previous.extra if previous else {}), **(extra or {})}, pack_seeds)


def _packed(cells: list, planned: set) -> list:
  """`cells` with the new ones (not in `planned`) that differ only in their seed packed:
  superiors first, then students of one folder (.../<method>/seed<k>) whose superiors
  are one pack (or which need none), so a pack waits for one superior pack."""
  by_index = {c.index: c for c in cells}
  for kind in (SUPERIOR, STUDENT):
    groups = {}
    for c in cells:
      if c.index in planned or c.kind != kind:
        continue
      sup = by_index.get(c.depends_on)
      needs = None if sup is None else (sup.pack or (sup.index,))
      groups.setdefault((os.path.dirname(c.workdir), needs), []).append(c)
    for (folder, _), group in groups.items():
      if len(group) < 2:
        continue
      group.sort(key=lambda c: c.index)
      pack = tuple(c.index for c in group)
      pack_dir = os.path.join(folder, 'seeds' + '-'.join(str(c.seed) for c in group))
      by_index.update({c.index: dataclasses.replace(c, pack=pack, pack_dir=pack_dir)
                       for c in group})
    cells = [by_index[c.index] for c in cells]
  return cells


def units(plan: Plan, cells) -> list:
  """What executors run: each unpacked cell, and for each pack its first member (which
  runs the pack), in plan order."""
  lead = {(plan.cells[c.pack[0]] if c.pack else c).index for c in cells}
  return [plan.cells[i] for i in sorted(lead)]


def members(plan: Plan, cell: Cell) -> list:
  """The cells one execution of `cell` trains: its pack, or itself."""
  return [plan.cells[i] for i in cell.pack] if cell.pack else [cell]


def unit_finished(plan: Plan, cell: Cell) -> dict | None:
  """`cell`'s results.json when it and every member of its pack are finished, else None."""
  found = [finished(c) for c in members(plan, cell)]
  return None if any(r is None for r in found) else finished(cell)


def _check_compatible(previous: Plan, base: dict, variants: dict, pack_seeds: bool) -> None:
  if previous.pack_seeds != pack_seeds:
    said = 'with' if previous.pack_seeds else 'without'
    raise WorkdirError(f'{previous.workdir} was planned {said} --pack_seeds: plan it '
                       f'{said} --pack_seeds again, or use another --workdir')
  differ = preflight.differing_keys(previous.base_config, base,
                                    set(_PER_CELL) | preflight.RESUMABLE_KEYS)
  if differ:
    raise WorkdirError(f'{previous.workdir} holds a sweep with a different base config '
                       f'(differs in: {", ".join(differ)}); use another --workdir')
  for name, overrides in variants.items():
    old = previous.variants.get(name)
    if old is not None and old != overrides:
      raise WorkdirError(f'{previous.workdir} has a variant {name} with other overrides '
                         f'({old}); rename the variant or use another --workdir')


# -- sweep.json -----------------------------------------------------------------------


def plan_path(workdir: str) -> str:
  return os.path.join(workdir, SWEEP_JSON)


def _bad_plan(path: str, why: str) -> WorkdirError:
  return WorkdirError(f'{path} is not a sweep plan ({why}); restore it, or use another '
                      '--workdir')


def read(workdir: str) -> Plan | None:
  """DIR/sweep.json, or None if there is none; a damaged one is one WorkdirError line."""
  path = plan_path(workdir)
  if not os.path.exists(path):
    return None
  data = preflight.read_json(path, 'the sweep plan')
  if not isinstance(data, dict) or not isinstance(data.get('base_config'), dict):
    raise _bad_plan(path, 'no base_config object')
  try:
    cells = tuple(Cell(**{**c, 'pack': tuple(c['pack']) if c.get('pack') else None})
                  for c in data.get('cells', ()))
    extra = {k: v for k, v in data.items() if k not in (
        'base_config', 'methods', 'seeds', 'variants', 'cells', 'pack_seeds')}
    plan = Plan(workdir, data['base_config'], tuple(data.get('methods', ())),
                tuple(data.get('seeds', ())), dict(data.get('variants') or {}), cells, extra,
                bool(data.get('pack_seeds', False)))
  except (AttributeError, TypeError, ValueError) as e:
    raise _bad_plan(path, f'a cell or field of the wrong shape: {e}') from None
  if [c.index for c in cells] != list(range(len(cells))):
    raise _bad_plan(path, 'its cells are not numbered 0, 1, 2, ...')
  return plan


def read_existing(workdir: str) -> Plan:
  """The plan of DIR, which must have one (for --cell, --list, --status, --submit)."""
  plan = read(workdir)
  if plan is None or not plan.cells:
    raise WorkdirError(f'{workdir} has no sweep plan ({SWEEP_JSON} with cells); plan it '
                       'first: python -m aikd_jax.sweep --config=... --workdir=DIR --submit=none')
  return plan


def write(plan: Plan) -> None:
  paths.write_text_atomic(plan_path(plan.workdir),
                          json.dumps(plan.to_json(), indent=2, sort_keys=True))


# -- what the workdirs say ------------------------------------------------------------


def _read_dict(path: str) -> dict | None:
  try:
    with open(path) as f:
      data = json.load(f)
  except (OSError, ValueError):
    return None
  return data if isinstance(data, dict) else None


def finished(cell: Cell) -> dict | None:
  """The cell's results.json if it reads back, else None. Reads only."""
  return _read_dict(os.path.join(cell.phase_dir, 'results.json'))


def record(cell: Cell) -> dict:
  """The cell's cell.json (its last execution), or {}."""
  return _read_dict(os.path.join(cell.workdir, CELL_JSON)) or {}


def state(cell: Cell) -> str:
  """done, running (a live run holds its lock), failed (its last execution failed),
  partial (checkpoints, or stopped) or pending, from the workdir alone. Reads only."""
  if finished(cell) is not None:
    return 'done'
  if workdir_lock.holder(cell.workdir) is not None:
    return 'running'
  last = record(cell).get('state')
  if last == 'failed':
    return 'failed'
  phase = SUPERIOR if cell.is_superior else STUDENT  # a pack's checkpoints are in its folder
  checkpoints = epath.Path(cell.pack_dir or cell.workdir) / phase / 'checkpoints'
  if last in ('stopped', 'running') or (checkpoints.is_dir() and any(checkpoints.iterdir())):
    return 'partial'
  return 'pending'
