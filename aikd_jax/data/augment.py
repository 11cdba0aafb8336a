"""Stateless, deterministic augmentation in TF, for `tf.data` maps.

Every random choice comes from a per-example seed derived from
(config seed, epoch, example id), so the same triple always gives the same
view, whatever the order, parallelism or resume point of the pipeline.
Importing this module hides GPUs from TF, so TF never takes accelerator memory.
"""
from collections.abc import Sequence

from absl import logging
import tensorflow as tf

PAD = 4  # zero padding before the random crop (torchvision RandomCrop(32, padding=4))
_AUGMENT_SALT = 0x6175  # separates augmentation seeds from other uses of config.seed


def hide_gpus_from_tf() -> None:
  """Makes TF CPU-only; JAX owns the accelerators."""
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError as e:  # TF already initialised its devices
    logging.warning('Could not hide GPUs from TensorFlow: %s', e)


hide_gpus_from_tf()


def example_seed(seed, epoch, example_id) -> tf.Tensor:
  """The stateless seed (int32[2]) of one example's view in one epoch."""
  s = tf.stack([tf.constant(_AUGMENT_SALT, tf.int64), tf.cast(seed, tf.int64)])
  s = tf.random.experimental.stateless_fold_in(s, tf.cast(epoch, tf.int64))
  return tf.random.experimental.stateless_fold_in(s, tf.cast(example_id, tf.int64))


def crop_flip(image: tf.Tensor, seed: tf.Tensor, pad: int = PAD) -> tf.Tensor:
  """Zero-pads `image` [H,W,C] by `pad`, crops a random HxW window, flips it with p=0.5."""
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
  cropped = tf.image.stateless_random_crop(padded, tf.shape(image), seed=crop_seed)
  return tf.image.stateless_random_flip_left_right(cropped, seed=flip_seed)


def train_view(augment: str, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """The training view of a uint8 image under augmentation `augment` (still uint8)."""
  if augment == 'crop_flip':
    return crop_flip(image, seed)
  if augment == 'none':
    return image
  raise ValueError(f"unknown augmentation {augment!r}; known: 'crop_flip', 'none'")


def normalize(image: tf.Tensor, mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
  """uint8 [..., C] -> float32 (image / 255 - mean) / std, as torchvision ToTensor+Normalize."""
  x = tf.cast(image, tf.float32) / 255.0
  return (x - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
