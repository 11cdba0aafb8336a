"""Architecture tests: shapes, parameter counts, features, BatchNorm modes, bf16, export.

Shape, count and dtype checks run under `jax.eval_shape` (trace only, no compile);
the compute checks use narrow widths and variables filled from numpy (a jitted
`init` costs 10-20 s of XLA compile per model on CPU).
"""
import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aikd_jax import checkpointing
from aikd_jax import models

# arch -> (native side, stage (side, channels) at full width, {classes: param count}).
SPECS = {
    'preact_resnet18': (32, [(32, 64), (16, 128), (8, 256), (4, 512)],
                        {100: 11_217_444, 200: 11_268_744}),
    'preact_resnet50': (32, [(32, 256), (16, 512), (8, 1024), (4, 2048)],
                        {100: 23_705_252, 200: 23_910_152}),
    'cifar_densenet121': (32, [(32, 256), (16, 512), (8, 1024), (4, 1024)],
                          {100: 7_048_548}),
    'resnet18': (224, [(56, 64), (28, 128), (14, 256), (7, 512)],
                 {200: 11_279_112, 1000: 11_689_512, 120: 11_238_072}),
    'resnet50': (224, [(56, 256), (28, 512), (14, 1024), (7, 2048)],
                 {200: 23_917_832, 1000: 25_557_032, 100: 23_712_932}),
    'densenet121': (224, [(56, 256), (28, 512), (14, 1024), (7, 1024)],
                    {200: 7_158_856, 1000: 7_978_856}),
}
ARCHS = list(SPECS)
# Narrow widths for the compute tests (ResNets: stem width; DenseNets: growth rate).
NARROW = {'preact_resnet18': 8, 'preact_resnet50': 4, 'cifar_densenet121': 4,
          'resnet18': 8, 'resnet50': 4, 'densenet121': 4}
NUM_CLASSES = 10


def _abstract_init(module, side, batch=2):
  x = jnp.zeros((batch, side, side, 3), jnp.float32)
  return jax.eval_shape(lambda: module.init(jax.random.key(0), x, train=False))


def _num_params(variables):
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables['params']))


def _fill(abstract, seed=0):
  """Concrete variables of the abstract shapes: He-scaled kernels, random BN state."""
  rng = np.random.default_rng(seed)

  def leaf(path, s):
    name = path[-1].key
    if name == 'kernel':
      fan_in = int(np.prod(s.shape[:-1]))
      return rng.normal(0, np.sqrt(2.0 / fan_in), s.shape).astype(np.float32)
    if name in ('scale', 'var'):
      return rng.uniform(0.5, 1.5, s.shape).astype(np.float32)
    return rng.normal(0, 0.1, s.shape).astype(np.float32)  # bias, mean

  return jax.tree_util.tree_map_with_path(leaf, flax.core.unfreeze(abstract))


def _narrow(arch):
  module = models.create(arch, NUM_CLASSES, width=NARROW[arch])
  side = SPECS[arch][0] if SPECS[arch][0] == 32 else 64
  return module, _fill(_abstract_init(module, side)), side


@functools.cache
def _compiled(arch):
  """A jitted (eval logits, eval stats, train logits, train stats) for the narrow model."""
  module = models.create(arch, NUM_CLASSES, width=NARROW[arch])

  def run(variables, x):
    eval_logits, eval_state = module.apply(variables, x, train=False, mutable=['batch_stats'])
    train_logits, train_state = module.apply(variables, x, train=True, mutable=['batch_stats'])
    return eval_logits, eval_state['batch_stats'], train_logits, train_state['batch_stats']

  return jax.jit(run)


def _input(side, seed=1):
  return np.random.default_rng(seed).normal(size=(2, side, side, 3)).astype(np.float32)


def test_registry_names():
  assert set(ARCHS) <= set(models.names())


@pytest.mark.parametrize('arch', ARCHS)
def test_param_counts(arch):
  side, _, counts = SPECS[arch]
  for num_classes, expected in counts.items():
    assert _num_params(_abstract_init(models.create(arch, num_classes), side)) == expected


@pytest.mark.parametrize('arch', ARCHS)
def test_shapes_and_features(arch):
  side, stages, _ = SPECS[arch]
  module = models.create(arch, 100)
  variables = _abstract_init(module, side)
  x = jax.ShapeDtypeStruct((2, side, side, 3), jnp.float32)
  logits = jax.eval_shape(lambda v, x: module.apply(v, x, train=False), variables, x)
  assert isinstance(logits, jax.ShapeDtypeStruct)
  assert logits.shape == (2, 100) and logits.dtype == jnp.float32
  out, feats = jax.eval_shape(lambda v, x: module.apply(v, x, train=False, features=True),
                              variables, x)
  assert out.shape == (2, 100)
  assert [f.shape for f in feats['stages']] == [(2, s, s, c) for s, c in stages]
  s, c = stages[-1]
  assert feats['prepool'].shape == (2, s, s, c)


@pytest.mark.parametrize('arch', ARCHS)
def test_bfloat16(arch):
  side, stages, _ = SPECS[arch]
  module = models.create(arch, 100, dtype='bfloat16')
  variables = _abstract_init(module, side)
  assert {p.dtype for p in jax.tree.leaves(variables['params'])} == {jnp.dtype('float32')}
  assert {p.dtype for p in jax.tree.leaves(variables['batch_stats'])} == {jnp.dtype('float32')}
  x = jax.ShapeDtypeStruct((2, side, side, 3), jnp.float32)

  def run(v, x):
    return module.apply(v, x, train=True, features=True, capture_intermediates=True,
                        mutable=['batch_stats', 'intermediates'])

  (logits, feats), state = jax.eval_shape(run, variables, x)
  assert logits.dtype == jnp.float32
  assert {f.dtype for f in feats['stages'] + [feats['prepool']]} == {jnp.dtype('bfloat16')}
  assert {p.dtype for p in jax.tree.leaves(state['batch_stats'])} == {jnp.dtype('float32')}
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(state['intermediates']))
  convs = [v for k, v in flat.items() if 'conv' in '/'.join(k).lower()]
  assert convs and {a.dtype for a in jax.tree.leaves(convs)} == {jnp.dtype('bfloat16')}


@pytest.mark.parametrize('arch', ARCHS)
def test_batchnorm_modes(arch):
  _, variables, side = _narrow(arch)
  eval_logits, eval_stats, train_logits, train_stats = _compiled(arch)(variables, _input(side))
  assert eval_logits.shape == train_logits.shape == (2, NUM_CLASSES)
  assert np.all(np.isfinite(eval_logits)) and np.all(np.isfinite(train_logits))
  assert not np.allclose(eval_logits, train_logits, atol=1e-4)
  old = jax.tree.leaves(variables['batch_stats'])
  for a, b in zip(old, jax.tree.leaves(eval_stats), strict=True):
    np.testing.assert_array_equal(a, b)
  changed = [not np.allclose(a, b) for a, b in zip(old, jax.tree.leaves(train_stats), strict=True)]
  assert all(changed)


@pytest.mark.parametrize('arch', ARCHS)
def test_export_round_trip(arch, tmp_path):
  _, variables, side = _narrow(arch)
  x = _input(side)
  checkpointing.save_model(str(tmp_path), arch=arch, num_classes=NUM_CLASSES,
                           options={'width': NARROW[arch]}, variables=variables)
  module, loaded = models.load(str(tmp_path))
  assert module == models.create(arch, NUM_CLASSES, width=NARROW[arch])
  expected = _compiled(arch)(variables, x)[0]
  np.testing.assert_array_equal(_compiled(arch)(loaded, x)[0], expected)


def test_batchnorm_running_statistics_are_torchs_but_with_the_biased_variance():
  """The departure docs/methods.md states: running mean as torch (momentum 0.1), running
  variance updated with the biased batch variance (/ n), where torch uses / (n - 1)."""
  from aikd_jax.models import common  # pylint: disable=g-import-not-at-top
  x = np.random.default_rng(0).normal(2.0, 3.0, (4, 3, 3, 5)).astype(np.float32)
  bn = common.batch_norm(train=True)
  variables = bn.init(jax.random.key(0), x)
  _, updated = bn.apply(variables, x, mutable=['batch_stats'])
  stats = updated['batch_stats']
  n = x.size // x.shape[-1]  # 36 values per channel
  flat = x.reshape(n, 5)
  np.testing.assert_allclose(stats['mean'], 0.9 * 0 + 0.1 * flat.mean(0), rtol=1e-5)
  biased, unbiased = flat.var(0), flat.var(0, ddof=1)
  np.testing.assert_allclose(stats['var'], 0.9 * 1 + 0.1 * biased, rtol=1e-5)
  torch_var = 0.9 * 1 + 0.1 * unbiased  # what torch.nn.BatchNorm2d would hold
  assert np.all(np.abs(stats['var'] - torch_var) > 1e-3)  # not torch's: the departure
