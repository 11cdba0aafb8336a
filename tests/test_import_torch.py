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
from aikd_jax.errors import UserError
from aikd_jax.tools import import_torch

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
  rc = import_torch.main(['--arch', 'resnet18', '--num-classes', '10',
                          '--input', str(tmp_path / 'model.pth'),
                          '--output', str(tmp_path / 'out')])
  assert rc == 1
  assert capsys.readouterr().err == import_torch.TORCH_MISSING + '\n'


def test_cli_writes_loadable_model(monkeypatch, capsys, tmp_path):
  meta, sd, x, expected = _fixture('resnet18')
  monkeypatch.setattr(import_torch, 'read_pth', lambda path: sd)
  out = str(tmp_path / 'out')
  rc = import_torch.main(['--arch', 'resnet18', '--num-classes', str(meta['num_classes']),
                          '--input', 'model.pth', '--output', out,
                          '--width', str(meta['width'])])
  assert rc == 0, capsys.readouterr().err
  module, variables = models.load(out)
  logits = np.asarray(module.apply(variables, x, train=False))
  assert np.abs(logits - expected).max() / np.abs(expected).max() < 1e-4


def test_cli_error_is_one_line(monkeypatch, capsys, tmp_path):
  _, sd, _, _ = _fixture('resnet18')
  monkeypatch.setattr(import_torch, 'read_pth', lambda path: sd)
  rc = import_torch.main(['--arch', 'resnet18', '--num-classes', '10', '--input', 'm.pth',
                          '--output', str(tmp_path / 'out')])  # width 64: shapes do not fit
  err = capsys.readouterr().err
  assert rc == 1 and err.count('\n') == 1 and 'has shape' in err
  assert not os.path.exists(tmp_path / 'out')
