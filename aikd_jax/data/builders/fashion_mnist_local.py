"""TFDS builder `fashion_mnist_local`: Fashion-MNIST from the original IDX files on disk.

TFDS's own `fashion_mnist` builder downloads the files, so it fails offline.
This one reads the four gzipped IDX files from a local folder (the manual dir;
Debian's package `dataset-fashion-mnist` installs them in
/usr/share/datasets/fashion-mnist) and prepares in seconds, so the pipeline
prepares it automatically on first use.
"""
import gzip
import os

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from aikd_jax.errors import DataError

DEFAULT_MANUAL_DIR = '/usr/share/datasets/fashion-mnist'
FILES = {
    'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
    'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'),
}
LABEL_NAMES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt',
               'Sneaker', 'Bag', 'Ankle boot')
_IDX_UBYTE = 0x08  # the only IDX element type Fashion-MNIST uses


def read_idx(path: str) -> np.ndarray:
  """Reads an IDX file of unsigned bytes (gzipped if the name ends in .gz).

  The format: two zero bytes, the element type, the number of dimensions n,
  n big-endian int32 sizes, then the data in C order.
  """
  path = os.fspath(path)
  try:
    with epath.Path(path).open('rb') as raw:  # a local file or gs://...
      if path.endswith('.gz'):
        with gzip.open(raw, 'rb') as f:
          data = f.read()
      else:
        data = raw.read()
  except (OSError, EOFError) as e:
    raise DataError(f'Fashion-MNIST: {path} is truncated or damaged ({e}); {_FIX}') from None
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != _IDX_UBYTE:
    raise DataError(f'Fashion-MNIST: {path} is not an IDX file of unsigned bytes; {_FIX}')
  ndim = data[3]
  shape = tuple(int(d) for d in np.frombuffer(data, '>i4', count=ndim, offset=4))
  values = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
  if values.size != int(np.prod(shape)):
    raise DataError(f'Fashion-MNIST: {path}: header says shape {shape} but holds '
                    f'{values.size} bytes (truncated); {_FIX}')
  return values.reshape(shape)


_FIX = ('reinstall dataset-fashion-mnist (apt-get install --reinstall dataset-fashion-mnist) '
        'or download the file again')


def missing_message(manual_dir: str) -> str:
  return (f'Fashion-MNIST files not found in {manual_dir}: install Debian\'s package '
          'dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or set '
          '--config.data.manual_dir')


def check_files(manual_dir: str) -> None:
  """Raises DataError unless the four IDX files are in `manual_dir`."""
  for names in FILES.values():
    for name in names:
      if not epath.Path(manual_dir, name).is_file():
        raise DataError(missing_message(manual_dir))


class FashionMnistLocal(tfds.core.GeneratorBasedBuilder):
  """Fashion-MNIST (60,000 train / 10,000 test, 28x28 grey, 10 classes) from local IDX files."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Put the four original gzipped IDX files (train-images-idx3-ubyte.gz, '
      'train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) '
      f'in the manual dir, e.g. `apt-get install dataset-fashion-mnist` ({DEFAULT_MANUAL_DIR}).')

  @classmethod
  def check_manual_dir(cls, manual_dir: str) -> None:
    """Called by the pipeline before preparing: fails with a clear line if files are missing."""
    check_files(manual_dir)

  def _info(self) -> tfds.core.DatasetInfo:
    # A plain DatasetInfo works whether or not the builder sits in a package
    # (dataset_info_from_configs needs a package with metadata files).
    return tfds.core.DatasetInfo(
        builder=self,
        description='Fashion-MNIST read from the original IDX files in a local folder.',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(28, 28, 1)),
            'label': tfds.features.ClassLabel(names=LABEL_NAMES),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://github.com/zalandoresearch/fashion-mnist',
    )

  def _split_generators(self, dl_manager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    check_files(manual_dir)
    return {
        split: self._generate_examples(os.path.join(manual_dir, images),
                                       os.path.join(manual_dir, labels))
        for split, (images, labels) in FILES.items()
    }

  def _generate_examples(self, images_path: str, labels_path: str):
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
      raise DataError(f'Fashion-MNIST: {images_path} and {labels_path} do not hold matching '
                      f'28x28 images and labels (shapes {images.shape} and {labels.shape}); '
                      f'{_FIX}')
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {'image': image[..., None], 'label': int(label)}
