"""The report's tables, pure: runs in, rows matched to the paper's tables, markdown out.

A run's *setting* is every config key in which it departs from the base recipe of its
(dataset, arch): on the paper's datasets, the paper's recipe (`paper_tables.recipe`) for
the keys the paper states; for every other key (and on other datasets, for every key) the
value that most runs of that (dataset, arch) share (none when no value has a majority,
so each run shows its own). Runs of one method and one
setting form a row; runs whose settings differ are never merged. A row is named by its
setting (`AI-KD (optim.lr=0.05)`) and sits beside a paper row only when its setting is
that row's (`paper_tables.Row.setting`).

Sections: one per paper table whose rows the runs cover (a table is written when the runs
cover a row no earlier table has: a default AI-KD run alone writes Tables 2, 3 only),
each with the paper's rows, order, metrics and rank marks; then "Other runs" for rows
that match no paper row.
"""
import collections
import dataclasses
import json

import numpy as np

from aikd_jax import paper_tables, preflight

# (key in results.json, column heading, lower is better)
METRICS = (('top1_err', 'Top-1 err (%)', True), ('top5_err', 'Top-5 err (%)', True),
           ('f1_macro', 'F1 macro (%)', False), ('ece', 'ECE (%)', True),
           ('ece_ts', 'ECE + TS (%)', True))
_HEADING = {m: h for m, h, _ in METRICS}
_LOWER_IS_BETTER = {m: low for m, _, low in METRICS}
UNRANKED = ('ece_ts',)  # the paper does not rank its "+ TS" row
METHOD_NAMES = paper_tables.METHOD_NAMES
METHOD_ORDER = tuple(METHOD_NAMES)  # Table 2's row order, then Table 5's
PHASES = ('superior', 'student')
_CORE_GROUPS = ('data', 'model', 'optim', 'augment', 'checkpoint')
# Keys that name a run rather than what it trains (train_superior: whether phase 1 runs
# for a method that needs no superior).
_PER_RUN = (frozenset({'seed', 'superior_seed', 'superior_workdir', 'method', 'data.name',
                       'model.arch', 'train_superior'}) | preflight.RESUMABLE_KEYS)


def _hashable(value):
  """A config value that can be counted and compared: lists as tuples (as the recipe's),
  anything else that is not hashable as its JSON text."""
  if isinstance(value, (list, tuple)):
    return tuple(_hashable(v) for v in value)
  return json.dumps(value, sort_keys=True) if isinstance(value, dict) else value


def trained_config(config: dict, method: str, method_config, phase: str) -> dict:
  """The flat keys of what a phase trained: its config without per-run keys, without the
  groups of other methods, and (a superior) without the student's method and augmentation
  when the superior trained without it (superior_augment 'none')."""
  own = None
  if phase == 'student' and method_config:
    own = next((g for g, v in config.items() if g not in _CORE_GROUPS and v == method_config),
               None)
  kept = {k: v for k, v in config.items()
          if not isinstance(v, dict) or k in _CORE_GROUPS or k == own}
  flat = {k: _hashable(v) for k, v in preflight.flatten(kept).items() if k not in _PER_RUN}
  if own is None and phase == 'student' and isinstance(method_config, dict):
    flat.update({f'{method}.{k}': _hashable(v) for k, v in method_config.items()})
  if phase == 'superior':
    if flat.get('superior_augment', 'none') == 'none':
      flat = {k: v for k, v in flat.items() if not k.startswith('augment.')}
    flat.pop('superior_augment', None)
  return flat


@dataclasses.dataclass(frozen=True)
class Run:
  """One finished phase: its folder, its results.json (checked by the reader) and the
  flat config it trained (`trained_config`)."""
  path: str
  results: dict

  @property
  def phase(self) -> str:
    name = self.path.rstrip('/').rsplit('/', 1)[-1]
    return self.results.get('phase') or (name if name in PHASES else 'student')

  @property
  def key(self) -> tuple[str, str, str]:
    r = self.results
    return (r.get('dataset', '?'), r.get('arch', '?'), r.get('method', '?'))

  @property
  def seed(self):
    return self.results.get('seed')

  @property
  def config(self) -> dict:
    config = (self.results.get('provenance') or {}).get('config') or {}
    return trained_config(config, self.key[2], self.results.get('method_config'), self.phase)


@dataclasses.dataclass(frozen=True)
class Pending:
  """A phase that has a folder (or a workdir) but no results.json yet."""
  path: str
  dataset: str
  arch: str
  method: str
  seed: object
  phase: str
  config: dict = dataclasses.field(default_factory=dict)  # trained_config of config.json

  @property
  def key(self) -> tuple[str, str, str]:
    return (self.dataset, self.arch, 'baseline' if self.phase == 'superior' else self.method)


@dataclasses.dataclass
class Row:
  """One method under one setting: its finished runs and pending count."""
  method: str
  setting: tuple
  runs: list = dataclasses.field(default_factory=list)
  pending: int = 0

  @property
  def label(self) -> str:
    name = METHOD_NAMES.get(self.method, self.method)
    if not self.setting:
      return name
    shown = (v if isinstance(v, str) else json.dumps(v) for _, v in self.setting)
    return f'{name} (' + ', '.join(f'{k}={v}' for (k, _), v in zip(self.setting, shown)) + ')'

  @property
  def values(self) -> dict[str, list[float]]:
    """metric -> the finished runs' values (metrics a run lacks are left out)."""
    out = {}
    for run in self.runs:
      for metric, _, _ in METRICS:
        if run.results.get(metric) is not None:
          out.setdefault(metric, []).append(float(run.results[metric]))
    return out


# -- settings and rows ----------------------------------------------------------------


def base_recipe(configs: list[dict], dataset: str) -> dict:
  """The paper's recipe, and for every other key the value most of `configs` hold (a key
  without a majority value is left out: every run then shows its own)."""
  base = paper_tables.recipe(dataset)
  counts = collections.defaultdict(collections.Counter)
  for config in configs:
    for k, v in config.items():
      if k not in base:
        counts[k][v] += 1
  for k, counter in counts.items():
    (value, top), = counter.most_common(1)
    if 2 * top > sum(counter.values()):
      base[k] = value
  return base


def setting_of(config: dict, base: dict) -> tuple:
  """The (key, value) pairs of `config` that differ from `base`, sorted."""
  return tuple(sorted((k, v) for k, v in config.items() if k not in base or base[k] != v))


def _settings(items) -> dict[int, tuple]:
  """id(item) -> its setting, over Runs and Pendings (each (dataset, arch) votes alone)."""
  groups = collections.defaultdict(list)
  for item in items:
    groups[item.key[:2]].append(item)
  out = {}
  for (dataset, _), group in groups.items():
    base = base_recipe([item.config for item in group], dataset)
    out.update({id(item): setting_of(item.config, base) for item in group})
  return out


def table_runs(runs: list[Run], settings: dict | None = None) -> list[Run]:
  """The runs the tables use: students, plus the superiors as the Baseline of a (dataset,
  arch) where no student trained `baseline`; one run per (dataset, arch, method,
  setting, seed). A sweep's Baseline is its `baseline` students (seed k); its superiors
  (seed k + 1) would otherwise add seeds the other methods do not have."""
  settings = settings if settings is not None else _settings(runs)
  students = [r for r in runs if r.phase == 'student']
  with_baseline = {r.key[:2] for r in students if r.key[2] == 'baseline'}
  stand_ins = [r for r in runs if r.phase == 'superior' and r.key[2] == 'baseline'
               and r.key[:2] not in with_baseline]
  chosen, seen = [], set()
  for run in sorted(students, key=lambda r: r.path) + sorted(stand_ins, key=lambda r: r.path):
    ident = (run.key, settings[id(run)], run.seed)
    if ident not in seen:
      seen.add(ident)
      chosen.append(run)
  return chosen


def _row_order(key: tuple) -> tuple:
  dataset, arch, method, setting = key
  order = (list(paper_tables.DATASET_NAMES), list(paper_tables.ARCH_NAMES), list(METHOD_ORDER))
  rank = [o.index(v) if v in o else len(o) for o, v in zip(order, key[:3])]
  return (rank[0], dataset, rank[1], arch, rank[2], method, bool(setting), json.dumps(setting))


def build_rows(runs: list[Run], pending: list[Pending]) -> dict[tuple, Row]:
  """(dataset, arch, method, setting) -> Row, in the paper's order of datasets, archs and
  methods; a pending phase counts where its seed has not finished under its setting (a
  superior, as Baseline, only where no student trains `baseline`, as in `table_runs`)."""
  settings = _settings(list(runs) + list(pending))
  rows = {}
  for run in table_runs(runs, settings):
    rows.setdefault(run.key + (settings[id(run)],), Row(run.key[2], settings[id(run)]))
    rows[run.key + (settings[id(run)],)].runs.append(run)
  with_baseline = {r.key[:2] for r in list(runs) + list(pending)
                   if r.phase == 'student' and r.key[2] == 'baseline'}
  waiting = collections.defaultdict(set)
  for p in pending:
    if p.phase == 'superior' and p.key[:2] in with_baseline:
      continue
    key = p.key + (settings[id(p)],)
    if key not in rows or p.seed not in {r.seed for r in rows[key].runs}:
      waiting[key].add(p.seed)
  for key, seeds in waiting.items():
    rows.setdefault(key, Row(key[2], key[3])).pending = len(seeds)
  return {k: rows[k] for k in sorted(rows, key=_row_order)}


# -- sections -------------------------------------------------------------------------


@dataclasses.dataclass
class Line:
  """A row of a section: our Row (None: not run) beside the paper's row (None: Other runs)."""
  ours: Row | None
  paper: paper_tables.Row | None

  @property
  def label(self) -> str:
    label = self.paper.label if self.paper else self.ours.label
    pending = self.ours.pending if self.ours else 0
    return label + (f' ({pending} pending)' if pending else '')

  @property
  def values(self) -> dict[str, list[float]]:
    return self.ours.values if self.ours else {}


@dataclasses.dataclass
class Section:
  """One paper table (None: "Other runs"): (dataset, arch) -> its lines in order."""
  table: paper_tables.Table | None
  blocks: dict

  @property
  def metrics(self) -> tuple[str, ...]:
    return self.table.metrics if self.table else tuple(m for m, _, _ in METRICS)

  @property
  def marks(self) -> int:
    return self.table.marks if self.table else 0


def build_sections(rows: dict[tuple, Row], tables=paper_tables.TABLES) -> list[Section]:
  """A Section per paper table the rows cover, in the paper's order, then Other runs."""
  sections, seen, matched = [], set(), set()
  for table in tables:
    blocks, covers = {}, False
    for (dataset, arch), paper_rows in table.rows.items():
      keys = [(dataset, arch, r.method, r.setting(dataset)) for r in paper_rows]
      if any(k in rows for k in keys):
        blocks[(dataset, arch)] = [Line(rows.get(k), r) for k, r in zip(keys, paper_rows)]
        covers |= any(k in rows and k not in seen for k in keys)
        matched.update(keys)
      seen.update(keys)
    if covers:
      sections.append(Section(table, dict(sorted(
          blocks.items(), key=lambda kv: _row_order(kv[0] + ('', ()))))))
  other = collections.defaultdict(list)
  for key, row in rows.items():
    if key not in matched:
      other[key[:2]].append(Line(row, None))
  if other:
    sections.append(Section(None, dict(other)))
  return sections


def ranks(lines: list, metric: str, marks: int = 2) -> dict[int, int]:
  """Line index -> 1 (best) .. `marks`, on the means as shown (2 decimals).

  Ties share a rank; nothing is ranked unless at least two lines have a value.
  """
  if marks == 0 or metric in UNRANKED:
    return {}
  means = {i: summarize(line.values[metric])[0] for i, line in enumerate(lines)
           if line.values.get(metric)}
  shown = {i: round(m, 2) for i, m in means.items() if np.isfinite(m)}
  if len(shown) < 2:
    return {}
  levels = sorted(set(shown.values()), reverse=not _LOWER_IS_BETTER[metric])[:marks]
  return {i: levels.index(v) + 1 for i, v in shown.items() if v in levels}


# -- formatting -----------------------------------------------------------------------


def summarize(values: list[float]) -> tuple[float, float | None, int]:
  """(mean, sample std or None for one value, count)."""
  arr = np.asarray(values, dtype=np.float64)
  std = float(arr.std(ddof=1)) if arr.size > 1 else None
  return float(arr.mean()), std, int(arr.size)


def mean_std(mean: float, std: float | None, digits: int = 2) -> str:
  return f'{mean:.{digits}f}' if std is None else f'{mean:.{digits}f} ± {std:.{digits}f}'


def format_cell(values: list[float] | None, rank: int | None, pending: int,
                scale: float = 1.0, digits: int = 2) -> str:
  """'mean ± std' (bold if rank 1, underlined if 2) with '(n=k)' unless 3 seeds;
  'pending' or '—' when no run has finished."""
  if not values:
    return 'pending' if pending else '—'
  mean, std, n = summarize(np.asarray(values) * scale)
  text = mean_std(mean, std, digits)
  text = {1: f'**{text}**', 2: f'<u>{text}</u>'}.get(rank, text)
  return text if n == 3 else f'{text} (n={n})'


def format_paper_cell(paper: paper_tables.Row | None, metric: str, scale: float = 1.0,
                      digits: int = 2) -> str:
  cell = paper.numbers.get(metric) if paper else None
  if cell is None:
    return ''
  mean, std = cell
  return mean_std(mean * scale, None if std is None else std * scale, digits)


def _pending(line: Line) -> int:
  return line.ours.pending if line.ours else 0


def block_table(section: Section, lines: list[Line]) -> list[str]:
  """One (dataset, arch) block: a line per row, our cell then the paper's per metric."""
  paper = section.table is not None
  head = 'Method' if not paper or not any(
      r.overrides for rows in section.table.rows.values() for r in rows) else 'Setting'
  columns = [c for m in section.metrics for c in ([_HEADING[m], 'paper'] if paper
                                                  else [_HEADING[m]])]
  out = [f'| {head} | ' + ' | '.join(columns) + ' |', '|:--' + '|--:' * len(columns) + '|']
  rank_of = {m: ranks(lines, m, section.marks) for m in section.metrics}
  for i, line in enumerate(lines):
    cells = []
    for m in section.metrics:
      cells.append(format_cell(line.values.get(m), rank_of[m].get(i), _pending(line)))
      if paper:
        cells.append(format_paper_cell(line.paper, m))
    out.append(f'| {line.label} | ' + ' | '.join(cells) + ' |')
  return out


def setting_title(dataset: str, arch: str) -> str:
  return (f'{paper_tables.DATASET_NAMES.get(dataset, dataset)}, '
          f'{paper_tables.ARCH_NAMES.get(arch, arch)}')


def section_title(section: Section) -> str:
  return f'{section.table.name}: {section.table.title}' if section.table else 'Other runs'


def render_by_setting(section: Section) -> list[str]:
  lines = []
  for (dataset, arch), block in section.blocks.items():
    lines += ['', f'### {setting_title(dataset, arch)}', ''] + block_table(section, block)
  return lines


def render_paper_layout(section: Section) -> list[str]:
  """Tables 2-4 as printed: a block per metric and model (Top-1, F1 | Top-5, ECE), the
  methods as rows (+ TS under AI-KD in ECE), the datasets run as columns; F1 a fraction."""
  by_family = collections.defaultdict(dict)
  for (dataset, arch), block in section.blocks.items():
    by_family[paper_tables.family_of(arch)][dataset] = block
  out = []
  for metric in ('top1_err', 'f1_macro', 'top5_err', 'ece'):
    for family in paper_tables.FAMILIES:
      if family not in by_family:
        continue
      blocks = by_family[family]
      datasets = list(blocks)
      scale, digits = (0.01, 3) if metric == 'f1_macro' else (1.0, 2)
      heading = 'F1 macro' if metric == 'f1_macro' else _HEADING[metric]
      if section.table.name == 'Tables 2, 3':
        heading += ' (Table 2)' if metric in ('top1_err', 'f1_macro') else ' (Table 3)'
      out += ['', f'### {heading}, {paper_tables.FAMILY_NAMES[family]}', '',
              '| Method | ' + ' | '.join(f'{paper_tables.DATASET_NAMES[d]} | paper'
                                       for d in datasets) + ' |',
              '|:--' + '|--:' * (2 * len(datasets)) + '|']
      rank_of = {d: ranks(blocks[d], metric, section.marks) for d in datasets}
      for i, line in enumerate(blocks[datasets[0]]):  # every dataset has the same rows
        pending = sum(_pending(blocks[d][i]) for d in datasets)
        shown = [(line.paper.label + (f' ({pending} pending)' if pending else ''), metric)]
        if metric == 'ece' and line.paper and line.paper.method == 'aikd':
          shown.append(('+ TS', 'ece_ts'))  # not ranked (UNRANKED)
        for label, m in shown:
          cells = []
          for d in datasets:
            ours = blocks[d][i]
            cells += [format_cell(ours.values.get(m), rank_of[d].get(i) if m == metric
                                  else None, _pending(ours), scale, digits),
                      format_paper_cell(ours.paper, m, scale, digits)]
          out.append(f'| {label} | ' + ' | '.join(cells) + ' |')
  return out


LEGEND = """\
- One section per paper table that the runs cover, with the paper's rows, row order and
  metrics; beside each of our cells, the paper's number for the same setting (*paper*;
  empty where the paper prints none). A row is the paper's only when every config key
  that defines it matches (the method, and for Tables 5-8 and the τ search the keys
  that define the row); anything else is its own row, named by every key in which it
  departs from the base recipe, under "Other runs".
- Each cell: mean ± standard deviation over seeds (sample std, n − 1), with the number of
  seeds when it is not 3. Ranks are within each table and (dataset, architecture), as
  the paper marks them: **bold** the best and <u>underlined</u> the second best (Tables
  2-6 and the τ search), the best only (Table 7), none (Table 8, Other runs, + TS). Lower
  is better, except F1 macro, which is in percent except in the paper layout.
- Top-1 error is the final epoch's (as every metric here); best-epoch numbers are in
  runs.csv (`best_top1_err`, `best_epoch`).
- Baseline is plain cross-entropy training; where no student ran `baseline` (for this
  dataset and architecture), the superiors (phase 1) stand in.
- "(k pending)": k of the row's runs have a workdir but no results.json yet (running,
  queued or stopped); their cells read "pending" until one finishes. "—": not run."""


def render_markdown(sections: list[Section], n_finished: int, n_pending: int,
                    figures: dict | None = None, layout: str = 'by_setting') -> str:
  """The whole report.md; `figures` maps (dataset, arch) to file names to link."""
  lines = ['# Results', '', f'{n_finished} finished runs, {n_pending} pending.', '', LEGEND]
  for section in sections:
    lines += ['', f'## {section_title(section)}']
    grid = section.table is not None and section.table.name in ('Tables 2, 3', 'Table 4')
    lines += (render_paper_layout(section) if layout == 'paper' and grid
              else render_by_setting(section))
  if figures:
    lines += ['', '## Figures']
    for (dataset, arch), names in figures.items():
      lines += ['', f'### {setting_title(dataset, arch)}', '']
      lines += [f'![{name}]({name})' for name in names]
  return '\n'.join(lines) + '\n'
