"""A grid of runs, one after another in this process: methods x seeds (x variants).

  python -m aikd_jax.sweep --config=configs/cifar100_preact_r18.py \
      --methods=baseline,tfkd,pskd,cskd,zipf_ls,tffd,aikd --seeds=0,1,2 --workdir=DIR
  python -m aikd_jax.sweep --sweep=configs/sweeps/table6_omega.py --workdir=DIR

Layout (README, "Sweeps and reproducing the paper"):
  DIR/sweep.json                the grid and the base config (another base config is refused)
  DIR/superior/seed<k>/         the shared superior of seed k: phase 1 only (plain CE, seed
                                k + 1 unless superior_seed is set), trained once when a method
                                of the grid needs one (tfkd, aikd and its ablations)
  DIR/<method>/seed<k>/         a cell: an ordinary run.run workdir (config.json, student/)
  DIR/<variant>/<method>/seed<k>/   the cells of a preset's variant (named config overrides)
  DIR/<variant>/superior/seed<k>/   a variant's own superior, only when its overrides change
                                    phase 1 (e.g. augment with superior_augment='same')

Every cell's config is checked up front (config.parse + methods.create), so a typo stops
the sweep before anything is written. A finished cell (its results.json exists) is
skipped; a half-finished one resumes (run.run does that). A failing cell is reported in
one line and the sweep goes on. Exit status: 0 every cell finished (or the sweep was
stopped by SIGTERM/Ctrl-C: run the same command again to resume), 1 some cells failed
(their count is printed), 2-7 an error before any cell ran (as the trainer's, errors.py).

The Baseline row is a normal student run of method `baseline` under seed k (no superior);
the superiors (seed k + 1) serve the students of seed k.
"""
import contextlib
import copy
import dataclasses
import datetime
import importlib.util
import json
import logging as py_logging
import os
import sys
import time
import traceback
from typing import Callable

import numpy as np

from aikd_jax import console, paths, report
from aikd_jax.errors import ConfigError, UserError, WorkdirError

SWEEP_JSON = 'sweep.json'
SUPERIOR = 'superior'
# The paper's Table 2 methods, in its row order.
DEFAULT_METHODS = ('baseline', 'cskd', 'tfkd', 'pskd', 'tffd', 'zipf_ls', 'aikd')
DEFAULT_SEEDS = (0, 1, 2)
# Keys of the base config that may differ when a sweep is run again (they do not change
# results), besides those of preflight.RESUMABLE_KEYS; method and seed are set per cell.
_PER_CELL = ('method', 'seed')
_NO_AUGMENT = {'cutout': 0, 'mixup': 0.0, 'cutmix': 0.0, 'cutmix_prob': 1.0}


@dataclasses.dataclass
class Cell:
  """One run of the grid: a superior (phase 1 only) or a student workdir."""
  variant: str | None
  method: str  # 'superior' for a shared superior
  seed: int
  workdir: str
  config: dict  # the raw config (nested dict) given to run.run
  superior: 'Cell | None' = None  # the superior cell this student needs

  @property
  def name(self) -> str:
    prefix = f'{self.variant}/' if self.variant else ''
    return f'{prefix}{self.method} seed {self.seed}'

  @property
  def is_superior(self) -> bool:
    return self.method == SUPERIOR

  @property
  def phase_dir(self) -> str:
    return os.path.join(self.workdir, SUPERIOR if self.is_superior else 'student')


@dataclasses.dataclass
class Outcome:
  """What a sweep did: cells in grid order, failures (cell name, message), results."""
  cells: list
  failed: list = dataclasses.field(default_factory=list)
  results: dict = dataclasses.field(default_factory=dict)  # cell name -> results.json
  trained: list = dataclasses.field(default_factory=list)  # names trained this invocation
  stopped: bool = False

  @property
  def exit_code(self) -> int:
    return 1 if self.failed else 0


# -- the grid -------------------------------------------------------------------------


def _plain(raw) -> dict:
  return copy.deepcopy(raw.to_dict() if hasattr(raw, 'to_dict') else dict(raw))


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


def _variant_dir(workdir: str, variant: str | None) -> str:
  return os.path.join(workdir, variant) if variant else workdir


def _superior_raw(base: dict, overrides: dict, seed: int, groups) -> dict:
  """The config of a shared superior workdir: what phase 1 depends on, nothing else.

  Overrides of method groups (aikd.omega, ...) are left out, so variants that differ only
  in the student's objective share one superior. With superior_augment='none' the
  augment group is zeroed, so augmentation variants share it too.
  """
  c = _plain(base)
  for key, value in overrides.items():
    if key.split('.')[0] not in groups:
      set_key(c, key, value, 'superior')
  c.update(method='baseline', seed=seed, train_superior='auto')
  if c.get('superior_augment') == 'none':
    c['augment'] = dict(_NO_AUGMENT)
  return c


def build_cells(base, workdir: str, methods: list[str], seeds: list[int],
                variants: dict | None = None) -> list[Cell]:
  """Every cell of the grid in run order (per seed: superiors, then students), each config
  checked with config.parse and methods.create. Writes nothing; raises ConfigError."""
  from aikd_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from aikd_jax import methods as methods_lib  # pylint: disable=g-import-not-at-top
  base = _plain(base)
  if not methods:
    raise ConfigError('--methods is empty')
  if not seeds:
    raise ConfigError('--seeds is empty')
  for name in variants or {}:
    if not name or name == SUPERIOR or name in methods_lib.names() or '/' in name:
      raise ConfigError(f'variant name {name!r} cannot be a folder of the sweep; rename it')
  external = base.get('superior_workdir') or base.get('superior_init')
  groups = set(methods_lib.config_groups())
  variant_items = list((variants or {None: {}}).items())
  cells, superiors = [], {}
  for seed in seeds:
    base_superior = _superior_raw(base, {}, seed, groups)
    for variant, overrides in variant_items:
      where = f'variant {variant}' if variant else 'the sweep'
      students = []
      for method in methods:
        c = _plain(base)
        for key, value in overrides.items():
          set_key(c, key, value, where)
        c.update(method=method, seed=seed, train_superior='auto')
        cell = Cell(variant, method, seed,
                    os.path.join(_variant_dir(workdir, variant), method, f'seed{seed}'), c)
        try:
          parsed = config_lib.parse(c)
          needs = methods_lib.create(parsed).needs_superior
        except ConfigError as e:
          raise ConfigError(f'cell {cell.name}: {e}') from None
        if needs and not external:
          sup = _superior_raw(base, overrides, seed, groups)
          sup_dir = os.path.join(
              _variant_dir(workdir, None if sup == base_superior else variant), SUPERIOR,
              f'seed{seed}')
          if sup_dir not in superiors:
            try:
              config_lib.parse(sup)
            except ConfigError as e:
              raise ConfigError(f'superior of {cell.name}: {e}') from None
            superiors[sup_dir] = Cell(None if sup == base_superior else variant, SUPERIOR,
                                      seed, sup_dir, sup)
            cells.append(superiors[sup_dir])
          cell.superior = superiors[sup_dir]
          c['superior_workdir'] = sup_dir
        students.append(cell)
      cells += students
  return cells


# -- sweep.json -----------------------------------------------------------------------


def check_sweep_json(workdir: str, base, methods, seeds, variants) -> dict:
  """The sweep.json to write: DIR's grid grown by this one. Another base config, or a
  variant of the same name with other overrides, is a WorkdirError. Writes nothing."""
  from aikd_jax import preflight  # pylint: disable=g-import-not-at-top
  base = _plain(base)
  now = {'base_config': base, 'methods': list(methods), 'seeds': list(seeds),
         'variants': dict(variants or {})}
  path = os.path.join(workdir, SWEEP_JSON)
  if not os.path.exists(path):
    return now
  saved = preflight.read_json(path, 'the sweep\'s grid')
  differ = preflight.differing_keys(saved['base_config'], json.loads(json.dumps(base)),
                                   set(_PER_CELL) | preflight.RESUMABLE_KEYS)
  if differ:
    raise WorkdirError(f'{workdir} holds a sweep with a different base config (differs in: '
                       f'{", ".join(differ)}); use another --workdir')
  for name, overrides in now['variants'].items():
    old = saved.get('variants', {}).get(name)
    if old is not None and old != json.loads(json.dumps(overrides)):
      raise WorkdirError(f'{workdir} has a variant {name} with other overrides ({old}); '
                         'rename the variant or use another --workdir')
  grown = dict(saved)
  grown['base_config'] = base
  grown['methods'] = list(dict.fromkeys(saved.get('methods', []) + now['methods']))
  grown['seeds'] = sorted(set(saved.get('seeds', [])) | set(now['seeds']))
  grown['variants'] = {**saved.get('variants', {}), **now['variants']}
  return grown


def _write_json(path: str, data: dict) -> None:
  paths.write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True))


# -- running --------------------------------------------------------------------------


def _eta(seconds: float) -> str:
  return str(datetime.timedelta(seconds=round(seconds)))


@contextlib.contextmanager
def _own_log_handlers():
  """Closes the log handlers a cell adds (run.run logs to its WORKDIR/log.txt)."""
  root = py_logging.getLogger()
  before = list(root.handlers)
  try:
    yield
  finally:
    for handler in [h for h in root.handlers if h not in before]:
      root.removeHandler(handler)
      handler.close()


def _record_internal_error(cell: Cell, workdir: str) -> str:
  """The traceback goes to the cell's error.log (or DIR/error.log); returns that path."""
  folder = cell.workdir if os.path.isdir(cell.workdir) else workdir
  path = os.path.join(folder, console.ERROR_LOG)
  with open(path, 'a') as f:
    f.write(traceback.format_exc())
  return path


def _run_cell(cell: Cell, stop_requested) -> dict:
  from aikd_jax import run  # pylint: disable=g-import-not-at-top
  with _own_log_handlers():
    if cell.is_superior:
      return run.run_superior_only(cell.config, cell.workdir, stop_requested)
    return run.run(cell.config, cell.workdir, stop_requested)['student']


def run_sweep(base, workdir: str, methods, seeds, variants: dict | None = None,
              stop_requested: Callable[[], bool] = lambda: False, log=None,
              extra: dict | None = None) -> Outcome:
  """Runs every unfinished cell, one after another; returns what happened.

  Raises UserError (nothing written) when a cell's config is invalid, or DIR holds a
  sweep with another base config. `log(line)` prints progress (default: stderr).
  """
  from aikd_jax import run, workdir_lock  # pylint: disable=g-import-not-at-top
  from aikd_jax.train.loop import Preempted  # pylint: disable=g-import-not-at-top
  log = log or (lambda line: print(line, file=sys.stderr, flush=True))
  if paths.is_remote(workdir):
    raise WorkdirError(f'sweep: --workdir {workdir}: a sweep folder must be on a local or shared '
                       'file system (gs:// works for single runs, not for sweeps yet)')
  workdir = paths.absolute(workdir)
  cells = build_cells(base, workdir, list(methods), list(seeds), variants)
  grid = check_sweep_json(workdir, base, methods, seeds, variants)
  grid.update(extra or {})
  out = Outcome(cells)
  with workdir_lock.held(workdir):
    _write_json(os.path.join(workdir, SWEEP_JSON), grid)
    finished = {c.name: run.finished_results(c.phase_dir) for c in cells}
    done = sum(r is not None for r in finished.values())
    n_sup = sum(c.is_superior for c in cells)
    log(f'sweep: {len(cells)} cells ({n_sup} superiors, {len(cells) - n_sup} students) in '
        f'{workdir}, {done} finished already')
    times = []
    for i, cell in enumerate(cells, start=1):
      if finished[cell.name] is not None:
        out.results[cell.name] = finished[cell.name]
        continue
      if cell.superior is not None and cell.superior.name in dict(out.failed):
        out.failed.append((cell.name, f'its superior ({cell.superior.name}) failed'))
        log(f'sweep: cell {i}/{len(cells)} {cell.name} skipped: its superior failed')
        continue
      if stop_requested():
        out.stopped = True
        break
      remaining = sum(finished[c.name] is None for c in cells[i - 1:])
      eta = _eta(np.mean(times) * remaining) if times else '?'
      log(f'sweep: cell {i}/{len(cells)} {cell.name} ({done} done, {len(out.failed)} failed, '
          f'ETA {eta})')
      start = time.monotonic()
      try:
        out.results[cell.name] = _run_cell(cell, stop_requested)
      except Preempted as e:
        out.stopped = True
        log(f'sweep: stopped in cell {cell.name}: {console.one_line(e)}')
        break
      except UserError as e:
        out.failed.append((cell.name, console.one_line(e)))
        log(f'sweep: cell {cell.name} failed: {console.one_line(e)}')
        continue
      except Exception as e:  # pylint: disable=broad-except
        path = _record_internal_error(cell, workdir)
        msg = f'internal error ({type(e).__name__}: {str(e)[:200]}); traceback in {path}'
        out.failed.append((cell.name, console.one_line(msg)))
        log(f'sweep: cell {cell.name} failed: {console.one_line(msg)}')
        continue
      times.append(time.monotonic() - start)
      out.trained.append(cell.name)
      done += 1
  return out


# -- the summary ----------------------------------------------------------------------


def summary(outcome: Outcome, workdir: str) -> str:
  """Per (variant, method): seeds finished and mean top-1 error; the report command."""
  rows = {}
  for cell in outcome.cells:
    key = ((cell.variant + '/') if cell.variant else '') + (
        'superior (plain CE, seed k+1)' if cell.is_superior else cell.method)
    row = rows.setdefault(key, {'total': 0, 'errs': []})
    row['total'] += 1
    res = outcome.results.get(cell.name)
    if res and res.get('top1_err') is not None:
      row['errs'].append(float(res['top1_err']))
  width = max([len(k) for k in rows] + [6])
  lines = [f'{"method":{width}s}  seeds done  top-1 err %']
  for key, row in rows.items():
    errs = row['errs']
    err = report.mean_std(*report.summarize(errs)[:2]) if errs else '—'
    lines.append(f'{key:{width}s}  {len(errs):>4d}/{row["total"]:<5d}  {err}')
  lines += ['', f'report: python -m aikd_jax.report {workdir}']
  return '\n'.join(lines)


# -- the command line -----------------------------------------------------------------


def load_preset(path: str) -> dict:
  """A preset's SWEEP (a dict, or a function returning one): methods, seeds, variants."""
  spec = importlib.util.spec_from_file_location('aikd_sweep_preset', path)
  if spec is None or not os.path.exists(path):
    raise ConfigError(f'--sweep {path} does not exist')
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(f'--sweep {path} failed to load: {console.one_line(e)}') from None
  grid = getattr(module, 'SWEEP', None)
  grid = grid() if callable(grid) else grid
  if not isinstance(grid, dict) or not set(grid) <= {'methods', 'seeds', 'variants'}:
    raise ConfigError(f'--sweep {path} needs a SWEEP dict with methods, seeds, variants')
  return grid


def _split(text: str | None, kind=str) -> list | None:
  if text is None:
    return None
  try:
    return [kind(v.strip()) for v in text.split(',') if v.strip()]
  except ValueError:
    raise ConfigError(f'bad list {text!r}: use comma-separated values') from None


def with_sweep_config(argv: list[str]) -> list[str]:
  """`--sweep=FILE` without `--config` loads the base config from FILE too."""
  has_config = any(a == '--config' or a.startswith('--config=') for a in argv)
  sweep = [a.split('=', 1)[1] for a in argv if a.startswith('--sweep=')]
  if sweep and not has_config:
    return argv[:1] + [f'--config={sweep[-1]}'] + argv[1:]
  return argv


def _define_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config = config_flags.DEFINE_config_file('config', None, 'Base config (ml_collections).',
                                           lock_config=True)
  return config, {
      'workdir': flags.DEFINE_string('workdir', None, 'The sweep folder.'),
      'methods': flags.DEFINE_string('methods', None, 'Comma-separated methods (default: the '
                                     "preset's, else the paper's Table 2 methods)."),
      'seeds': flags.DEFINE_string('seeds', None, 'Comma-separated seeds (default: the '
                                   "preset's, else 0,1,2)."),
      'sweep': flags.DEFINE_string('sweep', None, 'A preset (configs/sweeps/*.py): its SWEEP '
                                   'grid, and its get_config() when --config is not given.'),
      'variants': flags.DEFINE_string('variants', None, "Only these of the preset's variants."),
      'verbose': flags.DEFINE_bool('verbose', False, 'Also show library INFO lines.'),
  }


def main(argv, config_flag, flag_values):
  del argv
  console.quiet_libraries(verbose=flag_values['verbose'].value)
  raw = console.config_value(config_flag)
  workdir = flag_values['workdir'].value
  if raw is None or not workdir:
    console.fail('--workdir and --config (or --sweep) are required', ConfigError.exit_code)
  workdir = paths.absolute(workdir)
  try:
    grid = load_preset(flag_values['sweep'].value) if flag_values['sweep'].value else {}
    methods = (_split(flag_values['methods'].value) or list(grid.get('methods', ()))
               or list(DEFAULT_METHODS))
    seeds = (_split(flag_values['seeds'].value, int) or list(grid.get('seeds', ()))
             or list(DEFAULT_SEEDS))
    variants = grid.get('variants') or None
    wanted = _split(flag_values['variants'].value)
    if wanted:
      unknown = sorted(set(wanted) - set(variants or {}))
      if unknown:
        raise ConfigError(f'unknown variant {unknown[0]}; the preset has: '
                          f'{", ".join(variants or {}) or "none"}')
      variants = {k: v for k, v in variants.items() if k in wanted}
  except UserError as e:
    console.fail(str(e), e.exit_code)
  import jax  # pylint: disable=g-import-not-at-top
  if raw.fast_compile:
    jax.config.update('jax_disable_most_optimizations', True)
  with console.native_stderr_hidden(flag_values['verbose'].value):
    from aikd_jax import run  # pylint: disable=g-import-not-at-top,unused-import
  stop = []
  console.install_stop_handlers(
      stop, 'sweep: stopping: the running cell saves a checkpoint at its next step')
  try:
    outcome = run_sweep(raw, workdir, methods, seeds, variants, lambda: bool(stop),
                        extra={'command': ' '.join(sys.argv)})
  except UserError as e:
    console.fail(str(e), e.exit_code)
  print(summary(outcome, workdir), flush=True)
  if outcome.stopped:
    print('sweep: stopped; run the same command again to resume (finished cells are '
          'skipped)', file=sys.stderr, flush=True)
  if outcome.failed:
    print(f'sweep: {len(outcome.failed)} of {len(outcome.cells)} cells failed:',
          file=sys.stderr)
    for name, msg in outcome.failed:
      print(f'  {name}: {msg}', file=sys.stderr)
    sys.stderr.flush()
  sys.exit(outcome.exit_code)


if __name__ == '__main__':
  from absl import app  # pylint: disable=g-import-not-at-top
  _CONFIG, _FLAGS = _define_flags()
  app.run(lambda argv: main(argv, _CONFIG, _FLAGS), argv=with_sweep_config(sys.argv),
          flags_parser=console.parse_flags)
