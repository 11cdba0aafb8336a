"""TFDS -> tf.data -> host-local numpy batches, for training and evaluation.

Each process reads only its own share of every split
(`tfds.split_for_jax_process`, whose bounds `_split_share` reads back); example
ids are indices in the split, the same whatever the number of processes. The
builder comes ready from `prepare.py` (which prepares it from local files if
needed).

Training. The process's train share is read once into memory, as one tensor
that every epoch gathers from:
  * `spec.in_memory=True` (the 32-px datasets): decoded uint8 images
    [n, H, W, C] (CIFAR-100: 150 MB for the whole train split).
  * `spec.in_memory=False` (the 224-px fine-grained datasets and Tiny-ImageNet,
    images stored as JPEG): the *encoded* bytes, one string per image, read with
    `tfds.decode.SkipDecoding` and decoded inside the parallel map. Memory is
    the size of the encoded share; for a whole train split, roughly 0.2 GB
    (Tiny-ImageNet), 0.45 GB (Stanford Dogs), 0.55 GB (CUB), 0.8 GB (MIT67) and
    1.8 GB (FGVC-Aircraft, large photos), divided among the processes; reading
    briefly needs twice that (`train_share_bytes` and the log give the actual
    size). Decoded 224-px crops would need 3-7x more, and streaming from disk
    through a shuffle buffer could neither resume mid-epoch without replaying
    the epoch nor draw CS-KD partners by class; with the bytes in memory both
    are an index lookup, and the tensor is gathered from, never copied.
An epoch is a permutation of the share's indices seeded by (seed, epoch);
the tf.data pipeline slices that index list, so
`train_batches(epoch, start_step=k)` starts at batch k without reading,
decoding or augmenting the batches before it, and yields exactly the batches
k.. of the full epoch. The map gathers an example, decodes it if encoded (only
the crop window of a JPEG under random-resized crop), augments it with a
stateless seed from (seed, epoch, example id), normalises; then batch
(drop_remainder) and prefetch. Map parallelism is AUTOTUNE with
`deterministic=True`, so the output does not depend on thread timing.

CS-KD pairs (`paired=True`): each anchor gets one partner of the same class,
drawn uniformly (possibly the anchor itself) from this process's train share
by a generator seeded by (seed, epoch, process) at the anchor's slot; the
partner's view has its own seed (seed, epoch, global slot), independent of the
view the same example gets as an anchor. Works in both modes.

Evaluation. In-memory datasets keep their test share decoded in memory,
padded to whole batches. Streamed datasets read the test share from TFDS on
every `eval_batches` call (sequential files, JPEG decoded in the map), and
append zero padding; no memory beyond the prefetch buffers. Either way every
process yields the same number of batches and 'mask' marks real examples.

Turning host-local batches into global `jax.Array`s is `sharding.py`'s job.
"""
from collections.abc import Iterator
import copy
import dataclasses
import functools
from typing import Any, NamedTuple

from absl import logging
import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from aikd_jax.data import augment
from aikd_jax.data import datasets
from aikd_jax.data import prepare
from aikd_jax.errors import ConfigError, DataError

_SHUFFLE_SALT = 0x5348  # separates the shuffle seed from other uses of config.seed
_PAIR_SALT = 0x5041  # separates the CS-KD partner draw from the shuffle
_READ_BATCH = 256


@dataclasses.dataclass(frozen=True)
class _Share:
  """This process's examples of one split, in memory, in the split's canonical order."""
  images: tf.Tensor  # uint8 [n, H, W, C] (decoded) or string [n] (encoded)
  labels: np.ndarray  # int32 [n]
  ids: np.ndarray  # int32 [n]: index in the split


@dataclasses.dataclass(frozen=True)
class _Classes:
  """This process's train indices grouped by class, for drawing CS-KD partners."""
  members: np.ndarray  # local indices sorted by label
  start: np.ndarray  # [num_classes]: first position of each class in `members`
  count: np.ndarray  # [num_classes]: examples of each class


class Pipeline:
  """Train and eval batches of one dataset for this process.

  Attributes:
    spec: the dataset's `DatasetSpec`.
    num_classes: number of labels.
    image_shape: (H, W, C) as fed to the model.
    num_train_examples: global, after `config.data.train_subset`.
    num_eval_examples: global, after `config.data.eval_subset`.
    steps_per_epoch: num_train_examples // config.batch_size, the same on every process.
    local_batch_size: config.batch_size // process_count.
    local_eval_batch_size: config.eval_batch_size // process_count.
    num_eval_batches: batches `eval_batches` yields, the same on every process.
    train_share_bytes: memory held by this process's train images.
  """

  def __init__(self, config, *, process_index: int | None = None,
               process_count: int | None = None, spec: datasets.DatasetSpec | None = None,
               threads: int | None = None):
    """Reads this process's train share (and in-memory test share).

    Args:
      config: the run config; uses data.*, batch_size, eval_batch_size, seed.
      process_index: this process (default: jax.process_index()).
      process_count: processes (default: jax.process_count()).
      spec: the dataset; default `datasets.get(config.data.name)` (tests and
        benchmarks pass their own).
      threads: size of a private tf.data thread pool; None shares TF's pool
        (as many threads as cores).
    """
    self.process_index = jax.process_index() if process_index is None else process_index
    self.process_count = jax.process_count() if process_count is None else process_count
    self.spec = datasets.get(config.data.name) if spec is None else spec
    self.num_classes = self.spec.num_classes
    self.image_shape = self.spec.image_shape
    self.local_batch_size = _local_size(config.batch_size, self.process_count, 'batch_size')
    self.local_eval_batch_size = _local_size(config.eval_batch_size, self.process_count,
                                             'eval_batch_size')
    self._seed = int(config.seed) % 2**63
    self._options = _data_options(threads)

    builder = prepare.ready_builder(self.spec, config.data.tfds_dir, config.data.manual_dir)
    self.num_train_examples = _subset_size(builder, self.spec.train_split,
                                           config.data.train_subset, 'train_subset')
    self.num_eval_examples = _subset_size(builder, self.spec.test_split,
                                          config.data.eval_subset, 'eval_subset')
    self.steps_per_epoch = self.num_train_examples // config.batch_size
    if self.steps_per_epoch == 0:
      raise ConfigError(f'batch_size {config.batch_size} exceeds the {self.num_train_examples} '
                      'training examples: lower --config.batch_size')
    max_share = _split_share(self.spec.test_split, self.num_eval_examples, 0,
                             self.process_count).size  # the first share is the largest
    self.num_eval_batches = -(-max_share // self.local_eval_batch_size)

    read = functools.partial(_read_share, builder, self.spec, index=self.process_index,
                             count=self.process_count)
    self._train = read(self.spec.train_split, self.num_train_examples,
                       encoded=not self.spec.in_memory)
    self.train_share_bytes = _nbytes(self._train.images)
    logging.info('%s: %d train examples of this process in memory (%s, %.1f MB)',
                 self.spec.name, len(self._train.ids),
                 'decoded' if self.spec.in_memory else 'encoded', self.train_share_bytes / 1e6)
    self._classes = _group_by_class(self._train.labels, self.num_classes)
    self._builder = builder
    self._eval = None
    if self.spec.in_memory:
      _check_stored_shape(self.spec, self._train.images.shape[1:], 'train',
                          resizes=self.spec.train_augment == 'random_resized_crop_flip')
      share = read(self.spec.test_split, self.num_eval_examples, encoded=False)
      _check_stored_shape(self.spec, share.images.shape[1:], 'test',
                          resizes=self.spec.eval_preprocess != 'none')
      self._eval = _pad(share, self.num_eval_batches * self.local_eval_batch_size)

  # -- training ------------------------------------------------------------------------
  def reseeded(self, seed: int) -> 'Pipeline':
    """The same data under another seed (its shuffles, augmentations and pairs)."""
    other = copy.copy(self)
    other._seed = int(seed) % 2**63  # pylint: disable=protected-access
    return other

  def train_batches(self, epoch: int, start_step: int = 0,
                    paired: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """Yields batches start_step..steps_per_epoch-1 of `epoch` for this process.

    Args:
      epoch: the epoch; it seeds the order and the augmentation.
      start_step: the first batch to yield (resume); the batches are those of
        the full epoch from this one on.
      paired: also yield a CS-KD partner of the same class for every anchor.

    Yields:
      'image' float32 [b,H,W,C] (augmented, normalised), 'label' int32 [b],
      'id' int32 [b] (index in the train split), b = local_batch_size; with
      `paired`, also 'pair_image', 'pair_label' (== 'label') and 'pair_id'.
    """
    if not 0 <= start_step <= self.steps_per_epoch:
      raise ValueError(f'start_step {start_step} outside [0, {self.steps_per_epoch}]')
    order = self._epoch_order(epoch)
    rows = {'index': order, 'label': self._train.labels[order], 'id': self._train.ids[order]}
    if paired:
      partner = self._partners(epoch, rows['label'])
      rows.update(pair_index=partner, pair_label=self._train.labels[partner],
                  pair_id=self._train.ids[partner], position=self._global_slots(len(order)))
    first = start_step * self.local_batch_size
    ds = tf.data.Dataset.from_tensor_slices({k: v[first:] for k, v in rows.items()})
    ds = ds.map(functools.partial(self._train_example, epoch=epoch),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(self.local_batch_size, drop_remainder=True)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(self._options).as_numpy_iterator()

  def _epoch_order(self, epoch: int) -> np.ndarray:
    """Indices into this process's train share for the full batches of `epoch`."""
    rng = np.random.default_rng([_SHUFFLE_SALT, self._seed, epoch])
    order = rng.permutation(len(self._train.ids))
    return order[:self.steps_per_epoch * self.local_batch_size]

  def _partners(self, epoch: int, labels: np.ndarray) -> np.ndarray:
    """For each anchor label, a uniformly drawn local index of the same class."""
    rng = np.random.default_rng([_PAIR_SALT, self._seed, epoch, self.process_index])
    c = self._classes
    offset = np.floor(rng.random(len(labels)) * c.count[labels]).astype(np.int64)
    return c.members[c.start[labels] + np.minimum(offset, c.count[labels] - 1)]

  def _global_slots(self, n: int) -> np.ndarray:
    """Slot of each local anchor in the global epoch: step * batch + process offset + j."""
    local = np.arange(n)
    step, j = np.divmod(local, self.local_batch_size)
    b = self.local_batch_size
    return step * b * self.process_count + self.process_index * b + j

  def _train_example(self, ex, epoch):
    seed = augment.example_seed(self._seed, epoch, ex['id'])
    out = {'image': self._train_view(ex['index'], seed), 'label': ex['label'], 'id': ex['id']}
    if 'pair_index' in ex:
      pair_seed = augment.pair_seed(self._seed, epoch, ex['position'])
      out.update(pair_image=self._train_view(ex['pair_index'], pair_seed),
                 pair_label=ex['pair_label'], pair_id=ex['pair_id'])
    return out

  def _train_view(self, index, seed):
    """The normalised training view of local train example `index`."""
    spec, raw = self.spec, tf.gather(self._train.images, index)
    if spec.in_memory:
      view = augment.train_view(spec.train_augment, raw, seed, spec.image_size)
    else:
      view = augment.train_view_encoded(spec.train_augment, raw, seed, spec.image_size,
                                        spec.channels)
    return augment.normalize(view, spec.mean, spec.std)

  # -- evaluation ----------------------------------------------------------------------
  def eval_batches(self) -> Iterator[dict[str, np.ndarray]]:
    """Yields num_eval_batches batches of this process's test share, padded at the end.

    Each batch: 'image' float32 [b,H,W,C] (normalised), 'label' int32 [b],
    'mask' bool [b] (False on padding), b = local_eval_batch_size.
    """
    ds = self._eval_examples()
    ds = ds.batch(self.local_eval_batch_size)
    ds = ds.map(self._normalize_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(self._options).as_numpy_iterator()

  def _eval_examples(self) -> tf.data.Dataset:
    """Examples {'image' float32 [0, 255], 'label', 'mask'} of the padded test share."""
    spec = self.spec
    if self._eval is not None:
      ds = tf.data.Dataset.from_tensor_slices(self._eval)
      view = functools.partial(augment.eval_view, spec.eval_preprocess, size=spec.image_size,
                               resize_size=spec.resize_size)
      return ds.map(lambda ex: dict(ex, image=view(ex['image'])),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    share = _split_share(spec.test_split, self.num_eval_examples, self.process_index,
                         self.process_count)
    ds = _examples(self._builder, share, encoded=True)
    ds = ds.take(share.size).map(self._eval_example, num_parallel_calls=tf.data.AUTOTUNE,
                                 deterministic=True)
    padding = {'image': tf.zeros(spec.image_shape, tf.float32),
               'label': tf.constant(0, tf.int32), 'mask': tf.constant(False)}
    pad_n = self.num_eval_batches * self.local_eval_batch_size - share.size
    return ds.concatenate(tf.data.Dataset.from_tensors(padding).repeat(pad_n))

  def _eval_example(self, encoded, label):
    spec = self.spec
    image = augment.eval_view(spec.eval_preprocess, augment.decode(encoded, spec.channels),
                              spec.image_size, spec.resize_size)
    return {'image': image, 'label': tf.cast(label, tf.int32), 'mask': tf.constant(True)}

  def _normalize_batch(self, batch):
    return dict(batch, image=augment.normalize(batch['image'], self.spec.mean, self.spec.std))


def _data_options(threads: int | None) -> tf.data.Options:
  """tf.data options: deterministic, one thread per op, optional private pool."""
  options = tf.data.Options()
  options.deterministic = True
  # Parallelism comes from the map over examples; one thread per op avoids oversubscription.
  options.threading.max_intra_op_parallelism = 1
  if threads:
    options.threading.private_threadpool_size = threads
  options.experimental_optimization.map_parallelization = True
  options.experimental_optimization.parallel_batch = True
  return options


def _local_size(global_size: int, process_count: int, name: str) -> int:
  if global_size <= 0 or global_size % process_count:
    raise ConfigError(f'{name} {global_size} must be a positive multiple of the {process_count} '
                    f'processes: change --config.{name}')
  return global_size // process_count


def _subset_size(builder, split: str, subset: int | None, name: str) -> int:
  total = _split_size(builder, split)
  if subset is None:
    return total
  if subset <= 0:
    raise ConfigError(f'data.{name} must be positive, got {subset}: fix --config.data.{name}')
  return min(subset, total)


def _split_size(builder, split: str) -> int:
  try:
    return builder.info.splits[split].num_examples
  except KeyError:  # tfds.testing.mock_data leaves info.splits empty: count by reading
    ds = builder.as_dataset(split=split, decoders=_decoders(encoded=True))
    return int(ds.reduce(np.int64(0), lambda n, _: n + 1))


class _SplitShare(NamedTuple):
  """One process's share of a split: the TFDS sub-split, and [start, end) in the split."""
  sub: Any  # what `builder.as_dataset(split=...)` reads
  start: int
  end: int

  @property
  def size(self) -> int:
    return self.end - self.start


def _split_share(split: str, n: int, index: int, count: int) -> _SplitShare:
  """Share `index` of `count` of the first `n` examples of `split`.

  The sub-split is `tfds.split_for_jax_process`'s (sizes differ by at most one, the
  larger first), and its bounds are read back from it, resolved against a split of `n`
  examples: TFDS's arithmetic is the only one (TFDS writes a bound at an end as None).
  """
  sub = tfds.split_for_jax_process(f'{split}[:{n}]', process_index=index, process_count=count)
  whole = tfds.core.SplitDict([tfds.core.SplitInfo(name=split, shard_lengths=[n], num_bytes=0)])
  (read,) = sub.to_absolute(whole)
  return _SplitShare(sub, read.from_ or 0, n if read.to is None else read.to)


def _decoders(encoded: bool):
  """Decode only 'image' and 'label' (CUB also has masks); keep images encoded if asked."""
  skip = {'image': tfds.decode.SkipDecoding()} if encoded else None
  return tfds.decode.PartialDecoding({'image': True, 'label': True}, decoders=skip)


def _examples(builder, share: _SplitShare, encoded: bool) -> tf.data.Dataset:
  """(image, label) of the examples of `share`, in split order."""
  # One file at a time, in order: ids are then positions in the split.
  read_config = tfds.ReadConfig(interleave_cycle_length=1)
  ds = builder.as_dataset(split=share.sub, shuffle_files=False, read_config=read_config,
                          decoders=_decoders(encoded))
  ds = ds.take(share.size)  # mock_data ignores slicing and yields num_examples each time
  return ds.map(lambda ex: (ex['image'], ex['label']), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)


def _read_share(builder, spec: datasets.DatasetSpec, split: str, n: int, *, index: int,
                count: int, encoded: bool) -> _Share:
  """Reads this process's share of the first `n` examples of `split` into memory.

  `encoded`: keep each image's encoded bytes (a string tensor [n]); else decode
  (uint8 [n, H, W, C]; every image must have the same shape).
  """
  share = _split_share(split, n, index, count)
  ds = _examples(builder, share, encoded)
  images, labels = [], [np.zeros((0,), np.int32)]
  try:
    for x, y in ds.batch(_READ_BATCH):
      images.append(x)
      labels.append(y.numpy().astype(np.int32))
  except tf.errors.InvalidArgumentError as e:
    if encoded or 'batch' not in str(e).lower():
      raise
    raise DataError(f'{spec.name}: {split} images differ in size, so they cannot be held '
                    'decoded in memory: register the dataset with in_memory=False') from e
  labels = np.concatenate(labels)
  if len(labels) != share.size:
    raise ValueError(f'{spec.tfds_name} {split}: read {len(labels)} examples, '
                     f'expected {share.size}')
  if images:
    images = tf.concat(images, axis=0)
  else:
    images = tf.zeros((0,) if encoded else (0,) + spec.image_shape,
                      tf.string if encoded else tf.uint8)
  return _Share(images, labels, np.arange(share.start, share.end, dtype=np.int32))


def _nbytes(images: tf.Tensor) -> int:
  if images.dtype == tf.string:
    return int(tf.reduce_sum(tf.strings.length(images)))
  return int(np.prod(images.shape)) * images.dtype.size


def _check_stored_shape(spec: datasets.DatasetSpec, shape, split: str, resizes: bool) -> None:
  """Decoded images must have spec.channels, and spec.image_size unless a view resizes them."""
  shape = tuple(shape)
  if shape[-1] != spec.channels or (not resizes and shape != spec.image_shape):
    raise ValueError(f'{spec.tfds_name} {split}: images of shape {shape}, expected '
                     f'{spec.image_shape}')


def _group_by_class(labels: np.ndarray, num_classes: int) -> _Classes:
  if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f'labels outside [0, {num_classes})')
  members = np.argsort(labels, kind='stable')
  count = np.bincount(labels, minlength=num_classes)
  start = np.concatenate([[0], np.cumsum(count)[:-1]])
  return _Classes(members, start, count)


def _pad(share: _Share, size: int) -> dict[str, tf.Tensor]:
  """Pads a decoded share with zero images to `size` examples; 'mask' marks the real ones."""
  n = len(share.labels)
  padding = tf.zeros((size - n,) + tuple(share.images.shape[1:]), share.images.dtype)
  labels = np.zeros((size,), np.int32)
  labels[:n] = share.labels
  return {'image': tf.concat([share.images, padding], axis=0), 'label': tf.constant(labels),
          'mask': tf.constant(np.arange(size) < n)}
