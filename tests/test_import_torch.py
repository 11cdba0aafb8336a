"""PyTorch weight import: parity with torch logits (stored fixtures) and one-line errors.

The fixtures come from `tests/fixtures/make_torch_fixtures.py` (run under a Python
with torch); these tests need no torch.
"""
import json
import os
import sys

import jax
import numpy as np
import pytest

from aikd_jax import models
from aikd_jax import checkpointing
from aikd_jax.errors import (ConfigError, DataError, NonFiniteLossError, UserError,
                             WorkdirError)
from aikd_jax.tools import import_torch
from tests import hostile

FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures')
ARCHS = ['preact_resnet18', 'preact_resnet50', 'cifar_densenet121',
         'resnet18', 'resnet50', 'densenet121']


def _fixture(arch):
  with np.load(os.path.join(FIXTURES, f'torch_{arch}.npz')) as f:
    meta = json.loads(str(f['meta']))
    state_dict = {k[len('sd:'):]: f[k] for k in f.files if k.startswith('sd:')}
    return meta, state_dict, f['input'], f['logits']


def _logits(arch, meta, variables, x):
  module = models.create(arch, meta['num_classes'], width=meta['width'])
  return np.asarray(jax.jit(lambda v, x: module.apply(v, x, train=False))(variables, x))


@pytest.mark.parametrize('arch', ARCHS)
def test_parity_with_torch(arch):
  meta, state_dict, x, expected = _fixture(arch)
  variables = import_torch.convert_state_dict(arch, meta['num_classes'], state_dict,
                                              width=meta['width'])
  assert {a.dtype for a in jax.tree.leaves(variables)} == {np.dtype('float32')}
  logits = _logits(arch, meta, variables, x)
  rel = np.abs(logits - expected).max() / np.abs(expected).max()
  assert rel < 1e-4, rel


def test_torch_key_rule():
  key = import_torch.torch_key
  assert key('resnet50', 'params', ('layer1_0', 'downsample_0', 'kernel')) == \
      'layer1.0.downsample.0.weight'
  assert key('resnet50', 'params', ('fc', 'kernel')) == 'fc.weight'
  assert key('resnet50', 'batch_stats', ('bn1', 'var')) == 'bn1.running_var'
  assert key('densenet121', 'params', ('features_denseblock2_denselayer3', 'norm1', 'scale')) \
      == 'features.denseblock2.denselayer3.norm1.weight'
  assert key('preact_resnet18', 'params', ('layer2_0', 'shortcut_0', 'kernel')) == \
      'layer2.0.shortcut.0.weight'
  assert key('preact_resnet50', 'params', ('layer2_0', 'shortcut_1', 'bias')) == \
      'layer2.0.shortcut.1.bias'


def _small_resnet18():
  meta, state_dict, _, _ = _fixture('resnet18')
  return meta, dict(state_dict)


def _raises_one_line(match, *args, **kw):
  with pytest.raises(UserError, match=match) as info:
    import_torch.convert_state_dict(*args, **kw)
  assert '\n' not in str(info.value)
  return str(info.value)


def test_unmapped_key():
  meta, sd = _small_resnet18()
  sd['layer5.0.conv1.weight'] = np.zeros((1, 1, 1, 1), np.float32)
  _raises_one_line(r"state_dict key 'layer5\.0\.conv1\.weight' does not map", 'resnet18',
                   meta['num_classes'], sd, width=meta['width'])


def test_wrong_arch_names_one_key():
  meta, sd = _small_resnet18()
  msg = _raises_one_line('does not map', 'densenet121', meta['num_classes'], sd,
                         width=meta['width'])
  assert 'more unmapped keys' in msg


def test_missing_key():
  meta, sd = _small_resnet18()
  del sd['layer3.1.bn2.running_var']
  _raises_one_line(r"batch_stats/layer3_1/bn2/var .* has no torch key "
                   r"'layer3\.1\.bn2\.running_var'", 'resnet18', meta['num_classes'], sd,
                   width=meta['width'])


def test_wrong_shape():
  meta, sd = _small_resnet18()
  n, w = meta['num_classes'], meta['width']
  msg = _raises_one_line(r"'fc\.weight' has shape \(10, 64\) .* expects \(11, 64\)",
                         'resnet18', n + 1, sd, width=w)
  assert 'fc/kernel' in msg


def test_unknown_arch():
  _raises_one_line('unknown architecture', 'resnet7', 10, {})


def test_prefix_and_num_batches_tracked():
  meta, sd, x, expected = _fixture('preact_resnet50')
  assert all(k.startswith('module.') for k in sd)
  assert any(k.endswith('num_batches_tracked') for k in sd)
  plain = {k[len('module.'):]: v for k, v in sd.items() if 'num_batches' not in k}
  a = import_torch.convert_state_dict('preact_resnet50', meta['num_classes'], sd,
                                      width=meta['width'])
  b = import_torch.convert_state_dict('preact_resnet50', meta['num_classes'], plain,
                                      width=meta['width'])
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_cli_without_torch(monkeypatch, capsys, tmp_path):
  monkeypatch.setitem(sys.modules, 'torch', None)  # `import torch` raises ImportError
  (tmp_path / 'model.pth').write_bytes(b'PK not empty')
  rc = import_torch.main(['--arch', 'resnet18', '--num-classes', '10',
                          '--input', str(tmp_path / 'model.pth'),
                          '--output', str(tmp_path / 'out')])
  assert rc == ConfigError.exit_code
  assert capsys.readouterr().err == f'error: {import_torch.TORCH_MISSING}\n'


def test_cli_writes_loadable_model(monkeypatch, capsys, tmp_path):
  meta, sd, x, expected = _fixture('resnet18')
  monkeypatch.setattr(import_torch, 'read_pth', lambda path: sd)
  out = str(tmp_path / 'out')
  rc = import_torch.main(['--arch', 'resnet18', '--num_classes', str(meta['num_classes']),
                          '--input', 'model.pth', '--output', out,
                          '--width', str(meta['width'])])
  assert rc == 0, capsys.readouterr().err
  module, variables = models.load(out)
  logits = np.asarray(module.apply(variables, x, train=False))
  assert np.abs(logits - expected).max() / np.abs(expected).max() < 1e-4


def test_cli_missing_flag_is_one_line(capsys, tmp_path):
  rc = import_torch.main(['--arch', 'resnet18', '--input', 'm.pth',
                          '--output', str(tmp_path / 'out')])
  err = capsys.readouterr().err
  assert rc == ConfigError.exit_code and err.count('\n') == 1, err
  assert err.startswith('error: bad flag: ') and '--num_classes must have a value' in err, err


def test_cli_error_is_one_line(monkeypatch, capsys, tmp_path):
  _, sd, _, _ = _fixture('resnet18')
  monkeypatch.setattr(import_torch, 'read_pth', lambda path: sd)
  rc = import_torch.main(['--arch', 'resnet18', '--num-classes', '10', '--input', 'm.pth',
                          '--output', str(tmp_path / 'out')])  # width 64: shapes do not fit
  err = capsys.readouterr().err
  assert rc == ConfigError.exit_code and err.count('\n') == 1 and 'has shape' in err
  assert not os.path.exists(tmp_path / 'out')


# --- Nothing existing is changed; every failure is one line we write --------------------

def _cli(monkeypatch, capsys, out, *extra, sd=None, num_classes=None, input_path='m.pth'):
  """Runs the CLI on the resnet18 fixture (read_pth faked unless sd is False)."""
  meta, fixture_sd, _, _ = _fixture('resnet18')
  if sd is not False:
    monkeypatch.setattr(import_torch, 'read_pth',
                        lambda path: fixture_sd if sd is None else sd)
  n = meta['num_classes'] if num_classes is None else num_classes
  rc = import_torch.main(['--arch', 'resnet18', '--num-classes', str(n), '--input',
                          str(input_path), '--output', str(out), '--width',
                          str(meta['width']), *extra])
  return rc, capsys.readouterr().err


def _one_line(err: str) -> str:
  assert err.count('\n') == 1 and err.startswith('error: '), err
  assert 'Traceback' not in err and '\x1b' not in err and 'weights_only' not in err, err
  return err


def test_existing_output_is_refused_then_overwrite_replaces(monkeypatch, capsys, tmp_path):
  out = tmp_path / 'out'
  assert _cli(monkeypatch, capsys, out)[0] == 0
  (out / 'notes.txt').write_text('mine')
  before = hostile.snapshot(out)
  rc, err = _cli(monkeypatch, capsys, out)
  assert rc == WorkdirError.exit_code
  assert f'--output {out} already holds files' in _one_line(err) and '--overwrite' in err
  assert hostile.snapshot(out) == before
  rc, err = _cli(monkeypatch, capsys, out, '--overwrite')  # notes.txt: not an exported model
  assert rc == WorkdirError.exit_code and 'holds files that are not an exported model' in err
  assert hostile.snapshot(out) == before
  (out / 'notes.txt').unlink()
  (out / 'variables' / 'stale').write_text('old')
  rc, err = _cli(monkeypatch, capsys, out, '--overwrite')
  assert rc == 0, err
  assert not (out / 'variables' / 'stale').exists()  # replaced as a whole
  assert models.load(str(out))[1]['params']
  assert sorted(os.listdir(tmp_path)) == ['out']  # no temporary folders left


def test_empty_output_folder_is_fine(monkeypatch, capsys, tmp_path):
  (tmp_path / 'out').mkdir()
  assert _cli(monkeypatch, capsys, tmp_path / 'out')[0] == 0
  assert models.load(str(tmp_path / 'out'))[1]['params']


def test_output_that_is_a_file_fails_at_once(monkeypatch, capsys, tmp_path):
  out = tmp_path / 'out'
  out.write_text('a file')
  rc, err = _cli(monkeypatch, capsys, out, '--overwrite')
  assert rc == WorkdirError.exit_code and 'is a file, not a folder' in _one_line(err)
  assert out.read_text() == 'a file'


def test_zero_classes(monkeypatch, capsys, tmp_path):
  rc, err = _cli(monkeypatch, capsys, tmp_path / 'out', num_classes=0)
  assert rc == ConfigError.exit_code
  assert '--num_classes must be at least 1, got 0' in _one_line(err)
  with pytest.raises(ConfigError, match='at least 1'):
    import_torch.convert_state_dict('resnet18', 0, {})


def test_nan_weights_are_refused(monkeypatch, capsys, tmp_path):
  _, sd, _, _ = _fixture('resnet18')
  sd = dict(sd)
  sd['layer2.0.conv1.weight'] = sd['layer2.0.conv1.weight'].copy()
  sd['layer2.0.conv1.weight'].flat[3] = np.nan
  (tmp_path / 'm.pth').write_bytes(b'x')
  rc, err = _cli(monkeypatch, capsys, tmp_path / 'out', sd=sd, input_path=tmp_path / 'm.pth')
  assert rc == DataError.exit_code
  assert "tensor 'layer2.0.conv1.weight' holds NaN or Inf" in _one_line(err)
  assert str(tmp_path / 'm.pth') in err
  assert not (tmp_path / 'out').exists()


def test_empty_and_missing_pth(monkeypatch, capsys, tmp_path):
  (tmp_path / 'empty.pth').write_bytes(b'')
  rc, err = _cli(monkeypatch, capsys, tmp_path / 'out', sd=False,
                 input_path=tmp_path / 'empty.pth')
  assert rc == DataError.exit_code and 'is empty (0 bytes)' in _one_line(err)
  rc, err = _cli(monkeypatch, capsys, tmp_path / 'out', sd=False,
                 input_path=tmp_path / 'nope.pth')
  assert rc == DataError.exit_code and 'nope.pth does not exist' in _one_line(err)
  assert not (tmp_path / 'out').exists()


def test_truncated_and_pickled_pth_get_our_own_line(monkeypatch, capsys, tmp_path):
  torch = pytest.importorskip('torch')
  _, sd, _, _ = _fixture('resnet18')
  good = tmp_path / 'good.pth'
  torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}, good)
  data = good.read_bytes()
  (tmp_path / 'cut.pth').write_bytes(data[:len(data) // 2])
  rc, err = _cli(monkeypatch, capsys, tmp_path / 'out', sd=False,
                 input_path=tmp_path / 'cut.pth')
  assert rc == DataError.exit_code
  assert f'cannot read {tmp_path / "cut.pth"}: ' in _one_line(err) and 'torch.save' in err
  torch.save({'model': torch.nn.Linear(2, 2)}, tmp_path / 'pickled.pth')  # a whole module
  rc, err = _cli(monkeypatch, capsys, tmp_path / 'out', sd=False,
                 input_path=tmp_path / 'pickled.pth')
  assert rc == DataError.exit_code
  assert 'holds Python objects besides tensors' in _one_line(err)
  assert not (tmp_path / 'out').exists()
  rc, err = _cli(monkeypatch, capsys, tmp_path / 'out', sd=False, input_path=good)
  assert rc == 0, err  # the corrected rerun


# --- checkpointing.save_model, the writer of every exported model -----------------------

def _variables():
  return {'params': {'dense': {'kernel': np.ones((2, 3), np.float32)}},
          'batch_stats': {'bn': {'mean': np.zeros((3,), np.float32)}}}


def _save(directory, variables=None, num_classes=3):
  checkpointing.save_model(str(directory), arch='resnet18', num_classes=num_classes,
                           options={}, variables=variables or _variables())


def test_save_model_crash_leaves_the_old_model(monkeypatch, tmp_path):
  target = tmp_path / 'model'
  _save(target)
  before = hostile.snapshot(target)

  def crash(path, obj):
    raise KeyboardInterrupt  # interrupted just before model.json

  monkeypatch.setattr(checkpointing, '_write_json', crash)
  with pytest.raises(KeyboardInterrupt):
    _save(target, num_classes=5)
  assert hostile.snapshot(target) == before
  assert checkpointing.read_model_meta(str(target))['num_classes'] == 3
  with pytest.raises(KeyboardInterrupt):
    _save(tmp_path / 'fresh')
  assert not (tmp_path / 'fresh').exists()  # never a loadable half-written model
  monkeypatch.undo()
  _save(tmp_path / 'fresh')  # the rerun cleans up after the interrupted one
  assert checkpointing.read_model_meta(str(tmp_path / 'fresh'))['num_classes'] == 3
  assert sorted(os.listdir(tmp_path)) == ['fresh', 'model']


def test_save_model_refuses_non_finite_variables(tmp_path):
  variables = _variables()
  variables['batch_stats']['bn']['mean'][1] = np.inf
  with pytest.raises(NonFiniteLossError, match='variable batch_stats/bn/mean holds NaN or Inf'):
    _save(tmp_path / 'model', variables)
  assert not os.listdir(tmp_path)
