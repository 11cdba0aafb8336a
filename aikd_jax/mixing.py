"""Batch augmentations run on device inside the jitted train step: Cutout, Mixup, CutMix.

Specs (docs/methods.md, *Cutout, Mixup and CutMix*) follow the official code:

* Cutout (uoguelph-mlrg/Cutout): one square hole per example, integer centre
  y ~ randint(H), x ~ randint(W), rows [y - size//2, y + size//2) clipped to the
  image (likewise columns), set to 0 after normalisation, p = 1.
* Mixup (facebookresearch/mixup-cifar10): one lam ~ Beta(alpha, alpha) per batch,
  a random permutation, x = lam * x + (1 - lam) * x[perm].
* CutMix (clovaai/CutMix-PyTorch): with probability `prob` per batch,
  lam ~ Beta(alpha, alpha), cut = int(size * sqrt(1 - lam)) per axis, integer
  centre, box [c - cut//2, c + cut//2) clipped, x[perm] pasted inside the box
  (one box for the whole batch), lam recomputed as 1 - box_area / (H * W).

Labels are mixed in one place (`mixed_targets`): every hard-label CE becomes a soft
CE on `lam * one_hot(y) + (1 - lam) * one_hot(y[perm])`, which equals
lam * CE(y) + (1 - lam) * CE(y[perm]) because CE is linear in the target.

Images are NHWC. The geometry is a pure function of explicit centres / box
coordinates (`cutout_at`, `cutmix_box`, `box_mask`) so it can be checked by hand;
the random functions only draw those numbers. Everything uses static shapes and
masks (no dynamic slicing), so it jits and works on a globally sharded batch.
"""
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp

from aikd_jax import losses

Batch = Dict[str, jax.Array]

_CUTOUT_SALT = 0
_MIX_SALT = 1


def box_mask(height: int, width: int, y1: jax.Array, y2: jax.Array, x1: jax.Array,
             x2: jax.Array) -> jax.Array:
  """Boolean mask [..., H, W], True on rows [y1, y2) x columns [x1, x2).

  The coordinates may be scalars or arrays of the same batch shape [...]; the
  mask then has that batch shape in front.
  """
  rows = jnp.arange(height)
  cols = jnp.arange(width)
  in_rows = (rows >= jnp.asarray(y1)[..., None]) & (rows < jnp.asarray(y2)[..., None])
  in_cols = (cols >= jnp.asarray(x1)[..., None]) & (cols < jnp.asarray(x2)[..., None])
  return in_rows[..., :, None] & in_cols[..., None, :]


def centred_box(height: int, width: int, cy: jax.Array, cx: jax.Array, cut_h: jax.Array,
                cut_w: jax.Array) -> Tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Official clipped box around integer centre (cy, cx): returns (y1, y2, x1, x2).

  y1 = clip(cy - cut_h // 2, 0, H), y2 = clip(cy + cut_h // 2, 0, H), likewise x
  (so an odd side loses one pixel, as in the official Cutout and CutMix code).
  """
  half_h = jnp.asarray(cut_h) // 2
  half_w = jnp.asarray(cut_w) // 2
  y1 = jnp.clip(cy - half_h, 0, height)
  y2 = jnp.clip(cy + half_h, 0, height)
  x1 = jnp.clip(cx - half_w, 0, width)
  x2 = jnp.clip(cx + half_w, 0, width)
  return y1, y2, x1, x2


def cutout_at(images: jax.Array, cy: jax.Array, cx: jax.Array, size: int) -> jax.Array:
  """Zeroes one square hole of side `size` centred at (cy[i], cx[i]) in example i.

  Args:
    images: [B, H, W, C].
    cy: int [B] row centres in [0, H).
    cx: int [B] column centres in [0, W).
    size: hole side (the hole is clipped at the image border).

  Returns:
    The images with the holes set to 0, same shape and dtype.
  """
  _, height, width, _ = images.shape
  y1, y2, x1, x2 = centred_box(height, width, cy, cx, size, size)
  hole = box_mask(height, width, y1, y2, x1, x2)  # [B, H, W]
  return jnp.where(hole[..., None], jnp.zeros((), images.dtype), images)


def cutout(key: jax.Array, images: jax.Array, size: int) -> jax.Array:
  """Cutout with one hole per example, centre uniform over the integer pixel grid."""
  batch, height, width, _ = images.shape
  key_y, key_x = jax.random.split(key)
  cy = jax.random.randint(key_y, (batch,), 0, height)
  cx = jax.random.randint(key_x, (batch,), 0, width)
  return cutout_at(images, cy, cx, size)


def mix_images(images: jax.Array, perm: jax.Array, lam: jax.Array) -> jax.Array:
  """lam * images + (1 - lam) * images[perm], in the images' dtype (`losses.remix`)."""
  return losses.remix(images, perm, lam, 'mix_images')


def mixup(key: jax.Array, images: jax.Array,
          alpha: float) -> Tuple[jax.Array, jax.Array, jax.Array]:
  """Mixup with one lam ~ Beta(alpha, alpha) per batch.

  Returns:
    (mixed images, perm int32 [B], lam float32 scalar).
  """
  key_lam, key_perm = jax.random.split(key)
  lam = jax.random.beta(key_lam, alpha, alpha, dtype=jnp.float32)
  perm = jax.random.permutation(key_perm, images.shape[0]).astype(jnp.int32)
  return mix_images(images, perm, lam), perm, lam


def cutmix_box(height: int, width: int, lam: jax.Array, cy: jax.Array,
               cx: jax.Array) -> Tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """CutMix's clipped box (y1, y2, x1, x2) for a drawn lam and integer centre.

  cut_h = int(H * sqrt(1 - lam)), cut_w = int(W * sqrt(1 - lam)) (official
  `rand_bbox`), then the clipped box of `centred_box`.
  """
  ratio = jnp.sqrt(1.0 - jnp.asarray(lam, jnp.float32))
  cut_h = jnp.floor(height * ratio).astype(jnp.int32)
  cut_w = jnp.floor(width * ratio).astype(jnp.int32)
  return centred_box(height, width, cy, cx, cut_h, cut_w)


def paste_box(images: jax.Array, perm: jax.Array, y1: jax.Array, y2: jax.Array,
              x1: jax.Array, x2: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """Pastes images[perm] into the box of every example; returns (images, lam).

  lam = 1 - box_area / (H * W) is the fraction of each image kept.
  """
  _, height, width, _ = images.shape
  inside = box_mask(height, width, y1, y2, x1, x2)  # [H, W], one box per batch
  mixed = jnp.where(inside[None, :, :, None], images[perm], images)
  area = (jnp.asarray(y2) - jnp.asarray(y1)) * (jnp.asarray(x2) - jnp.asarray(x1))
  lam = 1.0 - area.astype(jnp.float32) / (height * width)
  return mixed, lam


def cutmix(key: jax.Array, images: jax.Array, alpha: float,
           prob: float = 1.0) -> Tuple[jax.Array, jax.Array, jax.Array]:
  """CutMix, applied to the whole batch with probability `prob`.

  Returns:
    (images, perm int32 [B], lam float32 scalar). When not applied the images are
    unchanged, perm is the identity and lam is 1.
  """
  batch, height, width, _ = images.shape
  key_apply, key_lam, key_perm, key_y, key_x = jax.random.split(key, 5)
  applied = jax.random.uniform(key_apply) < prob
  lam = jax.random.beta(key_lam, alpha, alpha, dtype=jnp.float32)
  perm = jax.random.permutation(key_perm, batch).astype(jnp.int32)
  cy = jax.random.randint(key_y, (), 0, height)
  cx = jax.random.randint(key_x, (), 0, width)
  y1, y2, x1, x2 = cutmix_box(height, width, lam, cy, cx)
  # Not applied: an empty box (so lam = 1 and images unchanged) and the identity.
  y2 = jnp.where(applied, y2, y1)
  perm = jnp.where(applied, perm, jnp.arange(batch, dtype=jnp.int32))
  mixed, lam = paste_box(images, perm, y1, y2, x1, x2)
  return mixed, perm, lam


def mixed_targets(labels: jax.Array, num_classes: int, perm: Optional[jax.Array] = None,
                  lam: Optional[jax.Array] = None) -> jax.Array:
  """Target distributions [B, C]: one_hot(labels), or lam-mixed with labels[perm]."""
  one_hot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  return losses.remix(one_hot, perm, lam, 'mixed_targets')


def apply(key: jax.Array, batch: Batch, augment: Any,
          num_classes: int) -> Tuple[Batch, jax.Array]:
  """Applies the configured batch augmentations; returns (batch, targets [B, C]).

  `augment` is the checked `config.augment` (cutout, mixup, cutmix, cutmix_prob; at most
  one of mixup and cutmix is on). Cutout runs first (it is a per-image transform in the
  official code), then Mixup or CutMix. When mixing, the batch gains 'mix_perm' (int32
  [B]) and 'mix_lam' (float32 scalar) so the caller can mix other per-example quantities
  the same way. A CS-KD 'pair_image' gets the same transforms (same keys: the same holes,
  permutation, lambda and box), so a mixed pair carries the anchor's label mixture. With
  everything off the batch is returned as is, with one-hot targets, and no random op is
  traced.

  Args:
    key: a per-step key, e.g. jax.random.fold_in(key, step).
    batch: dict with 'image' [B, H, W, C] and 'label' int [B] (other keys kept).
    augment: the `augment` config group.
    num_classes: number of classes C.
  """
  labels = batch['label']
  if augment.cutout <= 0 and augment.mixup <= 0 and augment.cutmix <= 0:
    return batch, mixed_targets(labels, num_classes)
  out = dict(batch)
  for name in ('image', 'pair_image'):
    if name in batch:
      out[name], perm, lam = _augment_images(key, batch[name], augment)
  if perm is not None:
    out['mix_perm'] = perm
    out['mix_lam'] = lam
  return out, mixed_targets(labels, num_classes, perm, lam)


def _augment_images(key, images, augment):
  """(images, perm, lam) after Cutout and Mixup or CutMix; perm and lam None unmixed."""
  if augment.cutout > 0:
    images = cutout(jax.random.fold_in(key, _CUTOUT_SALT), images, int(augment.cutout))
  mix_key = jax.random.fold_in(key, _MIX_SALT)
  if augment.mixup > 0:
    return mixup(mix_key, images, float(augment.mixup))
  if augment.cutmix > 0:
    return cutmix(mix_key, images, float(augment.cutmix), float(augment.cutmix_prob))
  return images, None, None
