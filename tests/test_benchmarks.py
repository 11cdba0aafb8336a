"""benchmarks/: the device suite's tables and projection, its reduced run, the pipeline rows,
the packed-seeds rows."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
import device_suite  # pylint: disable=g-import-not-at-top,wrong-import-position
import step_time  # pylint: disable=g-import-not-at-top,wrong-import-position
from aikd_jax import sharding  # pylint: disable=g-import-not-at-top,wrong-import-position

STEP_KEYS = {'arch', 'method', 'dtype', 'image_size', 'batch', 'width', 'num_classes', 'seeds',
             'status', 'step_ms', 'images_per_s', 'global_batch', 'images_per_s_per_device',
             'flops_per_step', 'mfu', 'compiling_in_background'}
PACK_KEYS = STEP_KEYS | {'images_per_s_per_seed', 'speedup'}


def _row(arch, method, step_ms, batch=128, size=32, dtype='float32', mfu=0.25, seeds=1,
         width=64):
  return {'arch': arch, 'method': method, 'dtype': dtype, 'image_size': size, 'batch': batch,
          'width': width, 'num_classes': 100, 'seeds': seeds, 'status': 'ok',
          'step_ms': step_ms, 'images_per_s': 1e3 * seeds * batch / step_ms,
          'global_batch': seeds * batch,
          'images_per_s_per_device': 1e3 * seeds * batch / step_ms, 'flops_per_step': 2e12,
          'mfu': mfu}


def _result(steps, pipeline='skipped (reduced suite)'):
  return {'mode': 'full', 'jax_version': '0.10.2', 'steps': steps, 'input_pipeline': pipeline,
          'device': {'kind': 'NVIDIA H200', 'count': 1, 'backend': 'gpu', 'peak_flops': {}}}


def test_full_suite_covers_the_paper_grid():
  specs = device_suite.step_specs('full')
  assert len(specs) == 6 * 2 * 2
  assert {(s.arch, s.image_size, s.batch) for s in specs} == {
      ('preact_resnet18', 32, 128), ('preact_resnet50', 32, 128),
      ('cifar_densenet121', 32, 128), ('resnet18', 224, 32), ('resnet50', 224, 32),
      ('densenet121', 224, 32)}
  assert {s.width for s in specs if 'densenet' in s.arch} == {32}  # growth rate
  assert {(s.method, s.dtype) for s in specs} == {
      (m, d) for m in ('baseline', 'aikd') for d in ('float32', 'bfloat16')}


def test_projection_arithmetic():
  rows = [_row('preact_resnet18', 'baseline', 100.0),
          dict(_row('preact_resnet18', 'aikd', 150.0, mfu=0.4), flops_per_step=3e12),
          _row('resnet50', 'baseline', 40.0, batch=32, size=224)]  # no aikd: not projected
  proj = {p['dataset']: p for p in device_suite.projection(rows)}
  assert set(proj) == {'cifar100', 'tiny_imagenet'}
  c = proj['cifar100']
  assert c['steps_per_epoch'] == 50_000 // 128 == 390
  assert c['superior_h'] == pytest.approx(300 * 390 * 0.100 / 3600)  # 3.25 h
  assert c['student_h'] == pytest.approx(300 * 390 * 0.150 / 3600)
  assert c['total_h'] == pytest.approx(c['superior_h'] + c['student_h'])
  assert proj['tiny_imagenet']['steps_per_epoch'] == 100_000 // 128


def test_markdown_tables():
  rows = [_row('preact_resnet18', 'baseline', 100.0),
          dict(_row('preact_resnet18', 'aikd', 150.0, mfu=0.4), flops_per_step=3e12),
          dict(_row('densenet121', 'aikd', 1.0), status='skipped (budget)')]
  pipe = [{'dataset': 'px32', 'px': 32, 'mode': 'train', 'threads': 1, 'images_per_s': 7651.2,
           'ms_per_batch': 16.7}]
  text = device_suite.markdown(dict(_result(rows, pipe),
                                    projection=device_suite.projection(rows)))
  assert '1 x NVIDIA H200 (gpu)' in text.splitlines()[0]
  assert ('| `preact_resnet18` | 32 px, 128 | float32 | 100.0 | 150.0 | 1.50 | 853.3 | 3000.0 '
          '| 40.0 |') in text  # GFLOP and MFU of the aikd row
  assert '`densenet121` aikd float32: skipped (budget)' in text
  assert '| 32 px | train | 1 | 7,651 |' in text
  assert '| cifar100 | `preact_resnet18` | float32 | 128 | 390 | 3.2 | 4.9 | 8.1 |' in text


def test_pack_suite_covers_widths_methods_and_seeds():
  full = device_suite.pack_specs('full')
  assert {(s.width, s.method, s.seeds) for s in full} == {
      (w, m, n) for w in (64, 16) for m in ('baseline', 'aikd') for n in (1, 2, 3)}
  assert len(full) == 12
  assert {(s.arch, s.image_size, s.batch, s.dtype) for s in full} == {
      ('preact_resnet18', 32, 128, 'float32')}
  reduced = device_suite.pack_specs('reduced')
  assert {(s.width, s.batch, s.seeds) for s in reduced} == {(8, 16, n) for n in (1, 2, 3)}


def test_pack_speedup_arithmetic_and_table():
  rows = [_row('preact_resnet18', 'aikd', 100.0, width=16),
          _row('preact_resnet18', 'aikd', 150.0, width=16, seeds=2),
          _row('preact_resnet18', 'aikd', 400.0, width=16, seeds=3),
          _row('preact_resnet18', 'baseline', 90.0, width=16, seeds=2),  # no S = 1 row
          dict(_row('preact_resnet18', 'aikd', 1.0, seeds=3), status='skipped (budget)')]
  packs = device_suite.pack_gains(rows)
  assert [p['speedup'] for p in packs[:4]] == pytest.approx([1.0, 200 / 150, 300 / 400, None])
  assert packs[1]['images_per_s'] == pytest.approx(2 * 128 / 0.150)  # both seeds' images
  assert packs[1]['images_per_s_per_seed'] == pytest.approx(128 / 0.150)
  assert 'speedup' not in packs[4]
  text = device_suite.markdown(dict(_result([]), packs=packs, projection=[]))
  assert ('| `preact_resnet18` | 16 | 32 px, 128 | float32 | aikd | 2 | 150.0 | 1706.7 | 853.3 '
          '| 1.33 |') in text
  assert '| aikd | 3 | 400.0 | 960.0 | 320.0 | 0.75 |' in text
  assert '| baseline | 2 | 90.0 | 2844.4 | 1422.2 | n/a |' in text
  assert '`preact_resnet18` width 64 aikd x3 seeds: skipped (budget)' in text


def _key_data(tree):
  return jax.tree.map(lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(
      x.dtype, jax.dtypes.prng_key) else x, tree)


@pytest.mark.slow
def test_packed_step_equals_each_seeds_unpacked_step():
  bench = step_time.StepBench(step_time.StepSpec(
      'preact_resnet18', 'aikd', batch=8, image_size=8, num_classes=10, width=4, seeds=2),
      sharding.make_mesh())
  arguments = bench.arguments()
  per_seed = bench.pack.unstack(arguments)  # copies: the packed step donates its state
  packed = bench.pack.unstack(bench.step(*arguments))
  solo = jax.jit(lambda state, batch, superior, seed: bench.make_step(seed)(
      state, batch, superior))
  close = lambda atol: lambda a, b: np.testing.assert_allclose(
      np.asarray(a), np.asarray(b), rtol=1e-4, atol=atol)
  for k, (state, batch, superior) in enumerate(per_seed):
    (got_state, got), (want_state, want) = _key_data(packed[k]), _key_data(
        solo(state, batch, superior, k))
    jax.tree.map(close(1e-5), (got_state.student, got), (want_state.student, want))
    # The critic's first Adam update is about lr * sign(gradient): float noise in a
    # near-zero gradient can flip it and move a weight by 2 x critic_lr (1e-4).
    jax.tree.map(close(2.5e-4), got_state.method, want_state.method)
  losses = [float(metrics['loss']) for _, metrics in packed]
  assert losses[0] != pytest.approx(losses[1], rel=1e-3)  # each seed its own init and data


@pytest.mark.slow
def test_step_time_prints_the_pack_rows():
  proc = subprocess.run(
      [sys.executable, 'benchmarks/step_time.py', '--pack_seeds=2', '--pack_widths=4',
       '--methods=baseline', '--batch=8', '--image_size=8', '--num_classes=10',
       '--warmup=0', '--repeats=1'],
      cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS='cpu'), check=True, capture_output=True,
      text=True, timeout=600)
  lines = proc.stdout.splitlines()
  assert lines[0].startswith('preact_resnet18, 8 px, batch 8 per seed, 10 classes, float32')
  assert lines[2].split() == ['width', 'method', 'seeds', 'ms/step', 'images/s',
                              'images/s/seed', 'GFLOP', 'speed-up']
  rows = [l.split() for l in lines[3:]]
  assert [r[:3] for r in rows] == [['4', 'baseline', '1'], ['4', 'baseline', '2']]
  (solo_ms, solo_total, solo_each, _, solo_up), (ms, total, each, _, up) = (
      [float(x) for x in r[3:]] for r in rows)
  assert solo_up == 1.0 and solo_total == solo_each
  assert total == pytest.approx(2 * each, abs=0.2) and each == pytest.approx(8e3 / ms, rel=1e-2)
  assert up == pytest.approx(2 * solo_ms / ms, abs=0.02)


@pytest.mark.slow
def test_reduced_suite_runs_on_cpu(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu', OUT=str(tmp_path), PYTHON=sys.executable)
  subprocess.run(['bash', 'benchmarks/device_suite.sh', '--pack_budget_s=500'], cwd=ROOT,
                 env=env, check=True, capture_output=True, text=True, timeout=900)
  with open(tmp_path / 'results.json') as f:
    result = json.load(f)
  assert result['mode'] == 'reduced' and result['device']['backend'] == 'cpu'
  assert [(r['arch'], r['method']) for r in result['steps']] == [
      ('preact_resnet18', 'baseline'), ('preact_resnet18', 'aikd')]
  for r in result['steps']:
    assert set(r) == STEP_KEYS and r['status'] == 'ok' and r['mfu'] is None
    assert r['step_ms'] > 0 and r['flops_per_step'] > 0
  # AI-KD runs two more forward passes and the critic: more FLOPs, whatever the timing.
  assert result['steps'][1]['flops_per_step'] > 1.3 * result['steps'][0]['flops_per_step']
  assert {p['dataset'] for p in result['projection']} == {'cifar100', 'tiny_imagenet'}
  assert result['input_pipeline'] == 'skipped (reduced suite)'
  packs = result['packs']
  assert [(p['width'], p['method'], p['seeds']) for p in packs] == [
      (8, m, n) for m in ('baseline', 'aikd') for n in (1, 2, 3)]
  for p in packs:
    solo = packs[3 * (p['method'] == 'aikd')]
    assert set(p) == PACK_KEYS and p['status'] == 'ok' and p['global_batch'] == 16 * p['seeds']
    assert p['speedup'] == pytest.approx(p['seeds'] * solo['step_ms'] / p['step_ms'])
    # Every seed runs the whole step: XLA counts S times the FLOPs of one.
    assert p['flops_per_step'] == pytest.approx(p['seeds'] * solo['flops_per_step'], rel=0.02)
  text = (tmp_path / 'results.md').read_text()
  assert len([l for l in text.splitlines() if l.startswith('| `preact_resnet18` | 8 |')]) == 6
  table = [l for l in text.splitlines() if l.startswith('| `preact_resnet18` | 32 px, 16 |')]
  assert len(table) == 1 and table[0].count('|') == 10
  assert len([l for l in text.splitlines() if l.startswith('| cifar100 |')]) == 1


@pytest.mark.slow
def test_input_pipeline_rows(tmp_path):
  rows = device_suite.input_pipeline_rows(
      str(tmp_path), timeout_s=300,
      args=('--num_images=64,8', '--batch=16,4', '--min_seconds=0', '--batches=1',
            '--threads=1'))
  assert isinstance(rows, list), rows
  assert {(r['px'], r['mode']) for r in rows} == {(32, 'train'), (224, 'train'), (224, 'eval')}
  assert all(r['images_per_s'] > 0 and r['threads'] == 1 for r in rows)
