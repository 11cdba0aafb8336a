"""Stateless, deterministic augmentation and preprocessing in TF, for `tf.data` maps.

Every random choice comes from a per-example seed derived from
(config seed, epoch, example id) -- or, for CS-KD partners, from
(config seed, epoch, position in the epoch) -- so the same triple always gives
the same view, whatever the order, parallelism or resume point of the pipeline.

Training views:
  'crop_flip': zero-pad 4, random crop back to H x W, flip with p=0.5
    (torchvision RandomCrop(32, padding=4) + RandomHorizontalFlip).
  'random_resized_crop_flip': torchvision RandomResizedCrop(size) (scale
    (0.08, 1), ratio (3/4, 4/3) log-uniform, 10 attempts, then its central-crop
    fallback), bilinear resize to size x size, flip with p=0.5.
  'none': the image as it is.
Eval views ('eval_preprocess' of a DatasetSpec):
  'none': the image as it is (must already be image_size).
  'resize': bilinear resize to image_size x image_size.
  'resize_center_crop': torchvision Resize(resize_size) (short side, aspect kept,
    the long side truncated as torchvision does) then CenterCrop(image_size).

Resizing is bilinear with antialiasing, which matches PIL's bilinear filter
(torchvision's default backend) when downscaling and is plain bilinear when
upscaling. Views are float32 in [0, 255] (uint8 where no resize happens);
`normalize` maps them to (x / 255 - mean) / std.

Encoded images (JPEG, or PNG in TFDS mock data) go through the `*_encoded`
functions: for JPEG, the random-resized crop decodes only the crop window
(`tf.io.decode_and_crop_jpeg`), which skips about half the decoding work on
average. With chroma-subsampled JPEGs the pixels at the crop border can differ
by a few levels from decoding the whole image and then cropping.

Each command hides the GPUs from TF at start-up (`console.hide_gpus_from_tf`), so TF
never takes accelerator memory.
"""
from collections.abc import Sequence
import math

import tensorflow as tf

PAD = 4  # zero padding before the random crop (torchvision RandomCrop(32, padding=4))
SCALE = (0.08, 1.0)  # torchvision RandomResizedCrop defaults
RATIO = (3 / 4, 4 / 3)
ATTEMPTS = 10
_AUGMENT_SALT = 0x6175  # separates augmentation seeds from other uses of config.seed
_PAIR_AUGMENT_SALT = 0x7061  # separates CS-KD partner views from anchor views
_DCT_METHOD = 'INTEGER_ACCURATE'  # libjpeg's ISLOW, as PIL decodes

TRAIN_AUGMENTS = ('crop_flip', 'random_resized_crop_flip', 'none')
EVAL_PREPROCESSES = ('none', 'resize', 'resize_center_crop')


# -- seeds -----------------------------------------------------------------------------
def _seed(salt: int, seed, epoch, index) -> tf.Tensor:
  s = tf.stack([tf.constant(salt, tf.int64), tf.cast(seed, tf.int64)])
  s = tf.random.experimental.stateless_fold_in(s, tf.cast(epoch, tf.int64))
  return tf.random.experimental.stateless_fold_in(s, tf.cast(index, tf.int64))


def example_seed(seed, epoch, example_id) -> tf.Tensor:
  """The stateless seed (int32[2]) of one example's view in one epoch."""
  return _seed(_AUGMENT_SALT, seed, epoch, example_id)


def pair_seed(seed, epoch, position) -> tf.Tensor:
  """The stateless seed of the CS-KD partner drawn for anchor slot `position` of an epoch.

  Keyed by position, not by example id, so a partner's view is independent of
  the view the same example gets as an anchor (or as another anchor's partner).
  """
  return _seed(_PAIR_AUGMENT_SALT, seed, epoch, position)


# -- decoding ----------------------------------------------------------------------------
def decode(encoded: tf.Tensor, channels: int) -> tf.Tensor:
  """Encoded JPEG/PNG/BMP/GIF bytes -> uint8 [H, W, channels]."""
  image = tf.cond(
      tf.io.is_jpeg(encoded),
      lambda: tf.io.decode_jpeg(encoded, channels=channels, dct_method=_DCT_METHOD),
      lambda: tf.io.decode_image(encoded, channels=channels, expand_animations=False))
  image.set_shape([None, None, channels])
  return image


# -- training views ----------------------------------------------------------------------
def crop_flip(image: tf.Tensor, seed: tf.Tensor, pad: int = PAD) -> tf.Tensor:
  """Zero-pads `image` [H,W,C] by `pad`, crops a random HxW window, flips it with p=0.5."""
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
  cropped = tf.image.stateless_random_crop(padded, tf.shape(image), seed=crop_seed)
  return tf.image.stateless_random_flip_left_right(cropped, seed=flip_seed)


def random_resized_crop_box(height, width, seed: tf.Tensor, scale=SCALE,
                            ratio=RATIO) -> tf.Tensor:
  """int32 [4] = (top, left, h, w) of a torchvision RandomResizedCrop window.

  Hand-written rather than `tf.image.stateless_sample_distorted_bounding_box`,
  whose aspect ratio is uniform (torchvision: log-uniform), whose area bounds
  act differently and whose fallback is the whole image (torchvision: the
  largest central crop with the aspect ratio clipped to `ratio`).

  Torchvision: up to 10 attempts, each with area fraction ~ U(scale) and
  aspect w/h ~ exp(U(log ratio)); w = round(sqrt(area * aspect)),
  h = round(sqrt(area / aspect)); the first attempt that fits is taken and its
  corner drawn uniformly. All 10 attempts are drawn at once here, which gives
  the same distribution.
  """
  height, width = tf.cast(height, tf.int32), tf.cast(width, tf.int32)
  attempt_seed, corner_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  u = tf.random.stateless_uniform([2, ATTEMPTS], attempt_seed, dtype=tf.float64)
  h_f, w_f = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
  area = h_f * w_f * (scale[0] + (scale[1] - scale[0]) * u[0])
  log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
  aspect = tf.exp(log_lo + (log_hi - log_lo) * u[1])
  ws = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)  # round half to even, as Python
  hs = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)
  fits = (ws > 0) & (ws <= width) & (hs > 0) & (hs <= height)
  first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
  fb_h, fb_w = _central_fallback(height, width, ratio)
  found = tf.reduce_any(fits)
  h = tf.where(found, hs[first], fb_h)
  w = tf.where(found, ws[first], fb_w)
  corner = tf.random.stateless_uniform([2], corner_seed, dtype=tf.float64)
  top = _uniform_int(corner[0], height - h + 1)
  left = _uniform_int(corner[1], width - w + 1)
  top = tf.where(found, top, (height - h) // 2)
  left = tf.where(found, left, (width - w) // 2)
  return tf.stack([top, left, h, w])


def _uniform_int(u: tf.Tensor, n: tf.Tensor) -> tf.Tensor:
  """floor(u * n) for u ~ U[0, 1): uniform over 0..n-1."""
  return tf.minimum(tf.cast(tf.floor(u * tf.cast(n, tf.float64)), tf.int32), n - 1)


def _central_fallback(height: tf.Tensor, width: tf.Tensor, ratio) -> tuple[tf.Tensor, tf.Tensor]:
  """(h, w) of torchvision's fallback: the whole image, its aspect clipped to `ratio`."""
  h_f, w_f = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
  in_ratio = w_f / h_f
  narrow_h = tf.cast(tf.round(w_f / min(ratio)), tf.int32)
  wide_w = tf.cast(tf.round(h_f * max(ratio)), tf.int32)
  h = tf.where(in_ratio < min(ratio), narrow_h, height)
  w = tf.where(in_ratio > max(ratio), wide_w, width)
  return h, w


def _resized_flip(crop: tf.Tensor, seed: tf.Tensor, size: int) -> tf.Tensor:
  """Bilinear resize to size x size (float32), then a horizontal flip with p=0.5."""
  resized = resize(crop, size, size)
  resized.set_shape([size, size, crop.shape[-1]])
  return tf.image.stateless_random_flip_left_right(resized, seed=seed)


def random_resized_crop_flip(image: tf.Tensor, seed: tf.Tensor, size: int) -> tf.Tensor:
  """RandomResizedCrop(size) + RandomHorizontalFlip of a decoded [H,W,C] image (float32)."""
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  shape = tf.shape(image)
  box = random_resized_crop_box(shape[0], shape[1], crop_seed)
  crop = tf.slice(image, [box[0], box[1], 0], [box[2], box[3], -1])
  return _resized_flip(crop, flip_seed, size)


def random_resized_crop_flip_encoded(encoded: tf.Tensor, seed: tf.Tensor, size: int,
                                     channels: int) -> tf.Tensor:
  """`random_resized_crop_flip` of encoded bytes; JPEGs decode only the crop window."""
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))

  def jpeg():
    shape = tf.image.extract_jpeg_shape(encoded)
    box = random_resized_crop_box(shape[0], shape[1], crop_seed)
    return tf.io.decode_and_crop_jpeg(encoded, box, channels=channels, dct_method=_DCT_METHOD)

  def other():
    image = decode(encoded, channels)
    shape = tf.shape(image)
    box = random_resized_crop_box(shape[0], shape[1], crop_seed)
    return tf.slice(image, [box[0], box[1], 0], [box[2], box[3], -1])

  crop = tf.cond(tf.io.is_jpeg(encoded), jpeg, other)
  crop.set_shape([None, None, channels])
  return _resized_flip(crop, flip_seed, size)


def train_view(augment: str, image: tf.Tensor, seed: tf.Tensor,
               size: int | None = None) -> tf.Tensor:
  """The training view of a decoded uint8 image [H,W,C] under augmentation `augment`.

  Args:
    augment: one of TRAIN_AUGMENTS.
    image: uint8 [H, W, C].
    seed: the stateless seed of this view (`example_seed` or `pair_seed`).
    size: output height and width; needed by 'random_resized_crop_flip', and
      the others keep the input size.

  Returns:
    The view: uint8 for 'crop_flip' and 'none', float32 in [0, 255] otherwise.
  """
  if augment == 'crop_flip':
    return crop_flip(image, seed)
  if augment == 'random_resized_crop_flip':
    if size is None:
      raise ValueError("'random_resized_crop_flip' needs the output size")
    return random_resized_crop_flip(image, seed, size)
  if augment == 'none':
    return image
  raise ValueError(f'unknown augmentation {augment!r}; known: {", ".join(TRAIN_AUGMENTS)}')


def train_view_encoded(augment: str, encoded: tf.Tensor, seed: tf.Tensor, size: int,
                       channels: int) -> tf.Tensor:
  """`train_view` of encoded image bytes, decoding only what the view needs."""
  if augment == 'random_resized_crop_flip':
    return random_resized_crop_flip_encoded(encoded, seed, size, channels)
  view = train_view(augment, decode(encoded, channels), seed, size)
  return tf.ensure_shape(view, [size, size, channels])


# -- eval views --------------------------------------------------------------------------
def resize(image: tf.Tensor, height, width) -> tf.Tensor:
  """Bilinear, antialiased resize of [H,W,C] to [height, width, C], float32 in input units.

  Antialiasing (TF's ScaleAndTranslate, ~4x slower than plain bilinear) only
  changes downscaling, so pure upscaling takes plain bilinear: the same values
  up to float rounding.
  """
  size = tf.stack([height, width])
  shape = tf.shape(image)
  upscale = (shape[0] <= height) & (shape[1] <= width)
  return tf.cond(upscale, lambda: tf.image.resize(image, size, method='bilinear'),
                 lambda: tf.image.resize(image, size, method='bilinear', antialias=True))


def resize_short_side(image: tf.Tensor, short: int) -> tf.Tensor:
  """torchvision Resize(short): short side to `short`, long side int(short * long / short_in)."""
  shape = tf.shape(image)
  h, w = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
  portrait = shape[1] <= shape[0]  # torchvision: w <= h -> w is the short side
  long_h = tf.cast(tf.floor(short * h / w), tf.int32)
  long_w = tf.cast(tf.floor(short * w / h), tf.int32)
  new_h = tf.where(portrait, long_h, short)
  new_w = tf.where(portrait, short, long_w)
  return resize(image, new_h, new_w)


def center_crop(image: tf.Tensor, size: int) -> tf.Tensor:
  """torchvision CenterCrop(size): top = round((H - size) / 2), round half to even."""
  shape = tf.shape(image)
  top = tf.cast(tf.round(tf.cast(shape[0] - size, tf.float64) / 2), tf.int32)
  left = tf.cast(tf.round(tf.cast(shape[1] - size, tf.float64) / 2), tf.int32)
  return tf.slice(image, [top, left, 0], [size, size, -1])


def eval_view(preprocess: str, image: tf.Tensor, size: int,
              resize_size: int | None = None) -> tf.Tensor:
  """The test-time view (float32 [size, size, C] in [0, 255]) of a decoded image."""
  channels = image.shape[-1]
  if preprocess == 'none':
    view = tf.cast(image, tf.float32)
  elif preprocess == 'resize':
    view = resize(image, size, size)
  elif preprocess == 'resize_center_crop':
    if resize_size is None or resize_size < size:
      raise ValueError(f"'resize_center_crop' needs resize_size >= {size}, got {resize_size}")
    view = center_crop(resize_short_side(image, resize_size), size)
  else:
    raise ValueError(f'unknown eval preprocessing {preprocess!r}; known: '
                     f'{", ".join(EVAL_PREPROCESSES)}')
  return tf.ensure_shape(view, [size, size, channels])


def normalize(image: tf.Tensor, mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
  """[0, 255] [..., C] -> float32 (image / 255 - mean) / std, as torchvision ToTensor+Normalize."""
  x = tf.cast(image, tf.float32) / 255.0
  return (x - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
