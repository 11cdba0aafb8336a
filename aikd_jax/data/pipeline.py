"""TFDS -> tf.data -> host-local numpy batches, for training and evaluation.

Each process reads only its own share of every split (`tfds.split_for_jax_process`)
into memory once; each epoch is then a tf.data pipeline over that share:
a permutation seeded by (seed, epoch), stateless augmentation seeded by
(seed, epoch, example id), parallel map, batch, prefetch. The output order is
deterministic, so `train_batches(epoch, start_step=k)` resumes an epoch exactly.
Turning host-local batches into global `jax.Array`s is `sharding.py`'s job.
"""
from collections.abc import Iterator
import dataclasses
import functools
import os

from absl import logging
import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from aikd_jax.data import augment  # also hides GPUs from TF
from aikd_jax.data import builders  # noqa: F401  (registers our TFDS builders)
from aikd_jax.data import datasets
from aikd_jax.errors import UserError

_SHUFFLE_SALT = 0x5348  # separates the shuffle seed from other uses of config.seed
_READ_BATCH = 1024


@dataclasses.dataclass(frozen=True)
class _Share:
  """This process's examples of one split, in memory, in the split's canonical order."""
  images: np.ndarray  # uint8 [n, H, W, C]
  labels: np.ndarray  # int32 [n]
  ids: np.ndarray  # int32 [n]: index in the split


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
  """

  def __init__(self, config, *, process_index: int | None = None,
               process_count: int | None = None):
    self.process_index = jax.process_index() if process_index is None else process_index
    self.process_count = jax.process_count() if process_count is None else process_count
    self.spec = datasets.get(config.data.name)
    self.num_classes = self.spec.num_classes
    self.image_shape = self.spec.image_shape
    self.local_batch_size = _local_size(config.batch_size, self.process_count, 'batch_size')
    self.local_eval_batch_size = _local_size(config.eval_batch_size, self.process_count,
                                             'eval_batch_size')
    self._seed = int(config.seed) % 2**63

    builder = _ready_builder(self.spec, config.data.tfds_dir, config.data.manual_dir)
    self.num_train_examples = _subset_size(builder, self.spec.train_split,
                                           config.data.train_subset, 'train_subset')
    self.num_eval_examples = _subset_size(builder, self.spec.test_split,
                                          config.data.eval_subset, 'eval_subset')
    self.steps_per_epoch = self.num_train_examples // config.batch_size
    if self.steps_per_epoch == 0:
      raise UserError(f'batch_size {config.batch_size} exceeds the {self.num_train_examples} '
                      'training examples: lower --config.batch_size')
    max_share = -(-self.num_eval_examples // self.process_count)
    self.num_eval_batches = -(-max_share // self.local_eval_batch_size)

    read = functools.partial(_read_share, builder, self.spec,
                             index=self.process_index, count=self.process_count)
    self._train = read(self.spec.train_split, self.num_train_examples)
    self._eval = _pad(read(self.spec.test_split, self.num_eval_examples),
                      self.num_eval_batches * self.local_eval_batch_size)

  def train_batches(self, epoch: int, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Yields batches start_step..steps_per_epoch-1 of `epoch` for this process.

    Each batch: 'image' float32 [b,H,W,C] (augmented, normalised), 'label'
    int32 [b], 'id' int32 [b] (index in the train split), b = local_batch_size.
    """
    if not 0 <= start_step <= self.steps_per_epoch:
      raise ValueError(f'start_step {start_step} outside [0, {self.steps_per_epoch}]')
    order = self._epoch_order(epoch)[start_step * self.local_batch_size:]
    t = self._train
    ds = tf.data.Dataset.from_tensor_slices(
        {'image': t.images[order], 'label': t.labels[order], 'id': t.ids[order]})
    ds = ds.map(functools.partial(self._train_example, epoch=epoch),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(self.local_batch_size, drop_remainder=True)
    return ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()

  def eval_batches(self) -> Iterator[dict[str, np.ndarray]]:
    """Yields num_eval_batches batches of this process's test share, padded at the end.

    Each batch: 'image' float32 [b,H,W,C] (normalised), 'label' int32 [b],
    'mask' bool [b] (False on padding), b = local_eval_batch_size.
    """
    ds = tf.data.Dataset.from_tensor_slices(
        {'image': self._eval.images, 'label': self._eval.labels, 'mask': self._eval.mask})
    ds = ds.batch(self.local_eval_batch_size)
    ds = ds.map(self._eval_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()

  def _epoch_order(self, epoch: int) -> np.ndarray:
    """Indices into this process's train share for the full batches of `epoch`."""
    rng = np.random.default_rng([_SHUFFLE_SALT, self._seed, epoch])
    order = rng.permutation(len(self._train.ids))
    return order[:self.steps_per_epoch * self.local_batch_size]

  def _train_example(self, ex, epoch):
    seed = augment.example_seed(self._seed, epoch, ex['id'])
    view = augment.train_view(self.spec.train_augment, ex['image'], seed)
    return {'image': augment.normalize(view, self.spec.mean, self.spec.std),
            'label': ex['label'], 'id': ex['id']}

  def _eval_batch(self, batch):
    return {'image': augment.normalize(batch['image'], self.spec.mean, self.spec.std),
            'label': batch['label'], 'mask': batch['mask']}


@dataclasses.dataclass(frozen=True)
class _PaddedShare:
  images: np.ndarray
  labels: np.ndarray
  mask: np.ndarray


def _local_size(global_size: int, process_count: int, name: str) -> int:
  if global_size <= 0 or global_size % process_count:
    raise UserError(f'{name} {global_size} must be a positive multiple of the {process_count} '
                    f'processes: change --config.{name}')
  return global_size // process_count


def _ready_builder(spec: datasets.DatasetSpec, tfds_dir: str | None, manual_dir: str | None):
  """The TFDS builder of `spec`, prepared from local files first if it can be."""
  builder = tfds.builder(spec.tfds_name, data_dir=tfds_dir)
  if _has_data(builder, spec.train_split):
    return builder
  if spec.manual_dir is None:
    root = tfds_dir or tfds.core.constants.DATA_DIR
    raise UserError(
        f'Dataset {spec.tfds_name} is not prepared in {root} (looked in {builder.data_dir}): '
        f'run `tfds build {spec.tfds_name} --data_dir={root}` on a machine with network '
        'or copy a prepared folder there, and set --config.data.tfds_dir')
  _prepare_from_local_files(builder, manual_dir or spec.manual_dir)
  return tfds.builder(spec.tfds_name, data_dir=tfds_dir)


def _has_data(builder, split: str) -> bool:
  try:
    builder.as_dataset(split=split)  # under tfds.testing.mock_data this always works
  except AssertionError:  # TFDS: "could not find data in ..."
    return False
  return True


def _prepare_from_local_files(builder, manual_dir: str) -> None:
  """Prepares a builder that reads local files (seconds); tolerates a concurrent process."""
  check = getattr(type(builder), 'check_manual_dir', None)
  if check is not None:
    check(manual_dir)
  logging.info('Preparing %s from %s into %s', builder.name, manual_dir, builder.data_dir)
  config = tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir))
  try:
    builder.download_and_prepare(download_config=config)
  except UserError:
    raise
  except Exception:  # pylint: disable=broad-except
    if not builder.is_prepared():  # else another process prepared it at the same time
      raise


def _subset_size(builder, split: str, subset: int | None, name: str) -> int:
  total = _split_size(builder, split)
  if subset is None:
    return total
  if subset <= 0:
    raise UserError(f'data.{name} must be positive, got {subset}: fix --config.data.{name}')
  return min(subset, total)


def _split_size(builder, split: str) -> int:
  try:
    return builder.info.splits[split].num_examples
  except KeyError:  # tfds.testing.mock_data leaves info.splits empty: count by reading
    ds = builder.as_dataset(split=split)
    return int(ds.reduce(np.int64(0), lambda n, _: n + 1))


def _share_bounds(n: int, index: int, count: int) -> tuple[int, int]:
  """[start, end) of share `index` of `count`, as tfds.even_splits(drop_remainder=False)."""
  per, extra = divmod(n, count)
  start = per * index + min(index, extra)
  return start, start + per + (1 if index < extra else 0)


def _read_share(builder, spec: datasets.DatasetSpec, split: str, n: int, *, index: int,
                count: int) -> _Share:
  """Reads this process's share of the first `n` examples of `split` into memory."""
  start, end = _share_bounds(n, index, count)
  sub = tfds.split_for_jax_process(f'{split}[:{n}]', process_index=index, process_count=count)
  # One file at a time, in order: ids are then positions in the split.
  read_config = tfds.ReadConfig(interleave_cycle_length=1)
  ds = builder.as_dataset(split=sub, shuffle_files=False, read_config=read_config)
  ds = ds.take(end - start)  # mock_data ignores slicing and yields num_examples each time
  ds = ds.map(lambda ex: (ex['image'], ex['label']), num_parallel_calls=tf.data.AUTOTUNE)
  images, labels = [np.zeros((0,) + spec.image_shape, np.uint8)], [np.zeros((0,), np.int32)]
  for x, y in ds.batch(_READ_BATCH).as_numpy_iterator():
    if x.shape[1:] != spec.image_shape:
      raise ValueError(f'{spec.tfds_name}: images of shape {x.shape[1:]}, expected '
                       f'{spec.image_shape}')
    images.append(x)
    labels.append(y.astype(np.int32))
  images, labels = np.concatenate(images), np.concatenate(labels)
  if len(labels) != end - start:
    raise ValueError(f'{spec.tfds_name} {split}: read {len(labels)} examples, '
                     f'expected {end - start}')
  return _Share(images, labels, np.arange(start, end, dtype=np.int32))


def _pad(share: _Share, size: int) -> _PaddedShare:
  """Pads a share with zero images to `size` examples; mask marks the real ones."""
  n = len(share.labels)
  images = np.zeros((size,) + share.images.shape[1:], np.uint8)
  images[:n] = share.images
  labels = np.zeros((size,), np.int32)
  labels[:n] = share.labels
  return _PaddedShare(images, labels, np.arange(size) < n)
