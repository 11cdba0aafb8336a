"""Tables and figures over many runs: `python -m aikd_jax.report DIR... [--out REPORT_DIR]`.

Reads every results.json below the given folders (sweeps or ordinary workdirs, grouped
by content, not by path) and writes into REPORT_DIR:
  report.md                      one table per (dataset, arch) in the paper's layout
  runs.csv                       one row per run (finished or pending)
  reliability_<dataset>_<arch>.png   one calibration curve per method (Figures 4-5)
  tsne_<dataset>_<arch>_<method>.png with --tsne (Figure 6)

The table-building functions are pure (runs in, rows or text out); discovery, loading
and writing are kept apart at the end of the module.
"""
import argparse
import csv
import dataclasses
import json
import os
import sys

import numpy as np

from aikd_jax import evaluation
from aikd_jax.errors import ConfigError, UserError, WorkdirError
from configs import paper_tables

# (key in results.json, column heading, lower is better)
METRICS = (('top1_err', 'Top-1 err (%)', True), ('top5_err', 'Top-5 err (%)', True),
           ('f1_macro', 'F1 macro (%)', False), ('ece', 'ECE (%)', True),
           ('ece_ts', 'ECE + TS (%)', True))
METHOD_NAMES = {'baseline': 'Baseline', 'cskd': 'CS-KD', 'tfkd': 'TF-KD', 'pskd': 'PS-KD',
                'tffd': 'TF-FD', 'zipf_ls': "Zipf's LS", 'aikd': 'AI-KD', 'no_adv': 'No Adv',
                'only_progressive': 'Only Progressive', 'only_guide': 'Only Guide'}
METHOD_ORDER = tuple(METHOD_NAMES)  # the paper's row order (Table 2, then Table 5)
DATASET_NAMES = {'cifar100': 'CIFAR-100', 'tiny_imagenet': 'Tiny ImageNet',
                 'cub200': 'CUB-200-2011', 'stanford_dogs': 'Stanford Dogs', 'mit67': 'MIT67',
                 'fgvc_aircraft': 'FGVC Aircraft', 'fashion_mnist': 'Fashion-MNIST'}
ARCH_NAMES = {'preact_resnet18': 'PreAct ResNet-18', 'preact_resnet50': 'PreAct ResNet-50',
              'cifar_densenet121': 'DenseNet-121 (CIFAR)', 'resnet18': 'ResNet-18',
              'resnet50': 'ResNet-50', 'densenet121': 'DenseNet-121'}
PHASES = ('superior', 'student')
LEGEND = """\
- Each cell: mean ± standard deviation over seeds (sample std, n − 1), with the number of
  seeds when it is not 3; **bold** is the best and <u>underlined</u> the second best of
  our rows (lower is better, except F1 macro). The paper prints F1 as a fraction; here
  it is in percent, as ours.
- Top-1 error is the final epoch's (as every metric here); best-epoch numbers are in
  runs.csv (`best_top1_err`, `best_epoch`).
- *paper* rows: the paper's number for the row above (its tables as named); an empty
  cell is one the paper does not report.
- Baseline is plain cross-entropy training; where no student ran `baseline` (for this
  dataset and architecture), the superiors (phase 1) stand in.
- A run with batch augmentation is its own row, labelled with it (e.g. `augment=cutmix 1
  p=0.5, superior none`: the superior trained without it, `superior_augment`).
- "(k pending)" after a method: k of its runs have a workdir but no results.json yet
  (running, queued or stopped); their cells read "pending" until one finishes. "—": no
  run of this method."""


@dataclasses.dataclass(frozen=True)
class Run:
  """One finished phase: its folder and its results.json."""
  path: str
  results: dict

  @property
  def phase(self) -> str:
    name = os.path.basename(os.path.normpath(self.path))
    return self.results.get('phase') or (name if name in PHASES else 'student')

  @property
  def key(self) -> tuple[str, str, str]:
    r = self.results
    return (r.get('dataset', '?'), r.get('arch', '?'), r.get('method', '?'))

  @property
  def seed(self):
    return self.results.get('seed')

  @property
  def variant(self) -> str:
    """The method's hyper-parameters and batch augmentation as canonical JSON (baseline
    has no hyper-parameters: '{}' unless it ran with augmentation)."""
    aug = augment_label(self.results)
    config = {} if self.key[2] == 'baseline' else self.results.get('method_config')
    if aug and isinstance(config, dict):
      config = {**config, 'augment': aug}
    return json.dumps(config, sort_keys=True)


def augment_label(results: dict) -> str:
  """'cutmix 1 p=0.5, superior none': the run's batch augmentation (from provenance) and
  whether its superior trained with it (superior_augment); '' without augmentation."""
  config = (results.get('provenance') or {}).get('config') or {}
  aug = config.get('augment') or {}
  parts = []
  if aug.get('cutout'):
    parts.append(f'cutout {aug["cutout"]:g}')
  if aug.get('mixup'):
    parts.append(f'mixup {aug["mixup"]:g}')
  if aug.get('cutmix'):
    parts.append(f'cutmix {aug["cutmix"]:g} p={aug.get("cutmix_prob", 1.0):g}')
  if parts and results.get('phase') != 'superior' and results.get('superior'):
    parts.append(f'superior {config.get("superior_augment", "same")}')
  return ', '.join(parts)


@dataclasses.dataclass(frozen=True)
class Pending:
  """A phase that has a folder (or a workdir) but no results.json yet."""
  path: str
  dataset: str
  arch: str
  method: str
  seed: object
  phase: str


@dataclasses.dataclass
class Row:
  """One method (one variant of it) in one table: its finished runs and pending count."""
  method: str
  label: str
  runs: list = dataclasses.field(default_factory=list)
  pending: int = 0
  paper: dict | None = None

  @property
  def values(self) -> dict[str, list[float]]:
    """metric -> the finished runs' values (metrics a run lacks are left out)."""
    out = {}
    for run in self.runs:
      for metric, _, _ in METRICS:
        if run.results.get(metric) is not None:
          out.setdefault(metric, []).append(float(run.results[metric]))
    return out


# -- choosing the runs of each table --------------------------------------------------


def table_runs(runs: list[Run]) -> list[Run]:
  """The runs the tables use: students, plus the superiors as the Baseline row of a
  (dataset, arch) where no student trained `baseline`; one run per (dataset, arch, method,
  variant, seed).

  A sweep's Baseline is its `baseline` students (seed k); its superiors (seed k + 1) would
  otherwise add seeds the other methods do not have.
  """
  students = [r for r in runs if r.phase == 'student']
  with_baseline = {r.key[:2] for r in students if r.key[2] == 'baseline'}
  stand_ins = [r for r in runs if r.phase == 'superior' and r.key[2] == 'baseline'
               and r.key[:2] not in with_baseline]
  chosen, seen = [], set()
  for run in sorted(students, key=lambda r: r.path) + sorted(stand_ins, key=lambda r: r.path):
    ident = (run.key, run.variant, run.seed)
    if ident not in seen:
      seen.add(ident)
      chosen.append(run)
  return chosen


def _variant_labels(configs: list[str]) -> dict[str, str]:
  """' (key=value, ...)' naming what differs between a method's configs; '' if one."""
  if len(configs) < 2:
    return {c: '' for c in configs}
  parsed = {c: json.loads(c) for c in configs}
  dicts = [p for p in parsed.values() if isinstance(p, dict)]
  keys = sorted({k for d in dicts for k in d})
  differing = [k for k in keys if len({json.dumps(d.get(k)) for d in dicts}) > 1]
  labels = {}
  for i, (c, p) in enumerate(parsed.items(), start=1):
    if not isinstance(p, dict):
      labels[c] = ' (config not recorded)'
    elif differing:
      labels[c] = ' (' + ', '.join(f'{k}={p.get(k)}' for k in differing) + ')'
    else:  # the configs differ only in keys one of them lacks and the other sets to None
      labels[c] = f' (config {i})'
  return labels


def _method_rank(method: str) -> tuple:
  return (METHOD_ORDER.index(method), '') if method in METHOD_ORDER else (len(METHOD_ORDER),
                                                                           method)


def _rows_of_method(method: str, runs: list[Run], pending: int, paper: dict | None) -> list[Row]:
  """One Row per variant of `method`; pending runs join the row if there is only one."""
  variants = sorted({r.variant for r in runs})
  labels = _variant_labels(variants)
  name = METHOD_NAMES.get(method, method)
  rows = []
  for variant in variants:
    rows.append(Row(method, name + labels[variant], [r for r in runs if r.variant == variant]))
  if pending and len(rows) == 1:
    rows[0].pending = pending
  elif pending or not rows:
    rows.append(Row(method, name + (' (config not yet known)' if rows else ''),
                    pending=pending))
  rows[-1].paper = paper
  return rows


def _pending_counts(pending: list[Pending], finished: set) -> dict:
  """(dataset, arch, method) -> number of pending seeds that have not finished."""
  seeds = {}
  for p in pending:
    key = (p.dataset, p.arch, 'baseline' if p.phase == 'superior' else p.method)
    if (key, p.seed) not in finished:
      seeds.setdefault(key, set()).add(p.seed)
  return {key: len(s) for key, s in seeds.items()}


def _table_order(key: tuple[str, str]) -> tuple:
  datasets = list(DATASET_NAMES)
  archs = list(ARCH_NAMES)
  d, a = key
  return (datasets.index(d) if d in datasets else len(datasets), d,
          archs.index(a) if a in archs else len(archs), a)


def build_tables(runs: list[Run], pending: list[Pending], paper_lookup=paper_tables.lookup,
                 paper_methods=paper_tables.methods_for) -> dict:
  """(dataset, arch) -> list of Rows, in the paper's order, for the runs of `table_runs`."""
  chosen = table_runs(runs)
  finished = {(r.key, r.seed) for r in chosen}
  counts = _pending_counts(pending, finished)
  keys = {r.key for r in chosen} | set(counts)
  tables = {}
  for dataset, arch in sorted({k[:2] for k in keys}, key=_table_order):
    methods = {k[2] for k in keys if k[:2] == (dataset, arch)}
    methods |= set(paper_methods(dataset, arch))
    rows = []
    for method in sorted(methods, key=_method_rank):
      rows += _rows_of_method(method, [r for r in chosen if r.key == (dataset, arch, method)],
                              counts.get((dataset, arch, method), 0),
                              paper_lookup(dataset, arch, method))
    tables[(dataset, arch)] = rows
  return tables


# -- formatting -----------------------------------------------------------------------


def summarize(values: list[float]) -> tuple[float, float | None, int]:
  """(mean, sample std or None for one value, count)."""
  arr = np.asarray(values, dtype=np.float64)
  std = float(arr.std(ddof=1)) if arr.size > 1 else None
  return float(arr.mean()), std, int(arr.size)


def ranks(rows: list[Row], metric: str, lower_is_better: bool) -> dict[int, int]:
  """Row index -> 1 (best) or 2 (second best), on the means as shown (2 decimals).

  Ties share a rank; nothing is ranked unless at least two rows have a value.
  """
  shown = {i: round(summarize(r.values[metric])[0], 2) for i, r in enumerate(rows)
           if r.values.get(metric)}
  if len(shown) < 2:
    return {}
  levels = sorted(set(shown.values()), reverse=not lower_is_better)[:2]
  return {i: levels.index(v) + 1 for i, v in shown.items() if v in levels}


def mean_std(mean: float, std: float | None) -> str:
  return f'{mean:.2f}' if std is None else f'{mean:.2f} ± {std:.2f}'


def format_cell(values: list[float] | None, rank: int | None, pending: int) -> str:
  """'mean ± std' (bold if rank 1, underlined if 2) with '(n=k)' unless 3 seeds;
  'pending' or '—' when no run has finished."""
  if not values:
    return 'pending' if pending else '—'
  mean, std, n = summarize(values)
  text = mean_std(mean, std)
  text = {1: f'**{text}**', 2: f'<u>{text}</u>'}.get(rank, text)
  return text if n == 3 else f'{text} (n={n})'


def format_paper_cell(paper: dict, metric: str) -> str:
  cell = paper.get(metric)
  return '' if cell is None else mean_std(*cell)


def markdown_table(rows: list[Row]) -> list[str]:
  """The lines of one table: our row per method, then the paper's row where known."""
  rank_of = {m: ranks(rows, m, low) for m, _, low in METRICS}
  lines = ['| Method | ' + ' | '.join(h for _, h, _ in METRICS) + ' |',
           '|:--' + '|--:' * len(METRICS) + '|']
  for i, row in enumerate(rows):
    cells = [format_cell(row.values.get(m), rank_of[m].get(i), row.pending)
             for m, _, _ in METRICS]
    label = row.label + (f' ({row.pending} pending)' if row.pending else '')
    lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
    if row.paper:
      cells = [format_paper_cell(row.paper, m) for m, _, _ in METRICS]
      lines.append(f'| *paper, {row.paper["tables"]}* | ' + ' | '.join(cells) + ' |')
  return lines


def table_title(dataset: str, arch: str) -> str:
  return f'{DATASET_NAMES.get(dataset, dataset)}, {ARCH_NAMES.get(arch, arch)}'


def render_markdown(tables: dict, n_finished: int, n_pending: int,
                    figures: dict | None = None) -> str:
  """The whole report.md; `figures` maps (dataset, arch) to file names to link."""
  lines = ['# Results', '',
           f'{n_finished} finished runs, {n_pending} pending.', '', LEGEND]
  for (dataset, arch), rows in tables.items():
    lines += ['', f'## {table_title(dataset, arch)}', '']
    lines += markdown_table(rows)
    for name in (figures or {}).get((dataset, arch), []):
      lines += ['', f'![{name}]({name})']
  return '\n'.join(lines) + '\n'


# -- runs.csv -------------------------------------------------------------------------

CSV_COLUMNS = ('status', 'dataset', 'arch', 'method', 'phase', 'seed', 'in_table',
               'top1_err', 'top5_err', 'f1_macro', 'ece', 'ece_ts', 'nll', 'temperature',
               'best_top1_err', 'best_epoch', 'epochs', 'steps', 'train_time_s',
               'images_per_s', 'superior_seed', 'superior_top1_err', 'method_config',
               'provenance', 'path')


def csv_rows(runs: list[Run], pending: list[Pending]) -> list[dict]:
  """One dict per run (finished first, then pending), keyed by CSV_COLUMNS."""
  used = {id(r) for r in table_runs(runs)}
  out = []
  for run in sorted(runs, key=lambda r: (r.key, r.phase, str(r.seed), r.path)):
    r = run.results
    row = {k: r.get(k) for k in CSV_COLUMNS if k in r}
    superior = r.get('superior') or {}
    row.update(status='finished', phase=run.phase, path=run.path,
               in_table='yes' if id(run) in used else 'no',
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


# -- discovery and loading (I/O) ------------------------------------------------------


def _walk(dirs: list[str], filename: str) -> list[str]:
  found = []
  for top in dirs:
    for root, subdirs, files in os.walk(top):
      subdirs[:] = sorted(d for d in subdirs if d != 'checkpoints')
      if filename in files:
        found.append(os.path.join(root, filename))
  return sorted(found)


def read_json(path: str) -> dict:
  try:
    with open(path) as f:
      data = json.load(f)
  except (OSError, ValueError) as e:
    raise WorkdirError(f'cannot read {path}: {e}') from None
  if not isinstance(data, dict):
    raise WorkdirError(f'{path} does not hold a JSON object')
  return data


def load_runs(dirs: list[str]) -> list[Run]:
  return [Run(os.path.dirname(p), read_json(p)) for p in _walk(dirs, 'results.json')]


def _pending_of_workdir(workdir: str, config: dict) -> list[Pending]:
  """The phases of one workdir (it has config.json) that have not finished."""
  dataset = config.get('data', {}).get('name', '?')
  arch = config.get('model', {}).get('arch', '?')
  seed = config.get('seed')
  sup_seed = config.get('superior_seed')
  sup_seed = seed + 1 if sup_seed is None and isinstance(seed, int) else sup_seed
  done = {p: os.path.exists(os.path.join(workdir, p, 'results.json')) for p in PHASES}
  started = {p: os.path.isdir(os.path.join(workdir, p)) for p in PHASES}
  out = []
  if started['superior'] and not done['superior']:
    out.append(Pending(os.path.join(workdir, 'superior'), dataset, arch, 'baseline',
                       sup_seed, 'superior'))
  # A finished superior without a student folder is a superior-only workdir (a sweep's).
  superior_only = done['superior'] and not started['student']
  if not done['student'] and not superior_only:
    out.append(Pending(os.path.join(workdir, 'student'), dataset, arch,
                       config.get('method', '?'), seed, 'student'))
  return out


def find_pending(dirs: list[str]) -> list[Pending]:
  """Unfinished phases of every workdir (a folder with config.json) below `dirs`."""
  out = []
  for path in _walk(dirs, 'config.json'):
    try:
      config = read_json(path)
    except WorkdirError:
      continue  # being written, or not ours: it only adds "pending" marks
    out += _pending_of_workdir(os.path.dirname(path), config)
  return out


def load_predictions(phase_dir: str, keys=('logits', 'labels')) -> dict | None:
  """The arrays `keys` (those it has) of a phase folder's predictions.npz, or None if absent.

  Each array is decompressed on its own, so the features (the largest) are read only
  when asked for.
  """
  path = os.path.join(phase_dir, 'predictions.npz')
  if not os.path.exists(path):
    return None
  try:
    with np.load(path) as data:
      return {k: data[k] for k in keys if k in data.files}
  except (OSError, ValueError) as e:
    raise WorkdirError(f'cannot read {path}: {e}') from None


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
  same after temperature scaling for `ts_method` (the paper's '+ TS' curve)."""
  curves = []
  for row in rows:
    preds = [p for p in (load_predictions(r.path) for r in row.runs) if p is not None]
    if not preds:
      continue
    logits = np.concatenate([p['logits'] for p in preds])
    labels = np.concatenate([p['labels'] for p in preds])
    curves.append((row.label, logits, labels))
    if row.method == ts_method:
      scaled = np.concatenate([cross_fitted_scaling(p['logits'], p['labels']) for p in preds])
      curves.append((row.label + ' + TS', scaled, labels))
  return curves


def superior_dir_of(run: Run) -> str:
  """The superior phase folder of a student: results' 'superior.dir', else the sibling."""
  given = (run.results.get('superior') or {}).get('dir')  # absolute (run._superior_info)
  if given:
    return given
  return os.path.join(os.path.dirname(os.path.normpath(run.path)), 'superior')


def tsne_pair(runs: list[Run]):
  """(student run, student predictions, superior predictions) of the lowest seed whose
  student and superior both saved features; None if no run has them."""
  for run in sorted(runs, key=lambda r: (str(r.seed), r.path)):
    if run.phase != 'student':
      continue
    keys = ('logits', 'labels', 'features')
    student = load_predictions(run.path, keys)
    superior = load_predictions(superior_dir_of(run), keys)
    if student and superior and 'features' in student and 'features' in superior:
      return run, student, superior
  return None


# -- main -----------------------------------------------------------------------------


def _parse_args(argv):
  parser = argparse.ArgumentParser(prog='python -m aikd_jax.report', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('dirs', nargs='+', metavar='DIR', help='sweep folders or workdirs')
  parser.add_argument('--out', default='report', help='output folder (default: report)')
  parser.add_argument('--tsne', action='store_true', help='also draw t-SNE figures')
  parser.add_argument('--tsne_classes', type=int, default=20,
                      help='classes in the t-SNE subset (default 20, as the paper)')
  parser.add_argument('--tsne_max_per_class', type=int, default=100,
                      help='test examples per class at most (default 100)')
  parser.add_argument('--tsne_perplexity', type=float, default=30.0)
  return parser.parse_args(argv)


def _write_reliability(out: str, tables: dict) -> dict:
  from aikd_jax import plots  # pylint: disable=g-import-not-at-top
  written = {}
  for (dataset, arch), rows in tables.items():
    curves = reliability_curves(rows)
    if curves:
      name = f'reliability_{dataset}_{arch}.png'
      plots.combined_reliability(curves, os.path.join(out, name),
                                 title=table_title(dataset, arch))
      written.setdefault((dataset, arch), []).append(name)
  return written


def _write_tsne(out: str, tables: dict, args) -> dict:
  from aikd_jax import plots  # pylint: disable=g-import-not-at-top
  written = {}
  for (dataset, arch), rows in tables.items():
    for method in dict.fromkeys(r.method for r in rows if r.runs and r.method != 'baseline'):
      pair = tsne_pair([run for r in rows if r.method == method for run in r.runs])
      if pair is None:
        print(f'no t-SNE for {method} on {dataset}/{arch}: no saved features', file=sys.stderr)
        continue
      run, student, superior = pair
      name = f'tsne_{dataset}_{arch}_{method}.png'
      plots.tsne_figure(student['features'], superior['features'], student['labels'],
                        os.path.join(out, name),
                        title=f'{table_title(dataset, arch)}, '
                              f'{METHOD_NAMES.get(method, method)} (seed {run.seed})',
                        num_classes=args.tsne_classes, max_per_class=args.tsne_max_per_class,
                        perplexity=args.tsne_perplexity)
      written.setdefault((dataset, arch), []).append(name)
  return written


def write_report(args) -> list[str]:
  """Reads the runs below args.dirs and writes every output; returns their paths."""
  for d in args.dirs:
    if not os.path.isdir(d):
      raise ConfigError(f'{d} is not a folder')
  runs, pending = load_runs(args.dirs), find_pending(args.dirs)
  if not runs:
    raise WorkdirError(f'no results.json below {", ".join(args.dirs)} '
                       f'({len(pending)} phases pending)')
  tables = build_tables(runs, pending)
  os.makedirs(args.out, exist_ok=True)
  figures = _write_reliability(args.out, tables)
  if args.tsne:
    for key, names in _write_tsne(args.out, tables, args).items():
      figures.setdefault(key, []).extend(names)
  with open(os.path.join(args.out, 'report.md'), 'w') as f:
    f.write(render_markdown(tables, len(runs), len(pending), figures))
  with open(os.path.join(args.out, 'runs.csv'), 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(csv_rows(runs, pending))
  names = ['report.md', 'runs.csv'] + [n for ns in figures.values() for n in ns]
  return [os.path.join(args.out, n) for n in names]


def main(argv=None) -> int:
  args = _parse_args(argv)
  try:
    for path in write_report(args):
      print(path)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return e.exit_code
  return 0


if __name__ == '__main__':
  sys.exit(main())
