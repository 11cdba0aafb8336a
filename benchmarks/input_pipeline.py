"""Measures the host input pipeline (`Pipeline.train_batches`, full augmentation) in images/s.

  python benchmarks/input_pipeline.py --consume_images_per_s=1000,300

Builds two temporary TFDS datasets with a small in-benchmark builder (no data
needed, nothing downloaded):
  * px32: 32x32 images, held decoded in memory, 'crop_flip' (CIFAR-100's recipe);
  * px224: 500x375 random-but-smooth photos-like images stored as JPEG
    (quality 90, like CUB / Stanford Dogs), streamed: encoded bytes in memory,
    decoded in the map, 'random_resized_crop_flip' to 224 (the fine-grained recipe).
For each, it times at least `--batches` batches and `--min_seconds` after
one warm-up batch, with a private
tf.data pool of 1 thread and of all cores, and prints images/s, ms per batch,
and how many host cores would feed a train step consuming
`--consume_images_per_s` images per second (one value per dataset), from the
1-thread rate. The 224-px dataset is also timed for `eval_batches`
(Resize(256) + CenterCrop(224)) with all cores.
"""
import io
import json
import math
import os
import shutil
import sys
import tempfile
import time

from absl import app, flags
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from aikd_jax import console  # pylint: disable=g-import-not-at-top
from aikd_jax.data import datasets, pipeline  # pylint: disable=g-import-not-at-top
from configs import default  # pylint: disable=g-import-not-at-top

_CONSUME = flags.DEFINE_list('consume_images_per_s', ['1000', '300'],
                             'Train-step consumption rate (images/s) for px32 and px224.')
_NUM = flags.DEFINE_list('num_images', ['4096', '512'], 'Train images of px32 and px224.')
_BATCH = flags.DEFINE_list('batch', ['128', '64'], 'Batch size for px32 and px224.')
_BATCHES = flags.DEFINE_integer('batches', 8, 'Fewest timed batches per measurement.')
_MIN_SECONDS = flags.DEFINE_float('min_seconds', 3.0, 'Shortest timed span per measurement.')
_PAIRED = flags.DEFINE_bool('paired', False, 'Also time CS-KD paired batches (2x images).')
_THREADS = flags.DEFINE_list('threads', [], 'tf.data pool sizes to time; default 1 and all cores.')
_JSON_OUT = flags.DEFINE_string('json_out', None, 'Also write the table rows to this JSON file.')

_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_NUM_CLASSES = 10
_TEST_IMAGES = 128


def _photo_like(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """A smooth random uint8 image with some texture, compressing like a photo."""
  coarse = rng.uniform(0, 255, (1, max(height // 32, 2), max(width // 32, 2), 3))
  image = tf.image.resize(coarse.astype(np.float32), [height, width], 'bicubic')[0].numpy()
  mid = rng.normal(0, 12, (1, height // 4, width // 4, 3)).astype(np.float32)
  image += tf.image.resize(mid, [height, width], 'bilinear')[0].numpy()
  image += rng.normal(0, 3, image.shape)
  return np.clip(image, 0, 255).astype(np.uint8)


class InputBenchImages(tfds.core.GeneratorBasedBuilder):
  """Random photo-like images: 'px32' (32x32) or 'px224' (500x375 JPEG, quality 90)."""

  VERSION = tfds.core.Version('1.0.0')
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name='px32'),
                     tfds.core.BuilderConfig(name='px224')]

  def _info(self):
    shape = (32, 32, 3) if self.builder_config.name == 'px32' else (None, None, 3)
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=shape, encoding_format='jpeg'),
            'label': tfds.features.ClassLabel(num_classes=_NUM_CLASSES),
        }),
        supervised_keys=('image', 'label'))

  def _split_generators(self, dl_manager):
    del dl_manager
    n = int(_NUM.value[0 if self.builder_config.name == 'px32' else 1])
    return {'train': self._generate_examples(n, 0),
            'test': self._generate_examples(_TEST_IMAGES, 1)}

  def _generate_examples(self, n, seed):
    rng = np.random.default_rng(seed)
    for i in range(n):
      if self.builder_config.name == 'px32':
        yield i, {'image': _photo_like(rng, 32, 32), 'label': i % _NUM_CLASSES}
      else:
        jpeg = tf.io.encode_jpeg(_photo_like(rng, 375, 500), quality=90).numpy()
        yield i, {'image': io.BytesIO(jpeg), 'label': i % _NUM_CLASSES}


def _spec(px: int) -> datasets.DatasetSpec:
  common = dict(train_split='train', test_split='test', num_classes=_NUM_CLASSES, channels=3,
                mean=_IMAGENET_MEAN, std=_IMAGENET_STD)
  if px == 32:
    return datasets.DatasetSpec(name='px32', tfds_name='input_bench_images/px32',
                                image_size=32, train_augment='crop_flip', **common)
  return datasets.DatasetSpec(name='px224', tfds_name='input_bench_images/px224',
                              image_size=224, train_augment='random_resized_crop_flip',
                              eval_preprocess='resize_center_crop', resize_size=256,
                              in_memory=False, **common)


def _config(tfds_dir: str, batch: int):
  c = default.get_config()
  c.data.tfds_dir = tfds_dir
  c.batch_size = c.eval_batch_size = batch
  return c


def _time(batches_fn, n: int) -> tuple[float, int, int]:
  """(seconds, images, batches) over >= n batches and >= --min_seconds, after a warm-up batch.

  Cycles epochs if needed; CS-KD partners count as images.
  """
  done, images, start, epoch = -1, 0, None, 0
  while True:
    for batch in batches_fn(epoch):
      if done < 0:
        start = time.perf_counter()  # after the warm-up batch (tracing, autotuning start)
      else:
        images += len(batch['label']) * (2 if 'pair_image' in batch else 1)
      done += 1
      secs = time.perf_counter() - start
      if done >= n and secs >= _MIN_SECONDS.value:
        return secs, images, done
    epoch += 1


def _measure(px: int, tfds_dir: str, batch: int, consume: float, threads: list[int]) -> list:
  """Table rows for one dataset."""
  spec, config = _spec(px), _config(tfds_dir, batch)
  rows = []
  for t in threads:
    t0 = time.perf_counter()
    p = pipeline.Pipeline(config, spec=spec, process_index=0, process_count=1, threads=t)
    if t == threads[0]:
      print(f'{spec.name}: {p.num_train_examples} train images, '
            f'{p.train_share_bytes / 1e6:.1f} MB in memory '
            f'({"decoded" if spec.in_memory else "encoded"}), read in '
            f'{time.perf_counter() - t0:.1f} s')
    for mode, paired in [('train', False)] + ([('train paired', True)] if _PAIRED.value else []):
      secs, images, n = _time(lambda e, paired=paired: p.train_batches(e, paired=paired),
                              _BATCHES.value)
      rows.append((spec.name, px, mode, t, images / secs, 1000 * secs / n))
    if not spec.in_memory and t == threads[-1]:
      secs, images, n = _time(lambda e: p.eval_batches(), _BATCHES.value)
      rows.append((spec.name, px, 'eval', t, images / secs, 1000 * secs / n))
  per_core = next(r[4] for r in rows if r[2] == 'train' and r[3] == threads[0]) / threads[0]
  print(f'{spec.name}: to feed {consume:.0f} images/s: ~{math.ceil(consume / per_core)} '
        f'host cores at {per_core:.0f} images/s per core (measured with {threads[0]} '
        'thread(s))')
  return rows


def main(argv):
  del argv
  console.hide_gpus_from_tf()
  cores = os.cpu_count()
  threads = sorted({int(t) for t in _THREADS.value} or {1, cores})
  print(f'host: {cores} cores (os.cpu_count), TF inter-op threads '
        f'{tf.config.threading.get_inter_op_parallelism_threads() or "default"}; '
        f'timing tf.data pools of {threads} threads')
  root = tempfile.mkdtemp(prefix='input_bench_')
  try:
    rows = []
    for i, px in enumerate((32, 224)):
      t0 = time.perf_counter()
      builder = tfds.builder(_spec(px).tfds_name, data_dir=root)
      builder.download_and_prepare()
      size = sum(os.path.getsize(os.path.join(d, f))
                 for d, _, fs in os.walk(builder.data_dir) for f in fs)
      print(f'built {_spec(px).tfds_name} in {time.perf_counter() - t0:.1f} s '
            f'({size / 1e6:.1f} MB on disk)')
      rows += _measure(px, root, int(_BATCH.value[i]), float(_CONSUME.value[i]), threads)
  finally:
    shutil.rmtree(root, ignore_errors=True)
  print(f'\n{"dataset":8} {"px":>4} {"mode":13} {"threads":>7} {"images/s":>9} '
        f'{"ms/batch":>9}')
  for name, px, mode, t, rate, ms in rows:
    print(f'{name:8} {px:4d} {mode:13} {t:7d} {rate:9.0f} {ms:9.1f}')
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, 'w') as f:
      json.dump([dict(zip(('dataset', 'px', 'mode', 'threads', 'images_per_s', 'ms_per_batch'),
                          row)) for row in rows], f, indent=2)


if __name__ == '__main__':
  app.run(main)
