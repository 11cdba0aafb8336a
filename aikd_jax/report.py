"""Tables and figures over many runs: `python -m aikd_jax.report DIR... [--out REPORT_DIR]`.

Reads every results.json below the given folders (sweeps or ordinary workdirs, local or
gs://, grouped by content, not by path) and writes into REPORT_DIR:
  report.md                      one section per paper table the runs cover, then
                                 "Other runs" (docs/report.md)
  runs.csv                       one row per run (finished or pending)
  reliability_<dataset>_<arch>.png   one calibration curve per row (Figures 4-5)
  tsne_<dataset>_<arch>_<method>.png with --tsne (Figure 6)

--layout=by_setting (default) prints each table as one block per (dataset, architecture);
--layout=paper prints Tables 2-4 as the paper does (a block per metric and model,
datasets as columns).

A results.json, config.json or predictions.npz that cannot be used (damaged, fields of
the wrong type, arrays of the wrong shape, a folder name that is not UTF-8) is skipped
with one `warning:` line naming it. The report fails (one `error:` line, exit 4) only
when no run is usable or REPORT_DIR cannot be written; every output is written
atomically, so an interrupted report leaves the previous file or the new one.
"""
import csv
import errno
import io
import json
import math
import os
import sys
import zipfile

from absl import flags
from etils import epath
import numpy as np

from aikd_jax import cli, console, evaluation, paths, report_sections
from aikd_jax.errors import ConfigError, OutOfSpaceError, WorkdirError
from aikd_jax.report_sections import (METHOD_NAMES, PHASES, Pending, Row, Run, build_rows,
                                      build_sections, setting_title)
# The sweep's summary formats its cells as the report does.
from aikd_jax.report_sections import mean_std, summarize  # pylint: disable=unused-import

LAYOUTS = ('by_setting', 'paper')
# results.json fields the report reads: the type each must have (or None).
_FIELD_TYPES = {'dataset': str, 'arch': str, 'method': str, 'phase': str,
                'seed': int, 'method_config': dict, 'provenance': dict,
                'superior': dict}
_NON_FINITE = ('nan', 'inf', '-inf')  # how results.json writes non-finite metrics
_KIND_NAMES = {int: 'an integer', float: 'a number', str: 'a string', dict: 'an object'}


def warn(message: str) -> None:
  print(f'warning: {console.one_line(message)}', file=sys.stderr)


def shown_path(path: str) -> str:
  """`path` printable: bytes that are not UTF-8 as \\xNN escapes."""
  return os.fsencode(path).decode('utf-8', 'backslashreplace')


# -- checking what was read -------------------------------------------------------------


def results_problem(data) -> str | None:
  """Why a parsed results.json cannot be used, or None."""
  if not isinstance(data, dict):
    return f'holds a JSON {type(data).__name__}, not an object'
  for key, kind in _FIELD_TYPES.items():
    value = data.get(key)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
      return f'{key} is {json.dumps(value)[:40]}, not {_KIND_NAMES[kind]}'
  for metric, _, _ in report_sections.METRICS:
    value = data.get(metric)
    if value is None or value in _NON_FINITE:
      continue
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      return f'{metric} is {json.dumps(value)[:40]}, not a number'
  config = (data.get('provenance') or {}).get('config')
  if config is not None and not isinstance(config, dict):
    return 'provenance.config is not an object'
  return None


def config_problem(config) -> str | None:
  """Why a workdir's parsed config.json cannot name its pending phases, or None."""
  if not isinstance(config, dict):
    return f'holds a JSON {type(config).__name__}, not an object'
  for group, key in (('data', 'name'), ('model', 'arch')):
    if not isinstance(config.get(group), dict) or not isinstance(config[group].get(key), str):
      return f'{group}.{key} is missing or not a string'
  if not isinstance(config.get('method'), str):
    return 'method is missing or not a string'
  return None


def predictions_problem(arrays: dict) -> str | None:
  """Why predictions.npz arrays cannot be used (shapes, dtypes, label range), or None."""
  logits, labels = arrays.get('logits'), arrays.get('labels')
  if logits is None or labels is None:
    return 'it has no logits or no labels'
  if logits.ndim != 2 or not np.issubdtype(logits.dtype, np.floating):
    return f'logits are {logits.dtype} {logits.shape}, not float [examples, classes]'
  if labels.shape != logits.shape[:1] or not np.issubdtype(labels.dtype, np.integer):
    return f'labels are {labels.dtype} {labels.shape}, not int [{logits.shape[0]}]'
  if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
    return f'labels outside [0, {logits.shape[1]})'
  features = arrays.get('features')
  if features is not None and (features.ndim != 2 or features.shape[0] != logits.shape[0]):
    return f'features are {features.shape}, not [{logits.shape[0]}, dim]'
  return None


# -- discovery and loading (I/O) ------------------------------------------------------


def _walk(dirs: list[str], filename: str) -> list[str]:
  """Every `filename` below `dirs` (not inside checkpoints), local or gs://, sorted."""
  found = []
  for top in dirs:
    def failed(error, top=top):
      raise WorkdirError(f'cannot list {top}: {console.one_line(error)}')
    for root, subdirs, files in epath.Path(top).walk(on_error=failed):
      subdirs[:] = sorted(d for d in subdirs if d != 'checkpoints')
      if filename in files:
        found.append(os.fspath(root / filename))
  return sorted(found)


def _readable(path: str) -> bool:
  """False (with a warning) for a path whose name is not UTF-8: it cannot be reported."""
  try:
    path.encode('utf-8')
    return True
  except UnicodeEncodeError:
    warn(f'skipped {shown_path(path)}: its folder name is not valid UTF-8; rename it')
    return False


def read_json(path: str, check) -> dict | None:
  """The JSON object at `path`, or None with a warning when it is damaged or `check`
  finds a problem in it."""
  try:
    data = json.loads(epath.Path(path).read_text())
  except (OSError, ValueError) as e:
    warn(f'skipped {path}: cannot read it ({e})')
    return None
  problem = check(data)
  if problem:
    warn(f'skipped {path}: {problem}')
    return None
  return data


def load_runs(dirs: list[str]) -> list[Run]:
  """Every usable results.json below `dirs` (the others are skipped with a warning)."""
  runs = []
  for path in _walk(dirs, 'results.json'):
    if _readable(path):
      data = read_json(path, results_problem)
      if data is not None:
        runs.append(Run(os.path.dirname(path), data))
  return runs


def _pending_of_workdir(workdir: str, config: dict) -> list[Pending]:
  """The phases of one workdir (it has config.json) that have not finished."""
  seed = config.get('seed')
  sup_seed = config.get('superior_seed')
  sup_seed = seed + 1 if sup_seed is None and isinstance(seed, int) else sup_seed
  phase = {p: epath.Path(workdir) / p for p in PHASES}
  done = {p: (phase[p] / 'results.json').exists() for p in PHASES}
  started = {p: phase[p].is_dir() for p in PHASES}
  common = dict(dataset=config['data']['name'], arch=config['model']['arch'])
  out = []
  if started['superior'] and not done['superior']:
    out.append(Pending(os.fspath(phase['superior']), method='baseline', seed=sup_seed,
                       phase='superior', config=report_sections.trained_config(
                           config, 'baseline', None, 'superior'), **common))
  # A finished superior without a student folder is a superior-only workdir (a sweep's).
  superior_only = done['superior'] and not started['student']
  if not done['student'] and not superior_only:
    method = config['method']
    own = config.get(method) if isinstance(config.get(method), dict) else None
    out.append(Pending(os.fspath(phase['student']), method=method, seed=seed,
                       phase='student', config=report_sections.trained_config(
                           config, method, own, 'student'), **common))
  return out


def find_pending(dirs: list[str]) -> list[Pending]:
  """Unfinished phases of every workdir (a folder with config.json) below `dirs`."""
  out = []
  for path in _walk(dirs, 'config.json'):
    if _readable(path):
      config = read_json(path, config_problem)
      if config is not None:
        out += _pending_of_workdir(os.path.dirname(path), config)
  return out


def load_predictions(phase_dir: str, keys=('logits', 'labels')) -> dict | None:
  """The arrays `keys` (those it has) of a phase folder's predictions.npz; None if it is
  absent, or (with a warning) damaged or of the wrong shapes.

  Each array is decompressed on its own, so the features (the largest) are read only
  when asked for.
  """
  path = epath.Path(phase_dir) / 'predictions.npz'
  if not path.exists():
    return None
  try:
    with np.load(io.BytesIO(path.read_bytes())) as data:
      arrays = {k: data[k] for k in keys if k in data.files}
  except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
    warn(f'skipped {path}: cannot read it ({e})')
    return None
  problem = predictions_problem(arrays)
  if problem:
    warn(f'skipped {path}: {problem}')
    return None
  return arrays


# -- figures --------------------------------------------------------------------------


def cross_fitted_scaling(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Logits / T with T fitted on the other half of the test set (as results' ece_ts)."""
  half = logits.shape[0] // 2
  out = np.array(logits, dtype=np.float64)
  for fit, apply in ((slice(None, half), slice(half, None)), (slice(half, None), slice(None, half))):
    out[apply] = logits[apply] / evaluation.fit_temperature(logits[fit], labels[fit])
  return out


def reliability_curves(rows: list[Row], ts_method: str = 'aikd'):
  """[(label, logits, labels)]: each row's predictions pooled over its seeds, and the
  same after temperature scaling for `ts_method` in the recipe's setting (the paper's
  '+ TS' curve). Runs whose predictions have another class count than the row's first
  are left out."""
  curves = []
  for row in rows:
    preds = [p for p in (load_predictions(r.path) for r in row.runs) if p is not None]
    preds = [p for p in preds if p['logits'].shape[1] == preds[0]['logits'].shape[1]]
    if not preds:
      continue
    logits = np.concatenate([p['logits'] for p in preds])
    labels = np.concatenate([p['labels'] for p in preds])
    curves.append((row.label, logits, labels))
    if (row.method == ts_method and not row.setting
        and all(p['labels'].size >= 2 for p in preds)):
      scaled = np.concatenate([cross_fitted_scaling(p['logits'], p['labels']) for p in preds])
      curves.append((row.label + ' + TS', scaled, labels))
  return curves


def superior_dir_of(run: Run) -> str:
  """The superior phase folder of a student: results' 'superior.dir', else the sibling."""
  given = (run.results.get('superior') or {}).get('dir')  # absolute (run._superior_info)
  if isinstance(given, str) and given:
    return given
  return os.fspath(epath.Path(run.path).parent / 'superior')


def tsne_pair(runs: list[Run]):
  """(student run, student predictions, superior predictions) of the lowest seed whose
  student and superior both saved features; None if no run has them."""
  for run in sorted(runs, key=lambda r: (str(r.seed), r.path)):
    if run.phase != 'student':
      continue
    keys = ('logits', 'labels', 'features')
    student = load_predictions(run.path, keys)
    superior = load_predictions(superior_dir_of(run), keys)
    if (student and superior and 'features' in student and 'features' in superior
        and student['features'].shape[0] == superior['features'].shape[0]):
      return run, student, superior
  return None


def _by_setting(rows: dict) -> dict:
  """(dataset, arch) -> its rows."""
  out = {}
  for key, row in rows.items():
    out.setdefault(key[:2], []).append(row)
  return out


def _write_reliability(out: str, rows: dict) -> dict:
  from aikd_jax import plots  # pylint: disable=g-import-not-at-top
  written = {}
  for (dataset, arch), setting_rows in _by_setting(rows).items():
    curves = reliability_curves(setting_rows)
    if curves:
      name = f'reliability_{dataset}_{arch}.png'
      plots.combined_reliability(curves, paths.join(out, name),
                                 title=setting_title(dataset, arch))
      written.setdefault((dataset, arch), []).append(name)
  return written


def _write_tsne(out: str, rows: dict, args) -> dict:
  from aikd_jax import plots  # pylint: disable=g-import-not-at-top
  written = {}
  for (dataset, arch), setting_rows in _by_setting(rows).items():
    for method in dict.fromkeys(r.method for r in setting_rows
                                if r.runs and r.method != 'baseline'):
      pair = tsne_pair([run for r in setting_rows if r.method == method for run in r.runs])
      if pair is None:
        print(f'no t-SNE for {method} on {dataset}/{arch}: no saved features', file=sys.stderr)
        continue
      run, student, superior = pair
      name = f'tsne_{dataset}_{arch}_{method}.png'
      plots.tsne_figure(student['features'], superior['features'], student['labels'],
                        paths.join(out, name),
                        title=f'{setting_title(dataset, arch)}, '
                              f'{METHOD_NAMES.get(method, method)} (seed {run.seed})',
                        num_classes=args.tsne_classes, max_per_class=args.tsne_max_per_class,
                        perplexity=args.tsne_perplexity)
      written.setdefault((dataset, arch), []).append(name)
  return written


# -- runs.csv -------------------------------------------------------------------------

CSV_COLUMNS = ('status', 'dataset', 'arch', 'method', 'phase', 'seed', 'in_table',
               'setting', 'top1_err', 'top5_err', 'f1_macro', 'ece', 'ece_ts', 'nll',
               'temperature', 'best_top1_err', 'best_epoch', 'epochs', 'steps',
               'train_time_s', 'images_per_s', 'superior_seed', 'superior_top1_err',
               'method_config', 'provenance', 'path')


def csv_rows(runs: list[Run], pending: list[Pending], rows: dict | None = None) -> list[dict]:
  """One dict per run (finished first, then pending), keyed by CSV_COLUMNS."""
  rows = build_rows(runs, pending) if rows is None else rows
  setting = {id(run): row.label for row in rows.values() for run in row.runs}
  out = []
  for run in sorted(runs, key=lambda r: (r.key, r.phase, str(r.seed), r.path)):
    r = run.results
    row = {k: r.get(k) for k in CSV_COLUMNS if k in r}
    superior = r.get('superior') or {}
    row.update(status='finished', phase=run.phase, path=run.path,
               in_table='yes' if id(run) in setting else 'no', setting=setting.get(id(run)),
               superior_seed=superior.get('seed'), superior_top1_err=superior.get('top1_err'),
               method_config=json.dumps(r['method_config'], sort_keys=True)
               if 'method_config' in r else None,
               provenance=json.dumps(r['provenance'], sort_keys=True)
               if 'provenance' in r else None)
    out.append(row)
  for p in pending:
    out.append(dict(status='pending', dataset=p.dataset, arch=p.arch, method=p.method,
                    phase=p.phase, seed=p.seed, in_table='no', path=p.path))
  return [{k: ('' if row.get(k) is None else row[k]) for k in CSV_COLUMNS} for row in out]


def csv_text(rows: list[dict]) -> str:
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator='\n')
  writer.writeheader()
  writer.writerows(rows)
  return buffer.getvalue()


# -- main -----------------------------------------------------------------------------


_FLAGS = ('out', 'layout', 'tsne', 'tsne_classes', 'tsne_max_per_class', 'tsne_perplexity')


def _define_flags(values: flags.FlagValues) -> None:
  define = lambda kind, name, default, *rest: kind(name, default, *rest, flag_values=values)
  define(flags.DEFINE_string, 'out', 'report', 'Output folder.')
  define(flags.DEFINE_enum, 'layout', 'by_setting', LAYOUTS, 'by_setting: a block per '
         '(dataset, arch); paper: Tables 2-4 as printed, datasets as columns.')
  define(flags.DEFINE_bool, 'tsne', False, 'Also draw t-SNE figures.')
  define(flags.DEFINE_integer, 'tsne_classes', 20, 'Classes in the t-SNE subset (20, as the '
         'paper).')
  define(flags.DEFINE_integer, 'tsne_max_per_class', 100, 'Test examples per class at most.')
  define(flags.DEFINE_float, 'tsne_perplexity', 30.0, 'The t-SNE perplexity.')
  for name in ('tsne_classes', 'tsne_max_per_class'):
    flags.register_validator(name, lambda v: v >= 1, 'must be >= 1', flag_values=values)
  flags.register_validator('tsne_perplexity', lambda v: 0 < v < math.inf,
                           'must be > 0 and finite', flag_values=values)


def check_inputs(dirs: list[str]) -> None:
  """Each DIR is an existing folder (local or on an object store)."""
  for d in dirs:
    bucket = paths.missing_bucket(d)
    if bucket:
      raise ConfigError(f'{d}: the bucket {bucket} does not exist or these credentials '
                        'cannot see it')
    if not epath.Path(d).is_dir():
      raise ConfigError(f'{d} is not a folder')


def check_out(out: str) -> None:
  """--out can be a folder we write: not a file, not below a file, not read-only."""
  if paths.is_remote(out):
    bucket = paths.missing_bucket(out)
    if bucket:
      raise WorkdirError(f'--out {out}: the bucket {bucket} does not exist or these '
                         'credentials cannot see it')
    return
  if os.path.exists(out) and not os.path.isdir(out):
    raise WorkdirError(f'--out {out} is a file, not a folder; choose another --out')
  parent = os.path.abspath(out)
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise WorkdirError(f'--out {out} is below the file {parent}; choose another --out')
  if not os.access(parent, os.W_OK | os.X_OK):
    raise WorkdirError(f'--out {out} cannot be written ({parent} is read-only); choose '
                       'another --out')


def write_report(args) -> list[str]:
  """Reads the runs below args.dirs and writes every output; returns their paths."""
  check_out(args.out)
  check_inputs(args.dirs)
  runs, pending = load_runs(args.dirs), find_pending(args.dirs)
  if not runs:
    raise WorkdirError(f'no usable results.json below {", ".join(args.dirs)} '
                       f'({len(pending)} phases pending)')
  rows = build_rows(runs, pending)
  try:
    epath.Path(args.out).mkdir(parents=True, exist_ok=True)
    figures = _write_reliability(args.out, rows)
    if args.tsne:
      for key, names in _write_tsne(args.out, rows, args).items():
        figures.setdefault(key, []).extend(names)
    text = report_sections.render_markdown(build_sections(rows), len(runs), len(pending),
                                           figures, args.layout)
    paths.write_text_atomic(paths.join(args.out, 'report.md'), text)
    paths.write_text_atomic(paths.join(args.out, 'runs.csv'),
                            csv_text(csv_rows(runs, pending, rows)))
  except OSError as e:
    if e.errno == errno.ENOSPC:
      raise OutOfSpaceError(f'--out {args.out}: the disk is full ({e})') from None
    raise WorkdirError(f'--out {args.out} cannot be written: {e}') from None
  names = ['report.md', 'runs.csv'] + [n for ns in figures.values() for n in ns]
  return [paths.join(args.out, n) for n in names]


def _main(args: cli.Args) -> int:
  options = args.options(*_FLAGS)
  options.dirs = args.words
  try:
    for path in write_report(options):
      print(path)
  except KeyboardInterrupt:  # outputs are written atomically: none is half-written
    print('error: interrupted; the outputs written so far are whole', file=sys.stderr)
    return 130
  return 0


COMMAND = cli.Command('aikd_jax.report', __doc__, _define_flags, _main, words='DIR...')


def main(argv: list) -> int:
  """`python -m aikd_jax.report` on `argv` (without the program's name); the exit status."""
  return cli.main(COMMAND, argv)


def run() -> None:
  """The `python -m aikd_jax.report` process."""
  cli.run(COMMAND)


if __name__ == '__main__':
  run()
