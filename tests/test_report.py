"""Tests for aikd_jax.report (tables, CSV, errors) and its figures in aikd_jax.plots.

The golden file tests/golden/report.md is the report of the fake sweep built by
`_make_tree`; after an intended change of the layout, regenerate it with
`UPDATE_GOLDEN=1 pytest tests/test_report.py` and review the diff.
"""
import csv
import json
import os

import numpy as np
import pytest

from aikd_jax import plots, report, report_sections
from configs import common

GOLDEN = os.path.join(os.path.dirname(__file__), 'golden', 'report.md')
METRICS = ('top1_err', 'top5_err', 'f1_macro', 'ece', 'ece_ts')
_AIKD_FAMILY = ('aikd', 'no_adv', 'only_progressive', 'only_guide')


def _write_json(path, data):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(data, f)


def _predictions(seed, n=120, classes=10, dim=8, features=False):
  """Logits that are right about 80% of the time; features clustered by class."""
  rng = np.random.default_rng(seed)
  labels = np.arange(n) % classes
  logits = rng.normal(size=(n, classes)).astype(np.float32)
  right = rng.random(n) < 0.8
  logits[np.arange(n)[right], labels[right]] += 3.0
  out = {'logits': logits, 'labels': labels}
  if features:
    centres = rng.normal(scale=5.0, size=(classes, dim))
    out['features'] = (centres[labels] + rng.normal(size=(n, dim))).astype(np.float32)
  return out


def _grid_config(method, seed, overrides, dataset='cifar100', arch='preact_resnet18'):
  """The resolved config of a grid cell (as provenance records it) with flat `overrides`."""
  config = common.make(dataset, arch)
  config.method, config.seed = method, seed
  config = json.loads(json.dumps(config.to_dict()))
  for key, value in overrides.items():
    group, _, name = key.rpartition('.')
    (config[group] if group else config)[name] = value
  return config


def _phase(path, metrics, *, method, seed, phase=None, dataset='cifar100',
           arch='preact_resnet18', predictions=None, overrides=None, **extra):
  results = dict(zip(METRICS, metrics), nll=1.0, epochs=300, steps=117300, seed=seed,
                 method=method, arch=arch, dataset=dataset, train_time_s=1.0,
                 images_per_s=1.0, **extra)
  if phase:
    results['phase'] = phase
  if overrides is not None:
    config = _grid_config(method, seed, overrides, dataset, arch)
    group = 'aikd' if method in _AIKD_FAMILY else method
    results.update(provenance={'config': config}, method_config=config.get(group, {}))
  _write_json(os.path.join(path, 'results.json'), results)
  if predictions is not None:
    np.savez(os.path.join(path, 'predictions.npz'), **predictions)


def _config(workdir, method, seed, dataset='cifar100', arch='preact_resnet18'):
  _write_json(os.path.join(workdir, 'config.json'),
              {'data': {'name': dataset}, 'model': {'arch': arch}, 'method': method,
               'seed': seed, 'superior_seed': None})


def _make_tree(root, features=False):
  """A half-finished CIFAR-100 sweep and one finished Fashion-MNIST workdir (old format).

  Sweep: superiors seeds 1-3 (the Baseline), AI-KD seeds 0-2, TF-KD seeds 0-1 finished
  and seed 2 checkpointed only, PS-KD seed 0 with a config.json only.
  """
  sweep = os.path.join(root, 'sweep')
  sup = {1: (24.0, 7.0, 75.0, 12.0, 3.0), 2: (24.2, 7.1, 75.2, 11.0, 3.1),
         3: (23.8, 6.9, 74.8, 13.0, 2.9)}
  for seed, m in sup.items():
    _config(os.path.join(sweep, 'superior', f'seed{seed}'), 'baseline', seed - 1)
    _phase(os.path.join(sweep, 'superior', f'seed{seed}', 'superior'), m, method='baseline',
           seed=seed, phase='superior', predictions=_predictions(seed, features=features))
  aikd = {0: (20.0, 5.0, 80.0, 14.0, 2.0), 1: (19.9, 5.1, 80.1, 14.5, 2.2),
          2: (20.1, 4.9, 79.9, 13.5, 1.8)}
  for seed, m in aikd.items():
    workdir = os.path.join(sweep, 'aikd', f'seed{seed}')
    _config(workdir, 'aikd', seed)
    sup_dir = os.path.join(sweep, 'superior', f'seed{seed + 1}', 'superior')
    _phase(os.path.join(workdir, 'student'), m, method='aikd', seed=seed, phase='student',
           method_config={'alpha_ce': 0.6, 'omega': 0.1}, best_top1_err=m[0] - 0.3,
           best_epoch=290, superior={'dir': sup_dir, 'seed': seed + 1, 'top1_err': 24.0},
           predictions=_predictions(10 + seed, features=features))
  tfkd = {0: (22.0, 5.5, 77.5, 10.0, 2.5), 1: (22.4, 5.7, 77.7, 10.2, 2.7)}
  for seed, m in tfkd.items():
    _config(os.path.join(sweep, 'tfkd', f'seed{seed}'), 'tfkd', seed)
    _phase(os.path.join(sweep, 'tfkd', f'seed{seed}', 'student'), m, method='tfkd', seed=seed,
           phase='student', method_config={'alpha': 0.1, 'tau': 20.0},
           predictions=_predictions(20 + seed))
  _config(os.path.join(sweep, 'tfkd', 'seed2'), 'tfkd', 2)
  os.makedirs(os.path.join(sweep, 'tfkd', 'seed2', 'student', 'checkpoints', '100'))
  _config(os.path.join(sweep, 'pskd', 'seed0'), 'pskd', 0)
  demo = os.path.join(root, 'demo')
  _config(demo, 'aikd', 0, dataset='fashion_mnist')
  _phase(os.path.join(demo, 'superior'), (20.12, 0.51, 79.34, 0.67, 0.99), method='baseline',
         seed=1, dataset='fashion_mnist')
  _phase(os.path.join(demo, 'student'), (23.73, 0.60, 75.80, 1.45, 1.31), method='aikd',
         seed=0, dataset='fashion_mnist')
  return [sweep, demo]


# -- the report end to end ------------------------------------------------------------


def test_markdown_matches_golden(tmp_path, capsys):
  dirs = _make_tree(str(tmp_path / 'runs'))
  out = str(tmp_path / 'report')
  assert report.main(dirs + ['--out', out]) == 0
  with open(os.path.join(out, 'report.md')) as f:
    text = f.read()
  if os.environ.get('UPDATE_GOLDEN'):
    os.makedirs(os.path.dirname(GOLDEN), exist_ok=True)
    with open(GOLDEN, 'w') as f:
      f.write(text)
  with open(GOLDEN) as f:
    assert text == f.read()
  printed = capsys.readouterr().out.split()
  assert printed == [os.path.join(out, n) for n in (
      'report.md', 'runs.csv', 'reliability_cifar100_preact_resnet18.png')]


def test_csv_has_one_row_per_run(tmp_path):
  dirs = _make_tree(str(tmp_path / 'runs'))
  out = str(tmp_path / 'report')
  assert report.main(dirs + ['--out', out]) == 0
  with open(os.path.join(out, 'runs.csv')) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 12  # 10 finished phases, 2 pending
  assert [r['status'] for r in rows].count('pending') == 2
  aikd = [r for r in rows if r['method'] == 'aikd' and r['dataset'] == 'cifar100']
  assert sorted(float(r['best_top1_err']) for r in aikd) == pytest.approx([19.6, 19.7, 19.8])
  assert {r['superior_seed'] for r in aikd} == {'1', '2', '3'}
  assert json.loads(aikd[0]['method_config']) == {'alpha_ce': 0.6, 'omega': 0.1}
  demo = [r for r in rows if r['dataset'] == 'fashion_mnist']
  assert {(r['phase'], r['in_table']) for r in demo} == {('superior', 'yes'), ('student', 'yes')}


def test_tsne_through_the_cli(tmp_path, capsys):
  dirs = _make_tree(str(tmp_path / 'runs'), features=True)
  out = str(tmp_path / 'report')
  assert report.main(dirs + ['--out', out, '--tsne', '--tsne_classes', '5',
                             '--tsne_perplexity', '5']) == 0
  printed = capsys.readouterr().out.split()
  # AI-KD saved features (with its superior); TF-KD did not, so it gets no figure.
  assert os.path.join(out, 'tsne_cifar100_preact_resnet18_aikd.png') in printed
  assert not any('tsne' in p and 'tfkd' in p for p in printed)
  assert os.path.getsize(os.path.join(out, 'tsne_cifar100_preact_resnet18_aikd.png')) > 0


def test_no_results_is_one_line_error(tmp_path, capsys):
  _config(str(tmp_path / 'wd'), 'aikd', 0)
  assert report.main([str(tmp_path), '--out', str(tmp_path / 'out')]) == 4
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and err.startswith('error: no usable results.json below')
  assert '(1 phases pending)' in err


def test_missing_folder_is_a_config_error(tmp_path, capsys):
  assert report.main([str(tmp_path / 'nope')]) == 2
  assert 'is not a folder' in capsys.readouterr().err


# -- one section per paper table (golden files) ----------------------------------------


def _cells(root, cells, dataset='cifar100', arch=None):
  """Finished students: {(variant, method): (overrides, top-1, top-5)}, three seeds each
  (the mean as given, std 0.1)."""
  arch = arch or ('preact_resnet18' if dataset == 'cifar100' else 'resnet18')
  for (variant, method), (overrides, top1, top5) in cells.items():
    for seed in range(3):
      d = 0.1 * (seed - 1)
      _phase(os.path.join(root, variant, method, f'seed{seed}', 'student'),
             (top1 + d, top5 + d, 70.0 + d, 10.0 + d, 2.0 + d), method=method, seed=seed,
             phase='student', dataset=dataset, arch=arch, overrides=overrides)
  return root


def _report_text(dirs, *flags):
  out = os.path.join(os.path.dirname(dirs[0]), 'report')
  assert report.main(list(dirs) + ['--out', out, *flags]) == 0
  with open(os.path.join(out, 'report.md')) as f:
    return f.read()


def _assert_golden(name, text):
  path = os.path.join(os.path.dirname(GOLDEN), name)
  if os.environ.get('UPDATE_GOLDEN'):
    with open(path, 'w') as f:
      f.write(text)
  with open(path) as f:
    assert text == f.read()


def _section(text, title):
  """The lines of the section `## title...` of a report."""
  body = text.split(f'\n## {title}')[1]
  return body.split('\n## ')[0].splitlines()


def _line(lines, label):
  """The cells of the first row `label` in `lines`."""
  line = next(l for l in lines if l.startswith(f'| {label} |'))
  return [c.strip() for c in line.strip('|').split('|')]


def test_table5_section(tmp_path):
  methods = {'aikd': 19.9, 'no_adv': 20.3, 'only_progressive': 21.3, 'only_guide': 22.2,
             'baseline': 24.0}
  root = _cells(str(tmp_path / 'sweep'), {('', m): ({}, v, v / 4) for m, v in methods.items()})
  text = _report_text([root])
  _assert_golden('table5.md', text)
  lines = _section(text, 'Table 5')
  assert [l.split('|')[1].strip() for l in lines if l.startswith('| ') and '---' not in l][1:] \
      == ['AI-KD', 'No Adv', 'Only Progressive', 'Only Guide', 'Baseline']
  assert _line(lines, 'AI-KD')[:3] == ['AI-KD', '**19.90 ± 0.10**', '19.87 ± 0.07']
  assert _line(lines, 'No Adv')[1] == '<u>20.30 ± 0.10</u>'


def test_table6_section_puts_each_paper_number_beside_its_omega(tmp_path):
  omegas = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0)
  root = _cells(str(tmp_path / 'sweep'), {(f'omega{w:g}', 'aikd'): (
      {'aikd.omega': w}, 20.0 + w, 5.0 + w) for w in omegas})
  text = _report_text([root])
  _assert_golden('table6.md', text)
  lines = _section(text, 'Table 6')
  assert _line(lines, 'ω = 1') == ['ω = 1', '21.00 ± 0.10', '20.42 ± 0.04', '6.00 ± 0.10',
                                   '5.27 ± 0.29']
  assert _line(lines, 'ω = 0.1') == ['ω = 0.1', '20.10 ± 0.10', '19.87 ± 0.07',
                                     '5.10 ± 0.10', '4.81 ± 0.04']
  assert _line(lines, 'ω = 0')[1] == '**20.00 ± 0.10**'
  assert _line(lines, 'ω = 0.01')[1] == '<u>20.01 ± 0.10</u>'
  # omega 0.1 is AI-KD's recipe: it is also Table 2's AI-KD row, with Table 2's std.
  assert _line(_section(text, 'Tables 2, 3'), 'AI-KD')[2] == '19.87 ± 0.10'
  assert '## Other runs' not in text


def test_table7_section_marks_only_the_best(tmp_path):
  alphas = ((0.6, 0.1, 0.3), (0.6, 0.2, 0.2), (0.6, 0.3, 0.1), (0.7, 0.1, 0.2),
            (0.7, 0.2, 0.1), (0.8, 0.1, 0.1))
  root = _cells(str(tmp_path / 'sweep'), {(f'v{i}', 'aikd'): (
      {'aikd.alpha_ce': ce, 'aikd.alpha_g': g, 'aikd.alpha_p': p}, 20.0 + i, 5.0 + i)
      for i, (ce, g, p) in enumerate(alphas)})
  text = _report_text([root])
  _assert_golden('table7.md', text)
  lines = _section(text, 'Table 7')
  assert _line(lines, '(α_CE, α_G, α_P) = (0.6, 0.2, 0.2)')[1:3] == ['21.00 ± 0.10',
                                                                     '21.29 ± 0.12']
  assert sum(l.count('**') for l in lines) == 4 and '<u>' not in '\n'.join(lines)


def test_table8_section_in_the_papers_order_without_marks(tmp_path):
  # Written in another order than the paper's (and cutmix best): the report reorders.
  variants = {'cutmix': ({'augment.cutmix': 1.0, 'augment.cutmix_prob': 0.5}, 18.9, 4.3),
              'none': ({}, 19.9, 4.8), 'mixup': ({'augment.mixup': 1.0}, 19.3, 4.7),
              'cutout': ({'augment.cutout': 8}, 19.7, 4.9)}
  root = _cells(str(tmp_path / 'sweep'), {(v, 'aikd'): c for v, c in variants.items()})
  text = _report_text([root])
  _assert_golden('table8.md', text)
  lines = _section(text, 'Table 8')
  labels = [l.split('|')[1].strip() for l in lines if l.startswith('| ') and '---' not in l]
  assert labels[1:] == ['AI-KD', '+ Cutout', '+ Mixup', '+ CutMix']
  assert _line(lines, '+ CutMix')[1:3] == ['18.90 ± 0.10', '18.97 ± 0.25']
  assert '**' not in '\n'.join(lines) and '<u>' not in '\n'.join(lines)


def test_tau_search_section(tmp_path):
  taus = [(p, g) for p in (1.0, 2.0, 4.0) for g in (1.0, 2.0, 4.0)]
  root = _cells(str(tmp_path / 'sweep'), {(f'taup{p:g}_taug{g:g}', 'aikd'): (
      {'aikd.tau_p': p, 'aikd.tau_g': g}, 20.0 + p - g / 10, 5.0) for p, g in taus})
  text = _report_text([root])
  _assert_golden('tau_search.md', text)
  lines = _section(text, 'τ search')
  assert _line(lines, 'τ_P = 1, τ_G = 4')[1:3] == ['**20.60 ± 0.10**', '']


def _mixed_tree(root):
  """A Table 2 sweep on two datasets, and on CIFAR-100 a Table 8 CutMix variant (better
  than AI-KD), a Table 6 omega variant, an lr variant and a demo on Fashion-MNIST."""
  comparison = {'baseline': (24.0, 7.0), 'tfkd': (22.0, 5.6), 'aikd': (20.0, 4.9)}
  _cells(root, {('', m): ({}, *v) for m, v in comparison.items()})
  _cells(os.path.join(root, 'cub'), {('', m): ({}, v[0] + 10, v[1] + 5)
                                      for m, v in comparison.items()}, dataset='cub200')
  _cells(root, {('cutmix', 'aikd'): ({'augment.cutmix': 1.0, 'augment.cutmix_prob': 0.5},
                                     18.9, 4.3),
                ('omega0.5', 'aikd'): ({'aikd.omega': 0.5}, 20.2, 4.9),
                ('lr', 'aikd'): ({'optim.lr': 0.05}, 19.0, 4.5)})
  _phase(os.path.join(root, 'demo', 'student'), (23.73, 0.60, 75.80, 1.45, 1.31),
         method='aikd', seed=0, dataset='fashion_mnist', phase='student')
  return root


def test_mixed_directory_ranks_within_each_table(tmp_path):
  text = _report_text([_mixed_tree(str(tmp_path / 'runs'))])
  _assert_golden('mixed.md', text)
  titles = [l[3:].split(':')[0] for l in text.splitlines() if l.startswith('## ')]
  assert titles == ['Tables 2, 3', 'Table 6', 'Table 8', 'Other runs']
  table2 = _section(text, 'Tables 2, 3')
  assert _line(table2, 'AI-KD')[1:3] == ['**20.00 ± 0.10**', '19.87 ± 0.10']  # not CutMix's
  table8 = _section(text, 'Table 8')
  assert _line(table8, 'AI-KD')[1:3] == ['20.00 ± 0.10', '19.87 ± 0.07']
  assert _line(table8, '+ CutMix')[1] == '18.90 ± 0.10'  # Table 8 marks nothing
  table6 = _section(text, 'Table 6')
  assert _line(table6, 'ω = 0.1')[1] == '**20.00 ± 0.10**'
  assert _line(table6, 'ω = 0.5')[1:3] == ['<u>20.20 ± 0.10</u>', '20.17 ± 0.12']
  other = _section(text, 'Other runs')
  assert _line(other, 'AI-KD (optim.lr=0.05)')[1] == '19.00 ± 0.10'
  assert _line(other, 'AI-KD')[1] == '23.73 (n=1)'  # the Fashion-MNIST demo


def test_paper_layout_has_datasets_as_columns(tmp_path):
  text = _report_text([_mixed_tree(str(tmp_path / 'runs'))], '--layout=paper')
  _assert_golden('paper_layout.md', text)
  table2 = _section(text, 'Tables 2, 3')
  headings = [l[4:] for l in table2 if l.startswith('### ')]
  assert headings == ['Top-1 err (%) (Table 2), ResNet-18', 'F1 macro (Table 2), ResNet-18',
                      'Top-5 err (%) (Table 3), ResNet-18', 'ECE (%) (Table 3), ResNet-18']
  assert _line(table2, 'Method') == ['Method', 'CIFAR-100', 'paper', 'CUB-200-2011', 'paper']
  f1 = table2[table2.index('### F1 macro (Table 2), ResNet-18'):]
  # F1 as a fraction, ours and the paper's (every run here has F1 70 %: all tie, all bold).
  assert _line(f1, 'Baseline')[1:5] == ['**0.700 ± 0.001**', '0.759 ± 0.003',
                                        '**0.700 ± 0.001**', '0.631 ± 0.008']
  ece = table2[table2.index('### ECE (%) (Table 3), ResNet-18'):]
  labels = [l.split('|')[1].strip() for l in ece if l.startswith('| ')]
  assert labels[-2:] == ['AI-KD', '+ TS']
  assert _line(ece, '+ TS')[1:3] == ['2.00 ± 0.10', '2.95']
  # Tables 5-8 keep the per-setting layout.
  assert '### CIFAR-100, PreAct ResNet-18' in '\n'.join(_section(text, 'Table 8'))


# -- rows: settings, stand-ins, pending ----------------------------------------------


def _run(method, seed, top1=20.0, phase='student', config=None, dataset='cifar100',
         overrides=None):
  """A Run; `overrides` (flat keys) are applied to the grid config in its provenance."""
  results = {'dataset': dataset, 'arch': 'preact_resnet18', 'method': method, 'seed': seed,
             'top1_err': top1, 'phase': phase}
  if config is not None:
    results['method_config'] = config
  if overrides is not None:
    results['provenance'] = {'config': _grid_config(method, seed, overrides)}
    if method in results['provenance']['config']:
      results['method_config'] = results['provenance']['config'][method]
  return report.Run(f'/runs/{method}/{json.dumps(overrides)}/{phase}{seed}', results)


def _rows(runs, pending=()):
  return {(k[2], k[3]): r for k, r in report.build_rows(runs, list(pending)).items()}


def test_superiors_stand_in_only_where_no_student_trained_baseline():
  runs = [_run('baseline', 0), _run('baseline', 0, phase='superior'),
          _run('baseline', 1, phase='superior'), _run('baseline', 1, phase='superior'),
          _run('imported', 2, phase='superior'), _run('aikd', 0)]
  chosen = report_sections.table_runs(runs)
  assert sorted((r.key[2], r.phase, r.seed) for r in chosen) == [
      ('aikd', 'student', 0), ('baseline', 'student', 0)]
  chosen = report_sections.table_runs(runs[1:])
  assert sorted((r.key[2], r.phase, r.seed) for r in chosen) == [
      ('aikd', 'student', 0), ('baseline', 'superior', 0), ('baseline', 'superior', 1)]


def test_variants_of_a_method_get_their_own_rows():
  runs = [_run('aikd', 0, 19.0, config={'omega': 0.1, 'tau_p': 1}),
          _run('aikd', 1, 19.2, config={'omega': 0.1, 'tau_p': 1}),
          _run('aikd', 0, 21.0, config={'omega': 0.5, 'tau_p': 1})]
  rows = report.build_rows(runs, [])
  assert [(r.label, len(r.runs)) for r in rows.values()] == [('AI-KD', 2),
                                                            ('AI-KD (aikd.omega=0.5)', 1)]


def test_a_row_is_named_by_every_key_that_differs_from_the_recipe():
  """optim.lr is not the method's key: the row says so, and is never merged with AI-KD."""
  default = [_run('aikd', s, 19.0 + s, overrides={}) for s in range(3)]
  lr = [_run('aikd', s, 30.0, overrides={'optim.lr': 0.05}) for s in range(3)]
  rows = _rows(default + lr)
  assert {label_runs for label_runs in ((r.label, len(r.runs)) for r in rows.values())} == {
      ('AI-KD', 3), ('AI-KD (optim.lr=0.05)', 3)}
  alone = _rows(lr)  # the recipe's lr is the paper's, not the runs' majority
  assert [r.label for r in alone.values()] == ['AI-KD (optim.lr=0.05)']
  sections = report.build_sections(report.build_rows(default + lr, []))
  assert [report_sections.section_title(s) for s in sections] == [
      'Tables 2, 3: Comparison with self-KD methods, ResNet-18 and ResNet-50', 'Other runs']
  (other,) = sections[1].blocks.values()
  assert [line.label for line in other] == ['AI-KD (optim.lr=0.05)']


def test_keys_outside_the_recipe_follow_the_majority_of_the_runs():
  runs = [_run('aikd', s, overrides={'model.width': 64}) for s in range(3)]
  runs.append(_run('aikd', 0, overrides={'model.width': 16}))
  assert sorted(r.label for r in _rows(runs).values()) == ['AI-KD', 'AI-KD (model.width=16)']
  split = [_run('aikd', 0, overrides={'model.width': 64}),
           _run('aikd', 0, overrides={'model.width': 16})]  # no majority: both named
  assert sorted(r.label for r in _rows(split).values()) == [
      'AI-KD (model.width=16)', 'AI-KD (model.width=64)']


def test_pending_seed_that_finished_elsewhere_is_not_counted():
  pending = [report.Pending('/x', 'cifar100', 'preact_resnet18', 'aikd', 0, 'student'),
             report.Pending('/y', 'cifar100', 'preact_resnet18', 'aikd', 1, 'student'),
             report.Pending('/z', 'cifar100', 'preact_resnet18', 'aikd', 2, 'superior')]
  rows = report.build_rows([_run('aikd', 0)], pending)
  # seed 1 of AI-KD is pending; the superior of seed 2 is a pending Baseline.
  assert [(r.label, len(r.runs), r.pending) for r in rows.values()] == [('Baseline', 0, 1),
                                                                       ('AI-KD', 1, 1)]
  # Where students train `baseline`, the superiors are not the Baseline: not pending.
  rows = report.build_rows([_run('aikd', 0), _run('baseline', 0)], pending)
  assert [(r.label, len(r.runs), r.pending) for r in rows.values()] == [('Baseline', 1, 0),
                                                                       ('AI-KD', 1, 1)]


def test_ranks_share_ties_respect_direction_and_the_tables_marks():
  lines = [report_sections.Line(report.Row('a', (), [_run('a', 0, v)]), None)
           for v in (20.001, 20.0, 21.0, 22.0)]
  lines.append(report_sections.Line(report.Row('e', ()), None))
  assert report_sections.ranks(lines, 'top1_err') == {0: 1, 1: 1, 2: 2}
  assert report_sections.ranks(lines, 'top1_err', marks=1) == {0: 1, 1: 1}
  assert report_sections.ranks(lines, 'top1_err', marks=0) == {}
  assert report_sections.ranks(lines[:1], 'top1_err') == {}
  lines[2].ours.runs[0].results['top1_err'] = float('nan')  # results.json's "nan"
  assert report_sections.ranks(lines, 'top1_err') == {0: 1, 1: 1, 3: 2}
  higher = [report_sections.Line(report.Row('a', (), [_run('a', 0, v, phase='student')]), None)
            for v in (20.0, 21.0, 22.0)]
  for line, f1 in zip(higher, (70.0, 80.0, 75.0)):
    line.ours.runs[0].results['f1_macro'] = f1
  assert report_sections.ranks(higher, 'f1_macro') == {1: 1, 2: 2}


def test_format_cell():
  assert report_sections.format_cell([1.0, 2.0, 3.0], 1, 0) == '**2.00 ± 1.00**'
  assert report_sections.format_cell([1.0, 3.0], 2, 1) == '<u>2.00 ± 1.41</u> (n=2)'
  assert report_sections.format_cell([4.0], None, 0) == '4.00 (n=1)'
  assert report_sections.format_cell([1.0, 2.0, 3.0], None, 2) == '2.00 ± 1.00'
  assert report_sections.format_cell([80.0, 80.2, 80.1], None, 0, 0.01, 3) == '0.801 ± 0.001'
  assert report_sections.format_cell(None, None, 2) == 'pending'
  assert report_sections.format_cell(None, None, 0) == '—'


# -- figures --------------------------------------------------------------------------


def _two_class_logits(confidences, correct):
  """Binary logits whose max softmax is each confidence; argmax right where `correct`."""
  z = np.log(np.asarray(confidences) / (1 - np.asarray(confidences)))
  logits = np.stack([np.zeros_like(z), z], axis=1)  # argmax: class 1
  labels = np.where(correct, 1, 0)
  return logits, labels


def test_combined_reliability_plots_one_curve_per_method(tmp_path):
  one_bin = _two_class_logits([0.75] * 4, [True, True, True, False])  # acc 0.75
  three_bins = _two_class_logits([0.65, 0.65, 0.85, 0.95], [True, False, True, True])
  path = str(tmp_path / 'rel.png')
  info = plots.combined_reliability([('A', *one_bin), ('B', *three_bins)], path, title='t')
  assert os.path.getsize(path) > 0
  assert info['points'] == {'A': 1, 'B': 3} and info['examples'] == {'A': 4, 'B': 4}
  lines = [l for l in info['figure'].axes[0].get_lines() if not l.get_label().startswith('_')]
  assert [l.get_label().split(' (')[0] for l in lines] == ['A', 'B']
  np.testing.assert_allclose(lines[0].get_xdata(), [0.75])
  np.testing.assert_allclose(lines[0].get_ydata(), [0.75])
  np.testing.assert_allclose(lines[1].get_xdata(), [0.65, 0.85, 0.95])
  np.testing.assert_allclose(lines[1].get_ydata(), [0.5, 1.0, 1.0])


def test_report_reliability_curves_cover_every_method_with_predictions(tmp_path):
  dirs = _make_tree(str(tmp_path))
  rows = report.build_rows(report.load_runs(dirs), report.find_pending(dirs))
  curves = report.reliability_curves([r for k, r in rows.items() if k[0] == 'cifar100'])
  assert [(label, logits.shape[0]) for label, logits, _ in curves] == [
      ('Baseline', 360), ('TF-KD', 240), ('AI-KD', 360), ('AI-KD + TS', 360)]


def test_tsne_figure_plots_the_class_subset(tmp_path):
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(25), 6)  # 25 classes, 6 examples each
  student = rng.normal(size=(150, 8)) + labels[:, None]
  superior = student + rng.normal(scale=0.1, size=student.shape)
  path = str(tmp_path / 'tsne.png')
  info = plots.tsne_figure(student, superior, labels, path, num_classes=20, max_per_class=4,
                           perplexity=5)
  assert os.path.getsize(path) > 0
  assert len(info['classes']) == 20 and set(info['classes']) <= set(range(25))
  assert info['points'] == 80 and info['embedding'].shape == (160, 2)
  left, right = info['figure'].axes[:2]
  (by_class,) = left.collections
  assert by_class.get_offsets().shape == (80, 2)
  assert len(np.unique(by_class.get_array())) == 20  # one colour index per class
  assert [c.get_offsets().shape[0] for c in right.collections] == [80, 80]
  assert [c.get_label() for c in right.collections] == ['superior', 'student']


def test_reliability_adds_the_ts_curve_to_the_recipes_ai_kd_only(tmp_path):
  root = str(tmp_path / 'runs')
  for variant, overrides in (('default', {}), ('omega', {'aikd.omega': 0.5})):
    for seed in range(2):
      _phase(os.path.join(root, variant, f'seed{seed}', 'student'), (20.0,) * 5, method='aikd',
             seed=seed, phase='student', overrides=overrides,
             predictions=_predictions(seed))
  rows = report.build_rows(report.load_runs([root]), [])
  curves = report.reliability_curves(list(rows.values()))
  assert [(label, logits.shape[0]) for label, logits, _ in curves] == [
      ('AI-KD', 240), ('AI-KD + TS', 240), ('AI-KD (aikd.omega=0.5)', 240)]


def test_paper_layout_counts_pending_runs_over_the_datasets(tmp_path):
  text = _report_text(_make_tree(str(tmp_path / 'runs')), '--layout=paper')
  top1 = _section(text, 'Tables 2, 3')
  assert _line(top1, 'TF-KD (1 pending)')[1:3] == ['<u>22.20 ± 0.28</u> (n=2)', '22.07 ± 0.38']
  assert _line(top1, 'PS-KD (1 pending)')[1:3] == ['pending', '21.16 ± 0.22']
