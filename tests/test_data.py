"""Data package: registry, Fashion-MNIST builder, augmentation, Pipeline (all offline)."""
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from aikd_jax.data import augment
from aikd_jax.data import datasets
from aikd_jax.data import pipeline
from aikd_jax.data.builders import fashion_mnist_local
from aikd_jax.errors import UserError
from configs import default
from tests import fakes

N_TRAIN, N_TEST = 50, 30


def _config(name='cifar100', tfds_dir=None, batch_size=8, eval_batch_size=6, **data):
  c = default.get_config()
  c.data.name = name
  c.data.tfds_dir = tfds_dir
  c.batch_size = batch_size
  c.eval_batch_size = eval_batch_size
  for k, v in data.items():
    c.data[k] = v
  return c


def _as_set(images, labels):
  """Multiset of (image bytes, label), order-free."""
  return sorted((np.asarray(x, np.uint8).tobytes(), int(y)) for x, y in zip(images, labels))


def _denormalize(images, spec):
  return np.rint((images * np.array(spec.std) + np.array(spec.mean)) * 255).astype(np.uint8)


@pytest.fixture(scope='module')
def fashion(tmp_path_factory):
  """(manual_dir, tfds_dir, {split: (images [n,28,28], labels)}), prepared once."""
  root = tmp_path_factory.mktemp('fashion')
  manual = root / 'idx'
  manual.mkdir()
  data = fakes.write_fashion_files(str(manual), N_TRAIN, N_TEST)
  tfds_dir = str(root / 'tfds')
  pipeline.Pipeline(_config('fashion_mnist', tfds_dir, manual_dir=str(manual)))  # prepares
  return str(manual), tfds_dir, data


def _fashion_pipeline(fashion, **kwargs):
  manual, tfds_dir, _ = fashion
  process = {k: kwargs.pop(k) for k in ('process_index', 'process_count') if k in kwargs}
  return pipeline.Pipeline(_config('fashion_mnist', tfds_dir, manual_dir=manual, **kwargs),
                           **process)


def test_registry():
  spec = datasets.get('cifar100')
  assert (spec.num_classes, spec.image_shape, spec.train_augment) == (100, (32, 32, 3),
                                                                     'crop_flip')
  assert datasets.get('fashion_mnist').image_shape == (28, 28, 1)
  with pytest.raises(UserError, match='cifar100.*fashion_mnist'):
    datasets.get('mnist')


def test_cifar100_mock(tmp_path):
  with tfds.testing.mock_data(num_examples=20):
    p = pipeline.Pipeline(_config(tfds_dir=str(tmp_path / 'none')))
    train = list(p.train_batches(0))
    evals = list(p.eval_batches())
  assert (p.num_classes, p.image_shape) == (100, (32, 32, 3))
  assert (p.num_train_examples, p.num_eval_examples, p.steps_per_epoch) == (20, 20, 2)
  assert len(train) == 2
  lo = (0 - max(p.spec.mean)) / min(p.spec.std)
  hi = (1 - min(p.spec.mean)) / min(p.spec.std)
  for b in train:
    assert b['image'].shape == (8, 32, 32, 3) and b['image'].dtype == np.float32
    assert lo - 1e-5 <= b['image'].min() and b['image'].max() <= hi + 1e-5
    assert b['label'].dtype == np.int32 and b['id'].dtype == np.int32
    assert ((0 <= b['label']) & (b['label'] < 100)).all()
  ids = np.concatenate([b['id'] for b in train])
  assert len(set(ids.tolist())) == 16 and ids.min() >= 0 and ids.max() < 20
  assert len(evals) == 4  # 20 examples in batches of 6, the last padded
  assert [b['image'].shape for b in evals] == [(6, 32, 32, 3)] * 4
  assert sum(b['mask'].sum() for b in evals) == 20 and not evals[-1]['mask'][2:].any()


def test_read_idx_and_builder_round_trip(fashion):
  manual, tfds_dir, data = fashion
  images, labels = data['test']
  np.testing.assert_array_equal(
      fashion_mnist_local.read_idx(os.path.join(manual, 't10k-images-idx3-ubyte.gz')), images)
  for split, (images, labels) in data.items():
    ds = tfds.load('fashion_mnist_local', split=split, data_dir=tfds_dir, download=False)
    read = list(tfds.as_numpy(ds))
    assert read[0]['image'].shape == (28, 28, 1) and read[0]['image'].dtype == np.uint8
    got = _as_set([r['image'][..., 0] for r in read], [r['label'] for r in read])
    assert got == _as_set(images, labels)


def test_pipeline_eval_round_trip(fashion):
  p = _fashion_pipeline(fashion, eval_batch_size=8)
  assert (p.num_train_examples, p.num_eval_examples, p.steps_per_epoch) == (N_TRAIN, N_TEST, 6)
  batches = list(p.eval_batches())
  images = np.concatenate([b['image'] for b in batches])
  mask = np.concatenate([b['mask'] for b in batches])
  labels = np.concatenate([b['label'] for b in batches])
  assert len(batches) == 4 and mask.sum() == N_TEST and mask[:N_TEST].all()
  got = _as_set(_denormalize(images[mask], p.spec)[..., 0], labels[mask])
  assert got == _as_set(*fashion[2]['test'])


def _is_crop_flip(view, image, pad):
  padded = np.pad(image, [(pad, pad), (pad, pad), (0, 0)])
  h, w = image.shape[:2]
  for y in range(2 * pad + 1):
    for x in range(2 * pad + 1):
      window = padded[y:y + h, x:x + w]
      if np.array_equal(view, window):
        return (y, x, False)
      if np.array_equal(view, window[:, ::-1]):
        return (y, x, True)
  return None


def test_crop_flip_is_a_crop_and_flip():
  image = np.random.default_rng(0).integers(1, 256, (12, 10, 3), dtype=np.uint8)
  found = set()
  for i in range(40):
    seed = augment.example_seed(0, 0, i)
    view = augment.crop_flip(image, seed).numpy()
    assert view.shape == image.shape and view.dtype == np.uint8
    np.testing.assert_array_equal(view, augment.crop_flip(image, seed).numpy())
    where = _is_crop_flip(view, image, augment.PAD)
    assert where is not None
    found.add(where)
  assert {f for _, _, f in found} == {False, True}  # both flipped and unflipped views
  assert len({(y, x) for y, x, _ in found}) > 10  # many offsets
  assert not np.array_equal(augment.example_seed(0, 1, 3), augment.example_seed(0, 0, 3))


def test_train_determinism_and_resume(fashion):
  first = list(_fashion_pipeline(fashion).train_batches(0))
  again = list(_fashion_pipeline(fashion).train_batches(0))
  assert len(first) == 6
  for a, b in zip(first, again):
    for k in ('image', 'label', 'id'):
      np.testing.assert_array_equal(a[k], b[k])
  p = _fashion_pipeline(fashion)
  tail = list(p.train_batches(0, start_step=4))
  assert len(tail) == 2
  for a, b in zip(first[4:], tail):
    for k in ('image', 'label', 'id'):
      np.testing.assert_array_equal(a[k], b[k])
  ids0 = np.concatenate([b['id'] for b in first])
  ids1 = np.concatenate([b['id'] for b in p.train_batches(1)])
  assert not np.array_equal(ids0, ids1)
  assert list(p.train_batches(0, start_step=6)) == []


def test_train_ids_stable_across_process_counts(fashion):
  """Example id -> (augmented view, label) is the same with 1 and 2 processes."""
  def views(batches):
    return {int(i): (x, int(y)) for b in batches for x, y, i in zip(b['image'], b['label'],
                                                                  b['id'])}
  one = views(_fashion_pipeline(fashion, train_subset=48).train_batches(0))
  assert sorted(one) == list(range(48))
  two = {}
  for index in range(2):
    p = _fashion_pipeline(fashion, train_subset=48, process_index=index, process_count=2)
    assert (p.steps_per_epoch, p.local_batch_size) == (6, 4)
    batches = list(p.train_batches(0))
    assert len(batches) == 6 and all(len(b['id']) == 4 for b in batches)
    part = views(batches)
    assert not set(part) & set(two)
    two.update(part)
  assert sorted(two) == sorted(one)
  for i, (x, y) in one.items():
    np.testing.assert_array_equal(x, two[i][0])
    assert y == two[i][1]


@pytest.mark.parametrize('eval_subset, batches', [(None, 4), (29, 4)])
def test_eval_two_processes_cover_test_set_once(fashion, eval_subset, batches):
  """Shares of 15+15 (or 15+14) examples in local batches of 4: each example once."""
  examples, counts = [], []
  for index in range(2):
    p = _fashion_pipeline(fashion, eval_batch_size=8, eval_subset=eval_subset,
                          process_index=index, process_count=2)
    assert p.local_eval_batch_size == 4
    got = list(p.eval_batches())
    counts.append(len(got))
    for b in got:
      assert b['image'].shape == (4, 28, 28, 1)
      examples += _as_set(_denormalize(b['image'][b['mask']], p.spec)[..., 0],
                          b['label'][b['mask']])
  assert counts == [batches, batches]
  full = _as_set(*fashion[2]['test'])
  if eval_subset is None:
    assert sorted(examples) == full
  else:  # the first 29 in TFDS's order, which is not the IDX order
    assert len(examples) == len(set(examples)) == 29 and set(examples) <= set(full)


def test_missing_dataset_error(tmp_path):
  with pytest.raises(UserError, match=r'cifar100.*none.*tfds build cifar100.*tfds_dir'):
    pipeline.Pipeline(_config(tfds_dir=str(tmp_path / 'none')))


def test_missing_idx_files_error(tmp_path):
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(UserError, match=r'not found in .*empty: .*dataset-fashion-mnist'):
    pipeline.Pipeline(_config('fashion_mnist', str(tmp_path / 'tfds'), manual_dir=str(empty)))


def test_batch_not_divisible_by_processes(fashion):
  with pytest.raises(UserError, match='batch_size 6 must be a positive multiple of the 4'):
    _fashion_pipeline(fashion, batch_size=8, eval_batch_size=6, process_count=4,
                      process_index=0)
