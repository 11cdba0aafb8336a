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

from aikd_jax import plots, report
from configs import common, paper_tables

GOLDEN = os.path.join(os.path.dirname(__file__), 'golden', 'report.md')
METRICS = ('top1_err', 'top5_err', 'f1_macro', 'ece', 'ece_ts')


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


def _phase(path, metrics, *, method, seed, phase=None, dataset='cifar100',
           arch='preact_resnet18', predictions=None, **extra):
  results = dict(zip(METRICS, metrics), nll=1.0, epochs=300, steps=117300, seed=seed,
                 method=method, arch=arch, dataset=dataset, train_time_s=1.0,
                 images_per_s=1.0, **extra)
  if phase:
    results['phase'] = phase
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
  assert err.count('\n') == 1 and err.startswith('error: no results.json below')
  assert '(1 phases pending)' in err


def test_unreadable_results_is_one_line_error(tmp_path, capsys):
  os.makedirs(tmp_path / 'wd' / 'student')
  (tmp_path / 'wd' / 'student' / 'results.json').write_text('{"top1_err": 1')
  assert report.main([str(tmp_path), '--out', str(tmp_path / 'out')]) == 4
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and 'results.json' in err


def test_missing_folder_is_a_config_error(tmp_path, capsys):
  assert report.main([str(tmp_path / 'nope')]) == 2
  assert 'is not a folder' in capsys.readouterr().err


# -- table building -------------------------------------------------------------------


def _run(method, seed, top1=20.0, phase='student', config=None, dataset='cifar100'):
  results = {'dataset': dataset, 'arch': 'preact_resnet18', 'method': method, 'seed': seed,
             'top1_err': top1, 'phase': phase}
  if config is not None:
    results['method_config'] = config
  return report.Run(f'/runs/{method}/{phase}{seed}', results)


def test_superiors_stand_in_only_where_no_student_trained_baseline():
  runs = [_run('baseline', 0), _run('baseline', 0, phase='superior'),
          _run('baseline', 1, phase='superior'), _run('baseline', 1, phase='superior'),
          _run('imported', 2, phase='superior'), _run('aikd', 0)]
  chosen = report.table_runs(runs)
  assert sorted((r.key[2], r.phase, r.seed) for r in chosen) == [
      ('aikd', 'student', 0), ('baseline', 'student', 0)]
  chosen = report.table_runs(runs[1:])
  assert sorted((r.key[2], r.phase, r.seed) for r in chosen) == [
      ('aikd', 'student', 0), ('baseline', 'superior', 0), ('baseline', 'superior', 1)]


def test_variants_of_a_method_get_their_own_rows():
  runs = [_run('aikd', 0, 19.0, config={'omega': 0.1, 'tau_p': 1}),
          _run('aikd', 1, 19.2, config={'omega': 0.1, 'tau_p': 1}),
          _run('aikd', 0, 21.0, config={'omega': 0.5, 'tau_p': 1})]
  rows = report.build_tables(runs, [], paper_lookup=lambda *a: None,
                             paper_methods=lambda *a: [])[('cifar100', 'preact_resnet18')]
  assert [(r.label, len(r.runs)) for r in rows] == [('AI-KD (omega=0.1)', 2),
                                                    ('AI-KD (omega=0.5)', 1)]


def test_pending_seed_that_finished_elsewhere_is_not_counted():
  pending = [report.Pending('/x', 'cifar100', 'preact_resnet18', 'aikd', 0, 'student'),
             report.Pending('/y', 'cifar100', 'preact_resnet18', 'aikd', 1, 'student'),
             report.Pending('/z', 'cifar100', 'preact_resnet18', 'aikd', 2, 'superior')]
  rows = report.build_tables([_run('aikd', 0)], pending, paper_lookup=lambda *a: None,
                             paper_methods=lambda *a: [])[('cifar100', 'preact_resnet18')]
  # seed 1 of AI-KD is pending; the superior of seed 2 is a pending Baseline.
  assert [(r.label, len(r.runs), r.pending) for r in rows] == [('Baseline', 0, 1),
                                                               ('AI-KD', 1, 1)]


def test_ranks_share_ties_and_respect_direction():
  rows = [report.Row('a', 'a', [_run('a', 0, 20.001)]), report.Row('b', 'b', [_run('b', 0, 20.0)]),
          report.Row('c', 'c', [_run('c', 0, 21.0)]), report.Row('d', 'd', [_run('d', 0, 22.0)]),
          report.Row('e', 'e')]
  assert report.ranks(rows, 'top1_err', lower_is_better=True) == {0: 1, 1: 1, 2: 2}
  assert report.ranks(rows, 'top1_err', lower_is_better=False) == {3: 1, 2: 2}
  assert report.ranks(rows[:1], 'top1_err', True) == {}


def test_format_cell():
  assert report.format_cell([1.0, 2.0, 3.0], 1, 0) == '**2.00 ± 1.00**'
  assert report.format_cell([1.0, 3.0], 2, 1) == '<u>2.00 ± 1.41</u> (n=2)'
  assert report.format_cell([4.0], None, 0) == '4.00 (n=1)'
  assert report.format_cell([1.0, 2.0, 3.0], None, 2) == '2.00 ± 1.00'
  assert report.format_cell(None, None, 2) == 'pending'
  assert report.format_cell(None, None, 0) == '—'


def test_paper_tables_agree_with_common_paper():
  for (dataset, arch), (_, base, base_std, aikd, aikd_std) in common.PAPER.items():
    assert paper_tables.lookup(dataset, arch, 'baseline')['top1_err'] == (base, base_std)
    assert paper_tables.lookup(dataset, arch, 'aikd')['top1_err'] == (aikd, aikd_std)
  assert len(paper_tables.methods_for('cifar100', 'preact_resnet18')) == 10
  assert paper_tables.methods_for('cub200', 'densenet121') == [
      'baseline', 'cskd', 'tfkd', 'pskd', 'aikd']
  assert paper_tables.lookup('mit67', 'resnet50', 'tfkd')['f1_macro'] == (62.9, 0.4)


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
  tables = report.build_tables(report.load_runs(dirs), report.find_pending(dirs))
  curves = report.reliability_curves(tables[('cifar100', 'preact_resnet18')])
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


def test_runs_with_batch_augmentation_get_their_own_labelled_rows():
  def aug_run(seed, augment, superior_augment='none'):
    r = _run('aikd', seed, 19.0, config={'omega': 0.1})
    config = {'augment': {'cutout': 0, 'mixup': 0.0, 'cutmix': 0.0, 'cutmix_prob': 1.0,
                          **augment}, 'superior_augment': superior_augment}
    return report.Run(r.path + str(augment), {**r.results, 'provenance': {'config': config},
                                              'superior': {'seed': seed + 1}})
  runs = [aug_run(0, {}), aug_run(1, {}), aug_run(0, {'cutmix': 1.0, 'cutmix_prob': 0.5}),
          aug_run(0, {'cutout': 8}, 'same')]
  rows = report.build_tables(runs, [], paper_lookup=lambda *a: None,
                             paper_methods=lambda *a: [])[('cifar100', 'preact_resnet18')]
  assert sorted((r.label, len(r.runs)) for r in rows) == [
      ('AI-KD (augment=None)', 2), ('AI-KD (augment=cutmix 1 p=0.5, superior none)', 1),
      ('AI-KD (augment=cutout 8, superior same)', 1)]
