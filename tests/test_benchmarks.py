"""benchmarks/: the device suite's tables and projection, its reduced run, the pipeline rows."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
import device_suite  # pylint: disable=g-import-not-at-top,wrong-import-position

STEP_KEYS = {'arch', 'method', 'dtype', 'image_size', 'batch', 'width', 'num_classes', 'status',
             'step_ms', 'images_per_s', 'global_batch', 'images_per_s_per_device',
             'flops_per_step', 'mfu', 'compiling_in_background'}


def _row(arch, method, step_ms, batch=128, size=32, dtype='float32', mfu=0.25):
  return {'arch': arch, 'method': method, 'dtype': dtype, 'image_size': size, 'batch': batch,
          'width': 64, 'num_classes': 100, 'status': 'ok', 'step_ms': step_ms,
          'images_per_s': 1e3 * batch / step_ms, 'global_batch': batch,
          'images_per_s_per_device': 1e3 * batch / step_ms, 'flops_per_step': 2e12, 'mfu': mfu}


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


@pytest.mark.slow
def test_reduced_suite_runs_on_cpu(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu', OUT=str(tmp_path), PYTHON=sys.executable)
  subprocess.run(['bash', 'benchmarks/device_suite.sh'], cwd=ROOT, env=env, check=True,
                 capture_output=True, text=True, timeout=600)
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
  text = (tmp_path / 'results.md').read_text()
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
