"""The sweep: grid layout, shared superiors, up-front validation, failing cells, skipping,
stop-and-resume, sweep.json, presets, and a smoke sweep of every method read by the report."""
import importlib.util
import json
import os
import time

import pytest

from aikd_jax import plan as plan_lib
from aikd_jax import report, run, sweep
from aikd_jax.errors import ConfigError, DataError, WorkdirError
from tests.runs import ROOT, read_json, smoke_config

PAPER_METHODS = ('baseline', 'tfkd', 'pskd', 'cskd', 'zipf_ls', 'tffd', 'aikd')
TIMING = ('train_time_s', 'images_per_s', 'throughput', 'provenance', 'superior')


def _preset(name):
  path = os.path.join(ROOT, 'configs', 'sweeps', name)
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module, sweep.load_preset(path)


def _quiet(lines):
  return lambda line: lines.append(line)


def _plan(base, workdir, methods, seeds, variants=None):
  return plan_lib.build(base, str(workdir), list(methods), list(seeds), variants)


def _config(plan, cell):
  return plan_lib.cell_config(plan, cell)


# -- the grid (no training) -----------------------------------------------------------


def test_cells_share_one_superior_per_seed(data_dirs, tmp_path):
  plan = _plan(smoke_config(data_dirs), tmp_path, PAPER_METHODS, [0, 1])
  cells = plan.cells
  names = [c.name for c in cells]
  assert names[:8] == ['superior seed 0', 'baseline seed 0', 'tfkd seed 0', 'pskd seed 0',
                       'cskd seed 0', 'zipf_ls seed 0', 'tffd seed 0', 'aikd seed 0']
  assert [c.index for c in cells] == list(range(2 * (1 + len(PAPER_METHODS))))
  by_name = {c.name: c for c in cells}
  sup = by_name['superior seed 1']
  assert sup.workdir == str(tmp_path / 'superior' / 'seed1') and sup.kind == 'superior'
  assert (_config(plan, sup)['method'], _config(plan, sup)['seed']) == ('baseline', 1)
  for method in ('tfkd', 'aikd'):
    cell = by_name[f'{method} seed 1']
    assert cell.depends_on == sup.index
    assert _config(plan, cell)['superior_workdir'] == sup.workdir
    assert cell.overrides == {'method': method, 'seed': 1, 'superior_workdir': sup.workdir}
    assert cell.workdir == str(tmp_path / method / 'seed1')
  for method in ('baseline', 'pskd', 'cskd', 'zipf_ls', 'tffd'):
    cell = by_name[f'{method} seed 1']
    assert cell.depends_on is None and _config(plan, cell)['superior_workdir'] is None
    assert _config(plan, cell)['train_superior'] == 'auto'
  # Without a method that needs one, no superior is trained.
  assert all(not c.is_superior for c in _plan(
      smoke_config(data_dirs), tmp_path, ['baseline', 'pskd'], [0]).cells)


def test_variants_share_the_superior_unless_they_change_phase_one(data_dirs, tmp_path):
  _, grid = _preset('table8_augment.py')
  base = smoke_config(data_dirs)
  plan = _plan(base, tmp_path, ['aikd'], [0], grid['variants'])
  cells = plan.cells
  assert [c.workdir for c in cells if c.is_superior] == [str(tmp_path / 'superior' / 'seed0')]
  assert {c.workdir for c in cells if not c.is_superior} == {
      str(tmp_path / v / 'aikd' / 'seed0') for v in ('none', 'cutout', 'mixup', 'cutmix')}
  cutmix = next(c for c in cells if c.variant == 'cutmix')
  assert _config(plan, cutmix)['augment']['cutmix'] == 1.0
  superior = plan.cell(cutmix.depends_on)
  assert _config(plan, superior)['augment'] == plan_lib._NO_AUGMENT  # pylint: disable=protected-access
  base.superior_augment = 'same'
  cells = _plan(base, tmp_path, ['aikd'], [0], grid['variants']).cells
  assert [c.workdir for c in cells if c.is_superior] == [
      str(tmp_path / 'superior' / 'seed0')] + [
          str(tmp_path / v / 'superior' / 'seed0') for v in ('cutout', 'mixup', 'cutmix')]


def test_superior_config_honours_superior_augment(data_dirs):
  from aikd_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  raw = smoke_config(data_dirs, **{'augment.cutmix': 1.0, 'augment.cutmix_prob': 0.5})
  sup = run.superior_config(config_lib.parse(raw))
  assert (sup.augment.cutmix, sup.augment.mixup, sup.augment.cutout) == (0.0, 0.0, 0)
  assert (sup.method, sup.seed) == ('baseline', 1)
  raw.superior_augment = 'same'
  assert run.superior_config(config_lib.parse(raw)).augment.cutmix == 1.0


@pytest.mark.parametrize('name, variants, first', [
    ('table5_losses.py', 0, None), ('table6_omega.py', 8, {'aikd.omega': 0.0}),
    ('table7_alpha.py', 6, {'aikd.alpha_ce': 0.6, 'aikd.alpha_g': 0.1, 'aikd.alpha_p': 0.3}),
    ('table8_augment.py', 4, {}), ('temperatures.py', 9, {'aikd.tau_p': 1.0, 'aikd.tau_g': 1.0})])
def test_presets_build_valid_grids(name, variants, first, tmp_path):
  module, grid = _preset(name)
  assert len(grid.get('variants', {})) == variants
  if first is not None:
    assert next(iter(grid['variants'].values())) == first
  cells = _plan(module.get_config(), tmp_path, grid['methods'], grid['seeds'],
                grid.get('variants')).cells
  assert sum(c.is_superior for c in cells) == 3  # one superior per seed, shared
  assert not os.listdir(tmp_path)


@pytest.mark.parametrize('overrides, variants, says', [
    ({'aikd.omega': -1.0}, None, 'cell baseline seed 0: aikd.omega must be >= 0'),
    ({}, {'bad': {'aikd.omegaa': 0.5}}, 'variant bad: unknown config key aikd.omegaa'),
    ({}, {'bad': {'augment.cutmix': 1.0, 'augment.mixup': 1.0}}, 'are both on'),
    ({'method': 'x'}, {'aikd': {}}, 'cannot be a folder'),
])
def test_a_bad_config_stops_the_sweep_before_anything_runs(data_dirs, tmp_path, monkeypatch,
                                                           overrides, variants, says):
  calls = []
  monkeypatch.setattr(run, 'run', lambda *a, **k: calls.append(a))
  base = smoke_config(data_dirs, **overrides)
  with pytest.raises(ConfigError, match=says):
    sweep.run_sweep(base, str(tmp_path / 'sweep'), ['baseline', 'aikd'], [0, 1], variants,
                    log=_quiet([]))
  assert not calls and not os.path.exists(tmp_path / 'sweep')


# -- with a fake trainer --------------------------------------------------------------


def _fake_results(config, workdir, phase):
  res = {'top1_err': 10.0 + config['seed'], 'method': config['method'], 'seed': config['seed']}
  os.makedirs(os.path.join(workdir, phase), exist_ok=True)
  with open(os.path.join(workdir, phase, 'results.json'), 'w') as f:
    json.dump(res, f)
  return res


@pytest.fixture
def fake_trainer(monkeypatch):
  """run.run / run.run_superior_only that write a results.json; `fail` names failing
  methods."""
  calls, fail = [], {}

  def fake_run(config, workdir, stop_requested=lambda: False):
    del stop_requested
    calls.append(workdir)
    if config['method'] in fail:
      raise fail[config['method']]
    return {'student': _fake_results(config, workdir, 'student')}

  def fake_superior(config, workdir, stop_requested=lambda: False):
    del stop_requested
    calls.append(workdir)
    if 'superior' in fail:
      raise fail['superior']
    return _fake_results(config, workdir, 'superior')
  monkeypatch.setattr(run, 'run', fake_run)
  monkeypatch.setattr(run, 'run_superior_only', fake_superior)
  return calls, fail


def test_a_failing_cell_is_reported_and_the_others_finish(data_dirs, tmp_path, fake_trainer):
  calls, fail = fake_trainer
  fail['pskd'] = DataError('pskd cannot read its data')
  fail['cskd'] = RuntimeError('boom')
  lines = []
  out = sweep.run_sweep(smoke_config(data_dirs), str(tmp_path), list(PAPER_METHODS), [0, 1],
                        log=_quiet(lines))
  assert out.exit_code == 1 and not out.stopped
  assert [name for name, _ in out.failed] == ['pskd seed 0', 'cskd seed 0', 'pskd seed 1',
                                              'cskd seed 1']
  assert 'pskd cannot read its data' in out.failed[0][1]
  assert 'internal error (RuntimeError: boom); traceback in' in out.failed[1][1]
  # The traceback goes to the cell's error.log, which its cell.json names.
  assert 'RuntimeError: boom' in (tmp_path / 'cskd' / 'seed0' / 'error.log').read_text()
  record = read_json(tmp_path / 'cskd' / 'seed0' / 'cell.json')
  assert (record['state'], record['exit_code']) == ('failed', 1)
  assert record['error_log'] == str(tmp_path / 'cskd' / 'seed0' / 'error.log')
  assert read_json(tmp_path / 'pskd' / 'seed0' / 'cell.json')['exit_code'] == 3
  assert len(calls) == 2 * (1 + len(PAPER_METHODS))
  assert 'sweep: cell pskd seed 0 failed: pskd cannot read its data' in lines
  assert any(l.startswith('sweep: cell 16/16 aikd seed 1 (11 done, 4 failed, ETA') for l in lines)
  text = sweep.summary(out, str(tmp_path))
  assert 'report: python -m aikd_jax.report ' + str(tmp_path) in text
  assert [l.split()[:2] for l in text.splitlines()[1:9]][3] == ['pskd', '0/2']
  # Again: only the failed cells run.
  calls.clear()
  del fail['pskd'], fail['cskd']
  out = sweep.run_sweep(smoke_config(data_dirs), str(tmp_path), list(PAPER_METHODS), [0, 1],
                        log=_quiet([]))
  assert out.exit_code == 0 and sorted(calls) == sorted(
      str(tmp_path / m / f'seed{s}') for m in ('pskd', 'cskd') for s in (0, 1))


def test_a_failed_superior_fails_its_students_only(data_dirs, tmp_path, fake_trainer):
  calls, fail = fake_trainer
  fail['superior'] = WorkdirError('disk gone')
  out = sweep.run_sweep(smoke_config(data_dirs), str(tmp_path), ['tfkd', 'pskd', 'aikd'], [0],
                        log=_quiet([]))
  assert out.failed == [('superior seed 0', 'disk gone'),
                        ('tfkd seed 0', 'its superior (superior seed 0) failed'),
                        ('aikd seed 0', 'its superior (superior seed 0) failed')]
  assert calls == [str(tmp_path / 'superior' / 'seed0'), str(tmp_path / 'pskd' / 'seed0')]


def test_sweep_json_grows_but_refuses_another_base_config(data_dirs, tmp_path, fake_trainer):
  calls, _ = fake_trainer
  sweep.run_sweep(smoke_config(data_dirs), str(tmp_path), ['pskd'], [0], log=_quiet([]))
  # More methods and seeds (and a resumable key) are fine; finished cells are skipped.
  calls.clear()
  sweep.run_sweep(smoke_config(data_dirs, log_every_steps=7), str(tmp_path), ['pskd', 'cskd'],
                  [0, 1], log=_quiet([]))
  assert sorted(calls) == sorted(str(tmp_path / m / f'seed{s}')
                                 for m, s in (('pskd', 1), ('cskd', 0), ('cskd', 1)))
  grid = read_json(tmp_path / 'sweep.json')
  assert (grid['methods'], grid['seeds']) == (['pskd', 'cskd'], [0, 1])
  calls.clear()
  with pytest.raises(WorkdirError, match='different base config .differs in: optim.lr'):
    sweep.run_sweep(smoke_config(data_dirs, **{'optim.lr': 0.5}), str(tmp_path), ['pskd'], [0],
                    log=_quiet([]))
  assert sweep.run_sweep(smoke_config(data_dirs), str(tmp_path), ['pskd'], [0],
                         {'v': {'pskd.alpha_t': 0.5}}, log=_quiet([])).exit_code == 0
  with pytest.raises(WorkdirError, match='variant v with other overrides'):
    sweep.run_sweep(smoke_config(data_dirs), str(tmp_path), ['pskd'], [0],
                    {'v': {'pskd.alpha_t': 0.6}}, log=_quiet([]))
  assert read_json(tmp_path / 'sweep.json')['variants'] == {'v': {'pskd.alpha_t': 0.5}}


def test_a_damaged_results_json_reruns_its_cell(data_dirs, tmp_path, fake_trainer):
  calls, _ = fake_trainer
  sweep.run_sweep(smoke_config(data_dirs), str(tmp_path), ['pskd', 'cskd'], [0], log=_quiet([]))
  damaged = tmp_path / 'pskd' / 'seed0' / 'student' / 'results.json'
  damaged.write_text('{"top1_err": 1')
  calls.clear()
  out = sweep.run_sweep(smoke_config(data_dirs), str(tmp_path), ['pskd', 'cskd'], [0],
                        log=_quiet([]))
  assert calls == [str(tmp_path / 'pskd' / 'seed0')] and out.exit_code == 0
  assert out.results['pskd seed 0'] == read_json(damaged)
  # (run.run itself moves the damaged file aside: tests/test_train.py.)


def test_a_gcs_sweep_folder_is_refused_in_one_line(data_dirs, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(WorkdirError, match='gs://b/sweep: a sweep folder must be on a local'):
    sweep.run_sweep(smoke_config(data_dirs), 'gs://b/sweep', ['pskd'], [0], log=_quiet([]))
  assert not os.listdir(tmp_path)


def test_sweep_flag_supplies_the_config():
  assert sweep.with_sweep_config(['x', '--sweep=s.py', '--workdir=d']) == [
      'x', '--config=s.py', '--sweep=s.py', '--workdir=d']
  assert sweep.with_sweep_config(['x', '--config=c.py', '--sweep=s.py']) == [
      'x', '--config=c.py', '--sweep=s.py']


# -- real training --------------------------------------------------------------------


@pytest.fixture(scope='module')
def small_sweep(tmp_path_factory, data_dirs):
  """superior + baseline + pskd + aikd, seed 0, trained for real."""
  workdir = str(tmp_path_factory.mktemp('sweep'))
  out = sweep.run_sweep(smoke_config(data_dirs), workdir, ['baseline', 'pskd', 'aikd'], [0],
                        log=_quiet([]))
  return workdir, out


def _strip(results):
  return {k: v for k, v in results.items() if k not in TIMING}


@pytest.mark.xdist_group('small_sweep')  # one worker trains the fixture once
def test_a_second_invocation_skips_every_cell(small_sweep, data_dirs, monkeypatch):
  workdir, first = small_sweep
  assert first.exit_code == 0 and len(first.trained) == 4
  monkeypatch.setattr(run, 'run', lambda *a, **k: pytest.fail('trained a finished cell'))
  lines, start = [], time.monotonic()
  out = sweep.run_sweep(smoke_config(data_dirs), workdir, ['baseline', 'pskd', 'aikd'], [0],
                        log=_quiet(lines))
  assert time.monotonic() - start < 5
  assert out.trained == [] and out.exit_code == 0
  assert lines == [f'sweep: 4 cells (1 superiors, 3 students) in {workdir}, 4 finished already']
  assert {k: _strip(v) for k, v in out.results.items()} == {
      k: _strip(v) for k, v in first.results.items()}
  student = read_json(os.path.join(workdir, 'aikd', 'seed0', 'student', 'results.json'))
  assert student['superior']['dir'] == os.path.join(workdir, 'superior', 'seed0', 'superior')
  assert student['superior']['seed'] == 1
  assert first.results['baseline seed 0']['seed'] == 0


@pytest.mark.xdist_group('small_sweep')  # one worker trains the fixture once
def test_a_sweep_stopped_mid_cell_finishes_on_restart_like_an_uninterrupted_one(
    small_sweep, data_dirs, tmp_path):
  reference, first = small_sweep
  calls = []
  # Sweep checks before each cell (1), 6 superior steps, 1 check, then aikd's steps.
  stop_in_aikd = lambda: calls.append(1) or len(calls) >= 10
  lines = []
  out = sweep.run_sweep(smoke_config(data_dirs), str(tmp_path), ['aikd'], [0],
                        stop_requested=stop_in_aikd, log=_quiet(lines))
  assert out.stopped and out.trained == ['superior seed 0'] and out.exit_code == 0
  assert any(l.startswith('sweep: stopped in cell aikd seed 0') for l in lines)
  assert os.listdir(tmp_path / 'aikd' / 'seed0' / 'student' / 'checkpoints')
  assert not os.path.exists(tmp_path / 'aikd' / 'seed0' / 'student' / 'results.json')
  out = sweep.run_sweep(smoke_config(data_dirs), str(tmp_path), ['aikd'], [0], log=_quiet([]))
  assert out.trained == ['aikd seed 0'] and not out.stopped
  for name in ('superior seed 0', 'aikd seed 0'):
    assert _strip(out.results[name]) == _strip(first.results[name]), name


@pytest.mark.xdist_group('small_sweep')  # one worker trains the fixture once
def test_report_reads_a_sweep(small_sweep, tmp_path):
  workdir, _ = small_sweep
  assert report.main([workdir, '--out', str(tmp_path)]) == 0
  text = (tmp_path / 'report.md').read_text()
  for label in ('| Baseline |', '| PS-KD |', '| AI-KD |'):
    assert label in text
  # The superior (seed 1) does not join the Baseline row, which is the seed-0 student.
  rows = [l for l in text.splitlines() if l.startswith('| Baseline')]
  assert len(rows) == 1 and 'pending' not in rows[0]


@pytest.mark.slow
def test_smoke_sweep_of_every_method(data_dirs, tmp_path):
  """Every method x 2 seeds: finishes, and the report has one row per method, mean ± std."""
  one_epoch = smoke_config(data_dirs, num_epochs=1)  # every method x 2 seeds: keep it short
  out = sweep.run_sweep(one_epoch, str(tmp_path), list(PAPER_METHODS), [0, 1], log=_quiet([]))
  assert out.exit_code == 0 and len(out.trained) == 2 * (1 + len(PAPER_METHODS))
  assert report.main([str(tmp_path), '--out', str(tmp_path / 'report'), '--tsne']) == 0
  text = (tmp_path / 'report' / 'report.md').read_text()
  figures = sorted(p.name for p in (tmp_path / 'report').glob('*.png'))
  assert 'reliability_fashion_mnist_preact_resnet18.png' in figures, figures
  assert 'tsne_fashion_mnist_preact_resnet18_aikd.png' in figures, figures
  names = [report.METHOD_NAMES[m] for m in PAPER_METHODS]
  for name in names:
    rows = [l for l in text.splitlines() if l.startswith(f'| {name} |')]
    assert len(rows) == 1, (name, text)
    assert ' ± ' in rows[0] and '(n=2)' in rows[0]
  # The same sweep with --pack_seeds: every seed as in the unpacked sweep, the same rows.
  packed = sweep.run_sweep(one_epoch, str(tmp_path / 'packed'), list(PAPER_METHODS), [0, 1],
                           log=_quiet([]), pack_seeds=True)
  assert packed.exit_code == 0 and len(packed.trained) == 1 + len(PAPER_METHODS)  # packs
  for name, result in out.results.items():
    twin = packed.results[f'{name} (pack of 2)']
    assert abs(twin['top1_err'] - result['top1_err']) <= 2.5 + 1e-9, name  # one of 40
    assert abs(twin['nll'] - result['nll']) <= 1e-3 * result['nll'], name
  assert report.main([str(tmp_path / 'packed'), '--out', str(tmp_path / 'report2')]) == 0
  rows = lambda t: [l.split(' |')[0] for l in t.splitlines() if l.startswith('| ')]
  assert rows((tmp_path / 'report2' / 'report.md').read_text()) == rows(text)
  print(text)
