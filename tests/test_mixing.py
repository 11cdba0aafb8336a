"""Cutout, Mixup, CutMix and mixed targets (docs/methods.md)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from aikd_jax import config as config_lib
from aikd_jax import mixing


def _augment_config(cutout=0, mixup=0.0, cutmix=0.0, cutmix_prob=1.0):
  return config_lib.AugmentConfig(cutout=cutout, mixup=mixup, cutmix=cutmix,
                                  cutmix_prob=cutmix_prob)


def _constant_images(batch, height=16, width=16, channels=3):
  """Example i is filled with the value i + 1 (so sources can be told apart)."""
  values = jnp.arange(1, batch + 1, dtype=jnp.float32)
  return jnp.broadcast_to(values[:, None, None, None], (batch, height, width, channels))


def _zero_box(image_hw):
  """(count, rows, cols) of the zeros of one [H, W] image, and whether they fill their bbox."""
  ys, xs = np.nonzero(np.asarray(image_hw) == 0)
  if ys.size == 0:
    return 0, 0, 0
  rows, cols = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
  assert ys.size == rows * cols, 'zeros are not one filled rectangle'
  return ys.size, rows, cols


def _assert_permutation(perm, n):
  np.testing.assert_array_equal(np.sort(np.asarray(perm)), np.arange(n))


# ----------------------------------------------------------------------------- Cutout


def test_cutout_at_inside_zeroes_one_square_in_every_channel():
  images = jnp.ones((2, 16, 16, 3))
  out = mixing.cutout_at(images, jnp.array([8, 5]), jnp.array([8, 10]), 6)
  for i, (cy, cx) in enumerate([(8, 8), (5, 10)]):
    assert _zero_box(out[i, :, :, 0]) == (36, 6, 6)
    np.testing.assert_array_equal(out[i, :, :, 0], out[i, :, :, 2])  # all channels
    # Rows [cy - 3, cy + 3), as in the official code.
    assert float(out[i, cy - 3, cx - 3, 0]) == 0 and float(out[i, cy + 2, cx + 2, 0]) == 0
    assert float(out[i, cy + 3, cx, 0]) == 1 and float(out[i, cy - 4, cx, 0]) == 1


def test_cutout_at_clips_at_borders():
  images = jnp.ones((4, 16, 16, 1))
  cy = jnp.array([0, 15, 0, 8])
  cx = jnp.array([0, 15, 8, 0])
  out = mixing.cutout_at(images, cy, cx, 8)
  assert _zero_box(out[0, ..., 0]) == (16, 4, 4)  # top-left corner: (size/2)^2
  assert _zero_box(out[1, ..., 0]) == (25, 5, 5)  # bottom-right: rows [11, 16)
  assert _zero_box(out[2, ..., 0]) == (32, 4, 8)  # top edge
  assert _zero_box(out[3, ..., 0]) == (32, 8, 4)  # left edge
  assert float(out[0, 0, 0, 0]) == 0 and float(out[1, 15, 15, 0]) == 0


def test_cutout_random_holes_are_clipped_squares_at_varied_places():
  images = jnp.ones((64, 16, 16, 1))
  out = jax.jit(mixing.cutout, static_argnums=2)(jax.random.key(0), images, 6)
  corners = set()
  for i in range(64):
    count, rows, cols = _zero_box(out[i, ..., 0])
    assert 0 < count <= 36 and rows <= 6 and cols <= 6
    ys, xs = np.nonzero(np.asarray(out[i, ..., 0]) == 0)
    corners.add((ys.min(), xs.min()))
  assert len(corners) > 20  # per-example centres, not one for the batch
  out2 = mixing.cutout(jax.random.key(0), images, 6)
  np.testing.assert_array_equal(out, out2)  # deterministic in the key


# ----------------------------------------------------------------------------- Mixup

# One compiled function per augmentation, shared by the tests (compiling Beta is slow).
_mixup_many = jax.jit(jax.vmap(lambda k, x: mixing.mixup(k, x, 1.0), in_axes=(0, None)))
_cutmix_many = jax.jit(jax.vmap(lambda k, x, p: mixing.cutmix(k, x, 1.0, p),
                                in_axes=(0, None, None)))
_NUM_KEYS = 256


def test_mixup_matches_formula_and_lam_looks_uniform_for_alpha_one():
  x = jax.random.normal(jax.random.key(1), (8, 4, 4, 3))
  keys = jax.random.split(jax.random.key(2), 2048)
  outs, perms, lams = (np.asarray(v) for v in _mixup_many(keys, x))
  x = np.asarray(x)
  for out, perm, lam in list(zip(outs, perms, lams))[:16]:
    _assert_permutation(perm, 8)
    np.testing.assert_allclose(out, lam * x + (1 - lam) * x[perm], rtol=1e-5, atol=1e-6)
  assert len({tuple(p) for p in perms[:16]}) > 1
  assert lams.shape == (2048,) and lams.min() >= 0 and lams.max() <= 1
  assert abs(lams.mean() - 0.5) < 0.02
  assert abs(lams.var() - 1 / 12) < 0.01
  assert abs(np.mean(lams < 0.25) - 0.25) < 0.03


# ----------------------------------------------------------------------------- CutMix


def test_cutmix_box_hand_values():
  box = lambda lam, cy, cx: tuple(int(v) for v in mixing.cutmix_box(32, 32, lam, cy, cx))
  # lam = 0.75: cut = int(32 * 0.5) = 16, half = 8.
  assert box(0.75, 16, 16) == (8, 24, 8, 24)
  assert box(0.75, 0, 0) == (0, 8, 0, 8)  # clipped at the top-left corner
  assert box(0.75, 31, 4) == (23, 32, 0, 12)  # clipped bottom and left
  assert box(1.0, 10, 10) == (10, 10, 10, 10)  # empty box
  # Non-square: cut_h = int(16 * 0.5) = 8, cut_w = int(32 * 0.5) = 16.
  y1, y2, x1, x2 = (int(v) for v in mixing.cutmix_box(16, 32, 0.75, 8, 16))
  assert (y1, y2, x1, x2) == (4, 12, 8, 24)


def test_paste_box_lam_from_clipped_area():
  x = _constant_images(4, 32, 32, 1)
  perm = jnp.array([1, 2, 3, 0])
  out, lam = mixing.paste_box(x, perm, 0, 8, 0, 8)
  np.testing.assert_allclose(lam, 1 - 64 / 1024)
  np.testing.assert_array_equal(out[0, :8, :8, 0], 2.0)
  assert int(jnp.sum(out[0, ..., 0] == 2.0)) == 64
  assert int(jnp.sum(out[0, ..., 0] == 1.0)) == 1024 - 64


def test_cutmix_lam_equals_fraction_of_pasted_pixels_and_boxes_clip():
  b, h, w = 12, 16, 16
  x = _constant_images(b, h, w, 1)
  keys = jax.random.split(jax.random.key(3), _NUM_KEYS)
  outs, perms, lams = (np.asarray(v) for v in _cutmix_many(keys, x, 1.0))
  assert np.all((lams >= 0) & (lams <= 1))
  boxes = []
  own_value = np.arange(1, b + 1)[:, None, None]
  for out, perm, lam in zip(outs, perms, lams):
    _assert_permutation(perm, b)
    moved = perm != np.arange(b)
    own = out[moved, ..., 0] == own_value[moved]
    other = out[moved, ..., 0] == (perm[moved] + 1)[:, None, None]
    assert np.all(own | other)
    assert np.all(other == other[0])  # one box for the whole batch
    assert abs(lam - (1 - other[0].sum() / (h * w))) < 1e-6
    if other[0].any():
      assert _zero_box(~other[0])[0] == other[0].sum()  # a filled rectangle
      ys, xs = np.nonzero(other[0])
      boxes.append((ys.min(), ys.max() + 1, xs.min(), xs.max() + 1))
  # Centres are uniform over the whole image: boxes appear near every border.
  y1, y2, x1, x2 = np.array(boxes).T
  assert (y1 >= 12).any() and (x1 >= 12).any() and (y2 <= 4).any() and (x2 <= 4).any()
  # Unclipped areas are (2 * (cut // 2))^2, squares of even numbers; clipped boxes
  # (uniform centres reach the border) give other areas.
  areas = np.rint((1 - lams) * h * w).astype(int)
  assert any(a not in {(2 * k)**2 for k in range(9)} for a in areas)


def test_cutmix_prob_zero_leaves_batch_unchanged():
  x = _constant_images(12, 16, 16, 1)
  keys = jax.random.split(jax.random.key(4), _NUM_KEYS)
  outs, perms, lams = _cutmix_many(keys, x, 0.0)
  np.testing.assert_array_equal(outs, np.broadcast_to(x, outs.shape))
  np.testing.assert_array_equal(perms, np.broadcast_to(np.arange(12), perms.shape))
  assert np.all(np.asarray(lams) == 1.0)


def test_cutmix_prob_half_applies_about_half_the_time():
  x = _constant_images(12, 16, 16, 1)  # a drawn perm is the identity w.p. 1/12!
  keys = jax.random.split(jax.random.key(5), _NUM_KEYS)
  outs, perms, lams = (np.asarray(v) for v in _cutmix_many(keys, x, 0.5))
  identity = np.all(perms == np.arange(12), axis=1)
  assert abs(identity.mean() - 0.5) < 0.1
  assert np.all(lams[identity] == 1.0)
  np.testing.assert_array_equal(outs[identity], np.broadcast_to(x, outs[identity].shape))


# ----------------------------------------------------------------------------- targets


def test_mixed_targets_rows():
  labels = jnp.array([0, 1, 2, 2])
  perm = jnp.array([1, 0, 3, 2])
  lam = jnp.float32(0.3)
  t = np.asarray(mixing.mixed_targets(labels, 5, perm, lam))
  np.testing.assert_allclose(t.sum(1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(t[0], [0.3, 0.7, 0, 0, 0], rtol=1e-6)
  np.testing.assert_allclose(t[1], [0.7, 0.3, 0, 0, 0], rtol=1e-6)
  np.testing.assert_allclose(t[2], [0, 0, 1, 0, 0], rtol=1e-6)  # y_a == y_b
  np.testing.assert_array_equal(mixing.mixed_targets(labels, 5), np.eye(5)[[0, 1, 2, 2]])
  with pytest.raises(ValueError):
    mixing.mixed_targets(labels, 5, perm=perm)


def test_soft_ce_on_mixed_targets_is_lam_weighted_ce():
  logits = jax.random.normal(jax.random.key(6), (6, 7))
  labels = jnp.array([0, 3, 6, 2, 2, 5])
  perm = jnp.array([5, 4, 3, 2, 1, 0])
  lam = jnp.float32(0.62)
  soft = optax.softmax_cross_entropy(logits, mixing.mixed_targets(labels, 7, perm, lam))
  ce = optax.softmax_cross_entropy_with_integer_labels
  expected = lam * ce(logits, labels) + (1 - lam) * ce(logits, labels[perm])
  np.testing.assert_allclose(soft, expected, rtol=1e-5)


# ----------------------------------------------------------------------------- apply


def _batch(b=8, hw=8):
  x = jax.random.normal(jax.random.key(8), (b, hw, hw, 3))
  return {'image': x, 'label': jnp.arange(b) % 5, 'id': jnp.arange(b)}


def test_apply_all_off_is_identity_and_traces_no_random_ops():
  config = _augment_config()
  batch = _batch()
  out, targets = mixing.apply(jax.random.key(0), batch, config, 5)
  assert out is batch
  np.testing.assert_array_equal(targets, jax.nn.one_hot(batch['label'], 5))
  jaxpr = str(jax.make_jaxpr(lambda k, b: mixing.apply(k, b, config, 5))(
      jax.random.key(0), batch))
  assert 'random' not in jaxpr and 'threefry' not in jaxpr


@pytest.mark.parametrize('augment', [dict(mixup=1.0), dict(cutmix=1.0), dict(cutout=4)])
def test_apply_transforms_a_pair_half_like_its_anchors(augment):
  """CS-KD: the pair images get the same holes, permutation, lambda and box."""
  batch = _batch()
  batch['pair_image'] = batch['image'] * 2.0 + 1.0  # an affine copy of the anchors
  out, _ = mixing.apply(jax.random.key(4), batch, _augment_config(**augment), 5)
  assert ('mix_perm' in out) == ('cutout' not in augment)
  if 'mix_perm' in out:
    assert 0 < out['mix_lam'] < 1
  assert not np.allclose(out['image'], batch['image'])  # the anchors were transformed
  # Mixing and cutout commute with x -> 2x + 1 except where a hole sets pixels to 0.
  holes = out['image'] == 0
  assert bool(holes.any()) == ('cutout' in augment)
  expected = jnp.where(holes, 0.0, out['image'] * 2.0 + 1.0)
  np.testing.assert_allclose(out['pair_image'], expected, rtol=1e-5, atol=1e-5)


def test_apply_cutout_keeps_labels_one_hot():
  batch = _batch()
  step = jax.jit(functools.partial(mixing.apply, augment=_augment_config(cutout=4),
                                   num_classes=5))
  out, targets = step(jax.random.key(1), batch)
  assert 'mix_perm' not in out and 'mix_lam' not in out
  np.testing.assert_array_equal(out['id'], batch['id'])
  np.testing.assert_array_equal(targets, jax.nn.one_hot(batch['label'], 5))
  changed = np.asarray(out['image'] != batch['image'])
  assert np.all(np.asarray(out['image'])[changed] == 0)
  assert np.all(changed.reshape(8, -1).any(1))  # every example has a hole


@pytest.mark.parametrize('kind', ['mixup', 'cutmix'])
def test_apply_mixing_under_jit_is_consistent(kind):
  batch = _batch()
  config = _augment_config(**{kind: 1.0})
  step = jax.jit(functools.partial(mixing.apply, augment=config, num_classes=5))
  key = jax.random.fold_in(jax.random.key(2), 17)
  out, targets = step(key, batch)
  perm, lam = out['mix_perm'], out['mix_lam']
  _assert_permutation(perm, 8)
  np.testing.assert_allclose(targets, mixing.mixed_targets(batch['label'], 5, perm, lam),
                             rtol=1e-6)
  np.testing.assert_allclose(np.asarray(targets).sum(1), 1.0, rtol=1e-6)
  x = batch['image']
  if kind == 'mixup':
    np.testing.assert_allclose(out['image'], lam * x + (1 - lam) * x[perm], atol=1e-6)
  else:
    from_other = np.asarray(out['image'] != x).any(-1)  # [B, H, W]
    moved = np.asarray(perm) != np.arange(8)
    np.testing.assert_allclose(lam, 1 - from_other[moved][0].mean(), rtol=1e-6)
  again, _ = step(key, batch)  # deterministic in the key
  np.testing.assert_array_equal(again['image'], out['image'])
