"""Small fake datasets written in their original on-disk formats (no downloads)."""
import gzip
import os
import struct

import numpy as np

from aikd_jax.data.builders import fashion_mnist_local


def write_idx(path: str, array: np.ndarray) -> None:
  """Writes `array` (uint8) as a gzipped IDX file, the format of the original MNIST files."""
  header = struct.pack('>BBBB', 0, 0, 0x08, array.ndim) + struct.pack(f'>{array.ndim}i',
                                                                       *array.shape)
  with gzip.open(path, 'wb') as f:
    f.write(header + array.astype(np.uint8).tobytes())


def write_fashion_files(folder: str, n_train: int, n_test: int, seed: int = 0) -> dict:
  """Random Fashion-MNIST-shaped IDX files; returns {split: (images [n,28,28], labels)}."""
  rng = np.random.default_rng(seed)
  data = {}
  for split, n in (('train', n_train), ('test', n_test)):
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, (n,), dtype=np.uint8)
    images_name, labels_name = fashion_mnist_local.FILES[split]
    write_idx(os.path.join(folder, images_name), images)
    write_idx(os.path.join(folder, labels_name), labels)
    data[split] = (images, labels)
  return data
