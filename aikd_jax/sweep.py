"""A grid of runs (methods x seeds x variants) as a plan of cells, and its executors.

  # plan and run every cell here, one after another (the default)
  python -m aikd_jax.sweep --config=configs/cifar100_preact_r18.py --workdir=DIR
  python -m aikd_jax.sweep --sweep=configs/sweeps/table6_omega.py --workdir=DIR
  # the same plan on a cluster or on every GPU of this machine
  python -m aikd_jax.sweep --sweep=... --workdir=DIR --submit=slurm --slurm.gpus=1
  python -m aikd_jax.sweep --sweep=... --workdir=DIR --submit=local --parallel=8
  python -m aikd_jax.sweep --sweep=... --workdir=DIR --submit=none  # plan only
  # the seeds of each cell trained as one vmapped program (one task per pack)
  python -m aikd_jax.sweep --sweep=... --workdir=DIR --pack_seeds
  # one cell of an existing plan (K, or the scheduler's SLURM_ARRAY_TASK_ID /
  # JOB_COMPLETION_INDEX); the plan's table and its progress
  python -m aikd_jax.sweep --workdir=DIR --cell=K
  python -m aikd_jax.sweep --workdir=DIR --list
  python -m aikd_jax.sweep --workdir=DIR --status

The plan (plan.py) is written to DIR/sweep.json before anything runs; every cell's
config is checked first, so a typo stops the sweep before anything is written. A finished
cell is skipped, a partial one resumes. Exit status: 0 every cell finished, or the sweep
was stopped (run the same command again to resume), or the cells were submitted; 1 some
cells failed (they are listed); 2-8 an error before any cell ran (errors.py; docs/errors.md).
`--cell` exits with the cell's own status, and 75 when it was stopped before finishing.
"""
import dataclasses
import importlib.util
import os
import sys
import time

from aikd_jax import cells as cells_lib, cli, console, local_pool, paths, plan as plan_lib
from aikd_jax import report, slurm
from aikd_jax.errors import CELL_STOPPED, ConfigError, UserError, WorkdirError

SWEEP_JSON = plan_lib.SWEEP_JSON
# The paper's Table 2 methods, in its row order.
DEFAULT_METHODS = ('baseline', 'cskd', 'tfkd', 'pskd', 'tffd', 'zipf_ls', 'aikd')
DEFAULT_SEEDS = (0, 1, 2)
SUBMIT = ('inprocess', 'local', 'slurm', 'none')
# Where a scheduler's array task finds its index: SLURM job arrays, Kubernetes Indexed Jobs.
INDEX_VARIABLES = ('SLURM_ARRAY_TASK_ID', 'JOB_COMPLETION_INDEX')


@dataclasses.dataclass
class Outcome:
  """What a sweep did: cells in plan order, failures (cell name, message), results."""
  cells: list
  failed: list = dataclasses.field(default_factory=list)
  results: dict = dataclasses.field(default_factory=dict)  # cell name -> results.json
  trained: list = dataclasses.field(default_factory=list)  # names trained this invocation
  stopped: bool = False

  @property
  def exit_code(self) -> int:
    return 1 if self.failed else 0


def _stderr(line: str) -> None:
  print(line, file=sys.stderr, flush=True)


# -- planning -------------------------------------------------------------------------


def check_folder(workdir: str) -> str:
  """The sweep folder as an absolute local path; one WorkdirError line when it cannot be."""
  if paths.is_remote(workdir):
    raise WorkdirError(f'sweep: --workdir {workdir}: a sweep folder must be on a local or '
                       'shared file system (gs:// works for single runs, not for sweeps yet)')
  workdir = paths.absolute(workdir)
  probe = workdir
  while not os.path.exists(probe):
    probe = os.path.dirname(probe)
  if not os.path.isdir(probe):
    raise WorkdirError(f'sweep: --workdir {workdir}: {probe} is a file, not a folder')
  if not os.access(probe, os.W_OK | os.X_OK):
    raise WorkdirError(f'sweep: --workdir {workdir}: {probe} is not writable')
  return workdir


def plan_sweep(base, workdir: str, methods, seeds, variants: dict | None = None,
               extra: dict | None = None, pack_seeds: bool = False) -> plan_lib.Plan:
  """The plan of DIR grown by this grid; checks everything, writes nothing."""
  workdir = check_folder(workdir)
  return plan_lib.build(base, workdir, list(methods), list(seeds), variants,
                        plan_lib.read(workdir), extra, pack_seeds)


def select(plan: plan_lib.Plan, methods, seeds, variants) -> list:
  """The cells of `plan` that this grid asks for (a grown plan has others too): its
  students and the superiors they need, read from the plan (nothing is parsed again)."""
  names = set(variants or {None: {}})
  students = {c.index for c in plan.cells if not c.is_superior and c.method in methods
              and c.seed in seeds and c.variant in names}
  needed = {plan.cells[i].depends_on for i in students}
  return [c for c in plan.cells if c.index in students or c.index in needed]


# -- the in-process executor ----------------------------------------------------------


def run_cells(plan: plan_lib.Plan, cells: list, stop_requested=lambda: False,
              log=_stderr) -> Outcome:
  """Runs the unfinished `cells` one after another in this process (a pack at once)."""
  from aikd_jax.train.loop import Preempted  # pylint: disable=g-import-not-at-top
  out = Outcome(cells)
  out.results.update({c.name: r for c in cells if (r := plan_lib.finished(c)) is not None})
  n_sup = sum(c.is_superior for c in cells)
  log(f'sweep: {len(cells)} cells ({n_sup} superiors, {len(cells) - n_sup} students) in '
      f'{plan.workdir}, {len(out.results)} finished already')
  cells = plan_lib.units(plan, cells)
  finished = {c.index: plan_lib.unit_finished(plan, c) for c in cells}
  done = sum(r is not None for r in finished.values())
  failed, times = {}, []
  for i, cell in enumerate(cells, start=1):
    if finished[cell.index] is not None:
      continue
    if cell.depends_on in failed:
      failed[cell.index] = f'its superior ({failed[cell.depends_on]}) failed'
      out.failed.append((cell.name, failed[cell.index]))
      log(f'sweep: cell {i}/{len(cells)} {cell.name} skipped: its superior failed')
      continue
    if stop_requested():
      out.stopped = True
      break
    remaining = sum(finished[c.index] is None for c in cells[i - 1:])
    eta = console.duration(sum(times) / len(times) * remaining) if times else '?'
    log(f'sweep: cell {i}/{len(cells)} {cell.name} ({done} done, {len(out.failed)} failed, '
        f'ETA {eta})')
    start = time.monotonic()
    try:
      cells_lib.execute(plan, cell, stop_requested)
      out.results.update({m.name: plan_lib.finished(m) for m in plan_lib.members(plan, cell)})
    except Preempted as e:
      out.stopped = True
      log(f'sweep: stopped in cell {cell.name}: {console.one_line(e)}')
      break
    except (cells_lib.CellFailed, UserError) as e:
      failed[cell.index] = cell.name
      out.failed.append((cell.name, console.one_line(e)))
      log(f'sweep: cell {cell.name} failed: {console.one_line(e)}')
      continue
    times.append(time.monotonic() - start)
    out.trained.append(cell.name)
    done += 1
  return out


def run_sweep(base, workdir: str, methods, seeds, variants: dict | None = None,
              stop_requested=lambda: False, log=_stderr, extra: dict | None = None,
              pack_seeds: bool = False) -> Outcome:
  """Plans the grid (nothing is written if a config is invalid), writes DIR/sweep.json and
  runs its unfinished cells one after another in this process."""
  from aikd_jax import workdir_lock  # pylint: disable=g-import-not-at-top
  plan = plan_sweep(base, workdir, methods, seeds, variants, extra, pack_seeds)
  with workdir_lock.held(plan.workdir):
    plan_lib.write(plan)
    return run_cells(plan, select(plan, methods, seeds, variants), stop_requested, log)


# -- what the plan's cells are doing --------------------------------------------------


def states(plan: plan_lib.Plan) -> tuple[dict, dict]:
  """({cell index: state}, {cell index: SLURM's word}) from the workdirs and, for a plan
  submitted to SLURM, its queue ('queued' or 'running') and accounting (a task that ended
  without finishing its cell: 'failed', e.g. CANCELLED by a failed superior)."""
  found = {c.index: plan_lib.state(c) for c in plan.cells}
  jobs = slurm.job_ids(plan.workdir)
  queue, notes = slurm.queue_states(jobs), {}
  for index, word in queue.items():
    if found.get(index) in ('pending', 'partial', 'failed'):
      found[index] = 'running' if word == 'RUNNING' else 'queued'
  for index, word in slurm.accounting_states(jobs).items():
    if index not in queue and found.get(index) in ('pending', 'partial', 'failed'):
      notes[index] = word
      if word in slurm.FAILED and found[index] == 'pending':
        found[index] = 'failed'
  return found, notes


def list_table(plan: plan_lib.Plan, found: dict) -> str:
  """The plan as a table: index, cell, needs (its superior), status, workdir."""
  width = max([len(c.name) for c in plan.cells] + [4])
  lines = [f'{"cell":>5s}  {"name":{width}s}  {"needs":>5s}  {"status":8s}  workdir']
  for c in plan.cells:
    needs = '' if c.depends_on is None else str(c.depends_on)
    lines.append(f'{c.index:>5d}  {c.name:{width}s}  {needs:>5s}  {found[c.index]:8s}  '
                 f'{os.path.relpath(c.workdir, plan.workdir)}')
  return '\n'.join(lines)


def status_text(plan: plan_lib.Plan, found: dict, notes: dict | None = None) -> str:
  """Counts per state, and each failed cell with its message and log."""
  notes = notes or {}
  counts = {s: sum(v == s for v in found.values()) for s in
            ('done', 'running', 'queued', 'partial', 'pending', 'failed')}
  lines = [f'sweep {plan.workdir}: {len(plan.cells)} cells: '
           + ', '.join(f'{n} {s}' for s, n in counts.items() if n or s in ('done', 'failed'))]
  for c in plan.cells:
    if found[c.index] == 'failed':
      rec = plan_lib.record(c)
      message = rec.get('message') or f'SLURM says {notes.get(c.index, "?")}'
      log = rec.get('error_log') or os.path.join(c.workdir, 'log.txt')
      lines.append(f'  failed: cell {c.index} {c.name}: {message} '
                   f'(exit {rec.get("exit_code", "?")}; log: {log})')
  return '\n'.join(lines)


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


# -- the command line: the grid -------------------------------------------------------


def load_preset(path: str) -> dict:
  """A preset's SWEEP (a dict, or a function returning one): methods, seeds, variants."""
  spec = importlib.util.spec_from_file_location('aikd_sweep_preset', path)
  if spec is None or not os.path.exists(path):
    raise ConfigError(f'--sweep {path} does not exist')
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
    grid = getattr(module, 'SWEEP', None)
    grid = grid() if callable(grid) else grid
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(f'--sweep {path} failed to load: {console.one_line(e)}') from None
  shapes = {'methods': (list, tuple), 'seeds': (list, tuple), 'variants': dict}
  if not isinstance(grid, dict) or not set(grid) <= set(shapes) or not all(
      isinstance(v, shapes[k]) for k, v in grid.items()):
    raise ConfigError(f'--sweep {path} needs SWEEP = dict(methods=(...), seeds=(...), '
                      'variants={name: {key: value}})')
  if not all(isinstance(v, dict) for v in grid.get('variants', {}).values()):
    raise ConfigError(f'--sweep {path}: each variant must be a dict of config overrides')
  return grid


def split_list(flag: str, text: str | None, kind=str) -> list | None:
  """A comma-separated flag's values (None if not given); empty or bad is a ConfigError."""
  if text is None:
    return None
  try:
    values = [kind(v.strip()) for v in text.split(',')]
  except ValueError:
    raise ConfigError(f'--{flag}={text!r}: use comma-separated values') from None
  if any(v == '' for v in values) or not values:
    raise ConfigError(f'--{flag}={text!r} has an empty entry')
  return values


def grid_from_flags(values: dict) -> tuple[list, list, dict | None]:
  """(methods, seeds, variants) from --methods, --seeds, --sweep and --variants."""
  grid = load_preset(values['sweep']) if values['sweep'] else {}
  methods = split_list('methods', values['methods']) or list(
      grid.get('methods') or DEFAULT_METHODS)
  seeds = split_list('seeds', values['seeds'], int) or list(grid.get('seeds') or DEFAULT_SEEDS)
  variants = grid.get('variants') or None
  wanted = split_list('variants', values['variants'])
  if wanted:
    unknown = sorted(set(wanted) - set(variants or {}))
    if unknown:
      raise ConfigError(f'unknown variant {unknown[0]}; the preset has: '
                        f'{", ".join(variants or {}) or "none"}')
    variants = {k: v for k, v in variants.items() if k in wanted}
  return methods, seeds, variants


def with_sweep_config(argv: list[str]) -> list[str]:
  """`--sweep=FILE` without `--config` loads the base config from FILE too; a bare
  `--cell` (the scheduler gives the index) is `--cell=auto`."""
  argv = ['--cell=auto' if a == '--cell' else a for a in argv]
  has_config = any(a == '--config' or a.startswith('--config=') for a in argv)
  sweep = [a.split('=', 1)[1] for a in argv if a.startswith('--sweep=')]
  if sweep and not has_config:
    return argv[:1] + [f'--config={sweep[-1]}'] + argv[1:]
  return argv


# -- the command line: one cell -------------------------------------------------------


def cell_index(flag: str, kind: str | None, plan: plan_lib.Plan, environ=os.environ) -> int:
  """The plan index of `--cell=K` or `--cell=auto` (the scheduler's array index). With
  `--cell_kind`, the index counts only that kind's cells, or packs in a packed plan (a
  Kubernetes Indexed Job per kind, whose indices run 0..n-1)."""
  if flag == 'auto':
    found = [(v, environ[v]) for v in INDEX_VARIABLES if environ.get(v, '') != '']
    if not found:
      raise ConfigError(f'--cell without an index needs {" or ".join(INDEX_VARIABLES)}')
    name, flag = found[0]
  else:
    name = '--cell'
  if not flag.isdigit():
    raise ConfigError(f'{name}={flag!r}: a cell index is a number >= 0')
  index = int(flag)
  if kind:  # in a packed plan, the packs of that kind (each through its first cell)
    of_kind = [c.index for c in plan_lib.units(plan, plan.cells) if c.kind == kind]
    if index >= len(of_kind):
      raise ConfigError(f'{name}={index}: the plan has {len(of_kind)} {kind} cells')
    return of_kind[index]
  return plan.cell(index).index


def run_one_cell(plan: plan_lib.Plan, index: int, stop) -> int:
  """`--cell`: trains one cell; returns the exit status (prints one line either way)."""
  from aikd_jax.train.loop import Preempted  # pylint: disable=g-import-not-at-top
  cell = plan.cell(index)
  _stderr(f'sweep: cell {index} {cell.name} in {cell.workdir}')
  try:
    results = cells_lib.execute(plan, cell, lambda: bool(stop))
  except Preempted as e:
    _stderr(f'sweep: cell {index} stopped: {console.one_line(e)}; run it again to resume')
    return CELL_STOPPED
  except cells_lib.CellFailed as e:
    console.fail(f'cell {index} ({cell.name}): {e}', e.exit_code)
  except UserError as e:
    console.fail(str(e), e.exit_code)
  print(f'cell {index} {cell.name}: done, top-1 err {results.get("top1_err")} % '
        f'({cell.phase_dir}/results.json)', flush=True)
  return 0


# -- the command line -----------------------------------------------------------------


def _define_flags(values) -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_dict, config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file('config', None, 'Base config (ml_collections).',
                                  flag_values=values, lock_config=True)
  # .extra: ';'-separated sbatch options on the command line.
  slurm_defaults = config_dict.ConfigDict({**dataclasses.asdict(slurm.Options()), 'extra': ''})
  config_flags.DEFINE_config_dict(
      'slurm', slurm_defaults, 'With --submit=slurm: what each cell asks of SLURM '
      '(--slurm.partition, .account, .time, .gpus, .cpus, .mem, .throttle, .extra).',
      flag_values=values)
  define = lambda kind, name, default, *rest: kind(name, default, *rest, flag_values=values)
  define(flags.DEFINE_string, 'workdir', None, 'The sweep folder.')
  define(flags.DEFINE_string, 'methods', None, 'Comma-separated methods (default: the '
         "preset's, else the paper's Table 2 methods).")
  define(flags.DEFINE_string, 'seeds', None, 'Comma-separated seeds (default: the '
         "preset's, else 0,1,2).")
  define(flags.DEFINE_string, 'sweep', None, 'A preset (configs/sweeps/*.py): its SWEEP '
         'grid, and its get_config() when --config is not given.')
  define(flags.DEFINE_string, 'variants', None, "Only these of the preset's variants.")
  define(flags.DEFINE_enum, 'submit', 'inprocess', SUBMIT, 'Where the cells run: '
         'inprocess (one after another here), local (--parallel subprocesses, one GPU each), '
         'slurm (job arrays), none (write the plan only).')
  define(flags.DEFINE_integer, 'parallel', None, 'With --submit=local: cells at once '
         '(default: one per visible GPU, else 1).')
  define(flags.DEFINE_bool, 'dry_run', False, 'With --submit=slurm: print the script and the '
         'sbatch commands; submit and write nothing.')
  define(flags.DEFINE_string, 'cell', None, 'Run only this cell of DIR\'s plan; a bare '
         '--cell reads SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX.')
  define(flags.DEFINE_enum, 'cell_kind', None, [plan_lib.SUPERIOR, plan_lib.STUDENT],
         'With --cell: count the index within this kind of cell.')
  define(flags.DEFINE_bool, 'list', False, 'Print the plan (index, cell, status); train and '
         'write nothing.')
  define(flags.DEFINE_bool, 'status', False, 'Count the plan\'s cells by state (with '
         'SLURM\'s view where SLURM is present), name failed ones.')
  define(flags.DEFINE_bool, 'pack_seeds', False, 'Train the seeds of each cell as one '
         'vmapped program (one task per pack; docs/reproducing.md, Packing seeds).')
  define(flags.DEFINE_bool, 'verbose', False, 'Also show library INFO lines.')


def _import_trainer(raw_fast_compile: bool, verbose: bool) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  if raw_fast_compile:
    jax.config.update('jax_disable_most_optimizations', True)
  with console.native_stderr_hidden(verbose):
    console.hide_gpus_from_tf()
    from aikd_jax import run  # pylint: disable=g-import-not-at-top,unused-import


def _report_outcome(outcome: Outcome, workdir: str) -> int:
  print(summary(outcome, workdir), flush=True)
  if outcome.stopped:
    _stderr('sweep: stopped; run the same command again to resume (finished cells are '
            'skipped)')
  if outcome.failed:
    _stderr(f'sweep: {len(outcome.failed)} of {len(outcome.cells)} cells failed:')
    for name, msg in outcome.failed:
      _stderr(f'  {name}: {msg}')
  return outcome.exit_code


def _existing_plan_command(values: dict, workdir: str, stop) -> int:
  """--cell, --list or --status on DIR's plan."""
  plan = plan_lib.read_existing(workdir)
  if values['cell'] is not None:
    index = cell_index(values['cell'], values['cell_kind'], plan)
    _import_trainer(plan.base_config.get('fast_compile', False), values['verbose'])
    return run_one_cell(plan, index, stop)
  found, notes = states(plan)
  print(list_table(plan, found) if values['list'] else status_text(plan, found, notes),
        flush=True)
  return 0


def _run_plan(plan, cells, values: dict, stop) -> int:
  """Writes the plan and hands `cells` to the --submit executor."""
  from aikd_jax import workdir_lock  # pylint: disable=g-import-not-at-top
  mode = values['submit']
  units = plan_lib.units(plan, cells)  # a pack runs as one task, through its first cell
  if mode == 'slurm':
    options = slurm.Options.from_config(values['slurm'])
    todo = [c for c in units if plan_lib.unit_finished(plan, c) is None]
    if values['dry_run']:
      slurm.submit(plan, todo, options, True, print)
      return 0
    with workdir_lock.held(plan.workdir):
      plan_lib.write(plan)
      slurm.submit(plan, todo, options, False, _stderr)
    _stderr(f'sweep: progress: python -m aikd_jax.sweep --workdir={plan.workdir} --status')
    return 0
  devices = None
  if mode == 'local':
    gpus = local_pool.visible_gpus()
    parallel = values['parallel']
    devices = local_pool.slots(max(len(gpus), 1) if parallel is None else parallel, gpus)
  with workdir_lock.held(plan.workdir):
    plan_lib.write(plan)
    if mode == 'none':
      _stderr(f'sweep: planned {len(plan.cells)} cells in {plan_lib.plan_path(plan.workdir)}')
      print(list_table(plan, {c.index: plan_lib.state(c) for c in plan.cells}), flush=True)
      return 0
    if mode == 'local':
      pool = local_pool.Pool(plan, devices, lambda: bool(stop), _stderr)
      pool.run(units)
      outcome = Outcome(cells, [(plan.cell(i).name, m) for i, m in pool.failed.items()],
                        {c.name: plan_lib.finished(c) for c in cells}, stopped=pool.stopped)
      return _report_outcome(outcome, plan.workdir)
    _import_trainer(plan.base_config.get('fast_compile', False), values['verbose'])
    return _report_outcome(run_cells(plan, cells, lambda: bool(stop)), plan.workdir)


# The flags _main reads as plain values (--config through console.config_value).
_NAMES = ('slurm', 'workdir', 'methods', 'seeds', 'sweep', 'variants', 'submit', 'parallel',
          'dry_run', 'cell', 'cell_kind', 'list', 'status', 'verbose', 'pack_seeds')


def _main(args) -> int:
  flag_values = args.flags
  values = {name: flag_values[name].value for name in _NAMES}
  if not values['workdir']:
    raise ConfigError('--workdir is required')
  stop = args.stop
  workdir = check_folder(values['workdir'])
  if values['cell'] is not None or ((values['list'] or values['status'])
                                    and values['sweep'] is None
                                    and flag_values['config'].value is None):
    return _existing_plan_command(values, workdir, stop)
  raw = console.config_value(flag_values['config'])
  if raw is None:
    raise ConfigError('--config (or --sweep) is required to plan a sweep')
  methods, seeds, variants = grid_from_flags(values)
  plan = plan_sweep(raw, workdir, methods, seeds, variants,
                    extra={'command': ' '.join(sys.argv)}, pack_seeds=values['pack_seeds'])
  cells = select(plan, methods, seeds, variants)
  if values['list'] or values['status']:
    found = {c.index: plan_lib.state(c) for c in plan.cells}
    print(list_table(plan, found) if values['list'] else status_text(plan, found))
    return 0
  return _run_plan(plan, cells, values, stop)


COMMAND = cli.Command(
    'aikd_jax.sweep', __doc__, _define_flags, _main, rewrite_argv=with_sweep_config,
    log_dir=lambda args: paths.absolute(args.flags.workdir or console.LOCAL_LOG_ROOT),
    stop_message='sweep: stopping: running cells save a checkpoint at their next step')


def run() -> None:
  """The `python -m aikd_jax.sweep` process."""
  cli.run(COMMAND)


if __name__ == '__main__':
  run()
