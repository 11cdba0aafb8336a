"""Data package: registry, Fashion-MNIST builder, augmentation, Pipeline (all offline)."""
import os

import numpy as np
import pytest
import tensorflow as tf
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


@pytest.mark.parametrize('n,count,bounds', [
    (11, 3, [(0, 4), (4, 8), (8, 11)]),  # the larger shares first
    (12, 4, [(0, 3), (3, 6), (6, 9), (9, 12)]),
    (2, 4, [(0, 1), (1, 2), (2, 2), (2, 2)]),  # more processes than examples
    (5, 1, [(0, 5)]),
])
def test_split_shares_are_tfds_even_splits(n, count, bounds):
  share = pipeline._split_share  # pylint: disable=protected-access
  shares = [share('test', n, i, count) for i in range(count)]
  assert [(s.start, s.end) for s in shares] == bounds
  assert [s.size for s in shares] == [b - a for a, b in bounds]
  assert shares[-1].sub == tfds.split_for_jax_process(f'test[:{n}]', process_index=count - 1,
                                                      process_count=count)


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
  with pytest.raises(UserError, match=r'cifar100.*none.*aikd_jax.data.builders cifar100.*tfds_dir'):
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


# -- streamed (encoded JPEG) datasets, random-resized crop, centre crop, CS-KD pairs -------
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
JPEG_CLASSES, JPEG_TRAIN, JPEG_TEST = 4, 40, 21


def _smooth_image(rng, height, width):
  """A random but smooth uint8 image (JPEG-friendly, like a photo)."""
  coarse = rng.uniform(0, 255, (1, 4, 5, 3)).astype(np.float32)
  image = tf.image.resize(coarse, [height, width], 'bilinear')[0]
  return np.clip(image.numpy() + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)


class JpegFakeTest(tfds.core.GeneratorBasedBuilder):
  """JPEG images of random sizes in 4 classes, like a tiny fine-grained dataset."""

  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
            'label': tfds.features.ClassLabel(num_classes=JPEG_CLASSES),
        }),
        supervised_keys=('image', 'label'))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(JPEG_TRAIN, 0),
            'test': self._generate_examples(JPEG_TEST, 1)}

  def _generate_examples(self, n, seed):
    rng = np.random.default_rng(seed)
    for i in range(n):
      height, width = rng.integers(24, 90, 2)
      yield i, {'image': _smooth_image(rng, height, width), 'label': int(rng.integers(4))}


def _fine_grained_spec(tfds_name, num_classes, image_size=224, resize_size=256):
  """A 224-px fine-grained spec as registered for CUB / Stanford Dogs (streamed)."""
  return datasets.DatasetSpec(
      name=f'{tfds_name}_test', tfds_name=tfds_name, train_split='train', test_split='test',
      num_classes=num_classes, image_size=image_size, channels=3, mean=IMAGENET_MEAN,
      std=IMAGENET_STD, train_augment='random_resized_crop_flip',
      eval_preprocess='resize_center_crop', resize_size=resize_size, in_memory=False)


JPEG_SPEC = _fine_grained_spec('jpeg_fake_test', JPEG_CLASSES, image_size=32, resize_size=40)


@pytest.fixture(scope='module')
def jpeg_dir(tmp_path_factory):
  """TFDS data_dir holding the prepared `jpeg_fake_test` dataset."""
  root = str(tmp_path_factory.mktemp('jpeg_tfds'))
  tfds.builder('jpeg_fake_test', data_dir=root).download_and_prepare()
  return root


def _jpeg_pipeline(jpeg_dir, **kwargs):
  process = {k: kwargs.pop(k) for k in ('process_index', 'process_count') if k in kwargs}
  return pipeline.Pipeline(_config('jpeg_fake_test', jpeg_dir, **kwargs), spec=JPEG_SPEC,
                           **process)


def _split_in_order(tfds_dir, split):
  """[(encoded bytes, label)] of a split in TFDS's order, i.e. indexed by example id."""
  ds = tfds.builder('jpeg_fake_test', data_dir=tfds_dir).as_dataset(
      split=split, shuffle_files=False, decoders={'image': tfds.decode.SkipDecoding()},
      read_config=tfds.ReadConfig(interleave_cycle_length=1))
  return [(ex['image'], int(ex['label'])) for ex in tfds.as_numpy(ds)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def _assert_normalised(images, spec):
  lo = (0 - max(spec.mean)) / min(spec.std)
  hi = (1 - min(spec.mean)) / min(spec.std)
  assert lo - 1e-4 <= images.min() and images.max() <= hi + 1e-4
  assert images.std() > 0.05  # not all padding


@pytest.mark.parametrize('name, num_classes', [('cub200', 200), ('stanford_dogs', 120)])
def test_fine_grained_mock_224(tmp_path, name, num_classes):
  """Mock images of random sizes (PNG-encoded) -> [b,224,224,3] train and eval batches."""
  with tfds.testing.mock_data(num_examples=8):
    p = pipeline.Pipeline(_config(name, str(tmp_path / 'none'), batch_size=4,
                                  eval_batch_size=6))
    train = list(p.train_batches(0, paired=True))
    evals = list(p.eval_batches())
  spec = p.spec
  assert (spec.in_memory, spec.train_augment, spec.eval_preprocess) == (
      False, 'random_resized_crop_flip', 'resize_center_crop')
  assert (p.image_shape, p.steps_per_epoch, p.num_eval_batches) == ((224, 224, 3), 2, 2)
  assert len(train) == 2
  for b in train:
    for key in ('image', 'pair_image'):
      assert b[key].shape == (4, 224, 224, 3) and b[key].dtype == np.float32
      _assert_normalised(b[key], spec)
    assert ((0 <= b['label']) & (b['label'] < num_classes)).all()
    np.testing.assert_array_equal(b['pair_label'], b['label'])
  ids = np.concatenate([b['id'] for b in train])
  assert sorted(set(ids.tolist())) == sorted(ids.tolist()) and 0 <= ids.min() and ids.max() < 8
  assert [b['image'].shape for b in evals] == [(6, 224, 224, 3)] * 2
  _assert_normalised(evals[0]['image'], spec)
  assert [b['mask'].sum() for b in evals] == [6, 2]


def _boxes(height, width, n):
  """n random-resized-crop boxes (top, left, h, w) of a height x width image."""
  fn = tf.function(lambda: tf.map_fn(
      lambda i: augment.random_resized_crop_box(height, width, augment.example_seed(0, 0, i)),
      tf.range(n)))
  return fn().numpy()


def test_random_resized_crop_box_matches_torchvision_ranges():
  boxes = _boxes(400, 400, 2000)
  top, left, h, w = boxes.T
  assert (top >= 0).all() and (left >= 0).all()
  assert (top + h <= 400).all() and (left + w <= 400).all()
  area, aspect = h * w / 400**2, w / h
  assert area.min() >= 0.08 * 0.98 and area.max() <= 1
  assert area.min() < 0.1 and area.max() > 0.95 and 0.4 < np.median(area) < 0.6
  assert aspect.min() >= 0.75 * 0.99 and aspect.max() <= 4 / 3 * 1.01
  assert aspect.min() < 0.78 and aspect.max() > 1.28
  assert abs(np.log(aspect).mean()) < 0.02  # log-uniform: symmetric around 1
  assert len({(t, l) for t, l, _, _ in boxes}) > 1000  # corners spread
  # Wide photos: boxes still inside and in range.
  top, left, h, w = _boxes(375, 500, 500).T
  assert (top + h <= 375).all() and (left + w <= 500).all()
  assert (h * w / (375 * 500) >= 0.08 * 0.98).all() and ((w / h) <= 4 / 3 * 1.01).all()


def test_random_resized_crop_fallback_is_central():
  """No attempt fits a 10x200 strip: torchvision takes the central crop with ratio 4/3."""
  np.testing.assert_array_equal(_boxes(10, 200, 5), [[0, 93, 10, 13]] * 5)
  np.testing.assert_array_equal(_boxes(200, 10, 5), [[93, 0, 13, 10]] * 5)


def test_random_resized_crop_flip_views():
  rng = np.random.default_rng(0)
  image = _smooth_image(rng, 75, 100)
  jpeg, png = tf.io.encode_jpeg(image, quality=90), tf.io.encode_png(image)
  decoded = augment.decode(jpeg, 3)
  flips = set()
  for i in range(6):
    seed = augment.example_seed(0, 0, i)
    view = augment.random_resized_crop_flip(image, seed, 32).numpy()
    assert view.shape == (32, 32, 3) and view.dtype == np.float32
    np.testing.assert_array_equal(
        augment.random_resized_crop_flip_encoded(png, seed, 32, 3).numpy(), view)
    # JPEG: decoding only the crop window differs a little at its border (chroma).
    from_jpeg = augment.random_resized_crop_flip_encoded(jpeg, seed, 32, 3).numpy()
    full = augment.random_resized_crop_flip(decoded, seed, 32).numpy()
    assert np.abs(from_jpeg - full).mean() < 2
    crop_seed, _ = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    top, left, h, w = augment.random_resized_crop_box(75, 100, crop_seed).numpy()
    crop = augment.resize(image[top:top + h, left:left + w], 32, 32).numpy()
    flipped = np.array_equal(view, crop[:, ::-1])
    assert flipped or np.array_equal(view, crop)
    flips.add(flipped)
  assert flips == {False, True}


@pytest.mark.parametrize('height, width, top, left', [(300, 400, 16, 58), (400, 300, 58, 16),
                                                      (256, 256, 16, 16)])
def test_resize_center_crop_is_torchvision(height, width, top, left):
  """Resize(256) + CenterCrop(224) of a linear ramp: each pixel holds its source coordinate.

  A one-pixel shift of the crop would be off by more than 1; antialiased
  bilinear resizing keeps a ramp linear to within 0.1.
  """
  rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing='ij')
  ramp = np.stack([cols, rows, np.zeros_like(rows)], -1).astype(np.float32)
  view = augment.eval_view('resize_center_crop', ramp, 224, 256).numpy()
  assert view.shape == (224, 224, 3)
  short = min(height, width)
  new_h, new_w = (256, int(256 * width / height)) if height <= width else (
      int(256 * height / width), 256)
  assert (top, left) == (round((new_h - 224) / 2), round((new_w - 224) / 2))
  i = np.arange(224)
  expect_x = (left + i + 0.5) * width / new_w - 0.5
  expect_y = (top + i + 0.5) * height / new_h - 0.5
  np.testing.assert_allclose(view[0, :, 0], expect_x, atol=0.25)
  np.testing.assert_allclose(view[:, 0, 1], expect_y, atol=0.25)
  if short == 256:  # no resize: the exact pixels
    np.testing.assert_array_equal(view, ramp[top:top + 224, left:left + 224])


def test_streamed_train_determinism_resume_and_pairs(jpeg_dir):
  p = _jpeg_pipeline(jpeg_dir)
  assert p.steps_per_epoch == 5 and p.train_share_bytes > 0
  first = list(p.train_batches(0))
  _assert_batches_equal(first, list(_jpeg_pipeline(jpeg_dir).train_batches(0)))
  _assert_batches_equal(first[3:], list(p.train_batches(0, start_step=3)))
  for b in first:
    assert b['image'].shape == (8, 32, 32, 3) and b['image'].dtype == np.float32
    _assert_normalised(b['image'], p.spec)
  assert not np.array_equal(first[0]['image'], next(p.train_batches(1))['image'])
  labels = [y for _, y in _split_in_order(jpeg_dir, 'train')]
  for b in first:
    np.testing.assert_array_equal(b['label'], [labels[i] for i in b['id']])
  paired = list(p.train_batches(0, paired=True))
  _assert_batches_equal(paired[2:], list(p.train_batches(0, start_step=2, paired=True)))
  _assert_pairs(paired, first, labels)


def _assert_pairs(paired, unpaired, labels):
  """Anchors as without pairs; partners of the anchor's class, viewed independently."""
  partner_ids = []
  for b, a in zip(paired, unpaired):
    for k in ('image', 'label', 'id'):
      np.testing.assert_array_equal(b[k], a[k])
    np.testing.assert_array_equal(b['pair_label'], b['label'])
    np.testing.assert_array_equal(b['pair_label'], [labels[i] for i in b['pair_id']])
    assert b['pair_image'].shape == b['image'].shape
    same = b['pair_id'] == b['id']
    assert not np.array_equal(b['pair_image'][same], b['image'][same]) or not same.any()
    partner_ids += b['pair_id'].tolist()
  assert len(set(partner_ids)) > len(partner_ids) // 3  # drawn, not a fixed partner


def test_in_memory_pairs(fashion):
  p = _fashion_pipeline(fashion)
  paired = list(p.train_batches(2, paired=True))
  _assert_batches_equal(paired, list(_fashion_pipeline(fashion).train_batches(2, paired=True)))
  _assert_batches_equal(paired[4:], list(p.train_batches(2, start_step=4, paired=True)))
  ds = tfds.load('fashion_mnist_local', split='train', data_dir=fashion[1], download=False,
                 shuffle_files=False, read_config=tfds.ReadConfig(interleave_cycle_length=1))
  labels = [int(ex['label']) for ex in tfds.as_numpy(ds)]
  _assert_pairs(paired, list(p.train_batches(2)), labels)


def test_streamed_two_processes(jpeg_dir):
  """Eval: each test example exactly once (with its exact view); train: disjoint ids."""
  test = _split_in_order(jpeg_dir, 'test')
  expected = [augment.normalize(augment.eval_view(
      'resize_center_crop', augment.decode(x, 3), 32, 40), IMAGENET_MEAN, IMAGENET_STD).numpy()
              for x, _ in test]
  seen, train_ids = [], []
  for index in range(2):
    p = _jpeg_pipeline(jpeg_dir, eval_batch_size=8, process_index=index, process_count=2)
    assert (p.local_batch_size, p.num_eval_batches) == (4, 3)  # shares of 11 and 10
    for b in p.eval_batches():
      assert b['image'].shape == (4, 32, 32, 3)
      for image, label in zip(b['image'][b['mask']], b['label'][b['mask']]):
        match = [i for i, e in enumerate(expected)
                 if test[i][1] == label and np.allclose(e, image, atol=1e-5)]
        assert len(match) == 1
        seen.append(match[0])
    train_ids.append({int(i) for b in p.train_batches(0) for i in b['id']})
  assert sorted(seen) == list(range(JPEG_TEST))
  assert not train_ids[0] & train_ids[1] and len(train_ids[0] | train_ids[1]) == 40
