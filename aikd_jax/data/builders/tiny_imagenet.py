"""TFDS builder `tiny_imagenet`: Tiny-ImageNet-200 from the original zip (manual download).

TFDS has no Tiny-ImageNet. This builder reads `tiny-imagenet-200.zip` directly
(or the `tiny-imagenet-200/` folder it extracts to) from the manual dir:

- train: `train/<wnid>/images/<wnid>_<i>.JPEG`, 500 per class, 100,000 images;
- validation: `val/images/val_<i>.JPEG`, labelled by `val/val_annotations.txt`
  (tab separated: file, wnid, bbox), 10,000 images. The papers call it the test set.
  The official test images have no labels and are skipped.

Images stay 64x64 JPEGs, byte for byte (the few grey ones are converted to RGB);
training downsamples them to 32x32 as CS-KD and Zipf's LS do. Labels index the
sorted wnids (torchvision ImageFolder's order); the class names are the wnids.

Prepare once (or let training do it on first use):

  python -m aikd_jax.data.builders tiny_imagenet --manual_dir=DIR [--data_dir=TFDS_DIR]
"""
from absl import logging
import tensorflow_datasets as tfds

from aikd_jax.data.builders import manual

NUM_CLASSES = 200
SPLIT_SIZES = {'train': 100_000, 'validation': 10_000}  # the official archive
IMAGE_SIZE = 64
DOWNLOAD = manual.Download(
    dataset='Tiny-ImageNet', file_name='tiny-imagenet-200.zip',
    url='http://cs231n.stanford.edu/tiny-imagenet-200.zip', roots=('tiny-imagenet-200',))


class TinyImagenet(tfds.core.GeneratorBasedBuilder):
  """Tiny-ImageNet-200: 64x64 RGB JPEGs, 200 classes, 100,000 train / 10,000 validation."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = manual.instructions(
      [DOWNLOAD], 'tiny_imagenet',
      'The zip is read as it is; its extracted folder tiny-imagenet-200/ works too.')

  @classmethod
  def check_manual_dir(cls, manual_dir: str) -> None:
    """Called by the pipeline before preparing: fails with one clear line if files are missing."""
    manual.check_files(manual_dir, [DOWNLOAD])

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=('Tiny-ImageNet-200 (cs231n): 64x64 images of 200 ImageNet classes, '
                     'read from the original zip. Labels index the sorted wnids.'),
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
                                         encoding_format='jpeg'),
            'label': tfds.features.ClassLabel(),  # names (the wnids) are set when preparing
        }),
        supervised_keys=('image', 'label'),
        homepage='http://cs231n.stanford.edu/',
    )

  def _split_generators(self, dl_manager):
    manual_dir = str(dl_manager.manual_dir)
    self.check_manual_dir(manual_dir)
    source = manual.open_source(manual_dir, DOWNLOAD)
    wnids = sorted(manual.read_text(source, 'wnids.txt'))
    self.info.features['label'].names = wnids
    known = set(wnids)
    train = [(p, p.split('/')[1]) for p in source.names()
             if p.startswith('train/') and p.split('/')[2:3] == ['images']
             and p.lower().endswith('.jpeg') and p.split('/')[1] in known]
    if not train:
      raise source.bad('no train/<wnid>/images/*.JPEG for the classes of wnids.txt (not the '
                       'official archive)')
    val = []
    for line in manual.read_text(source, 'val/val_annotations.txt'):
      fields = line.split('\t')
      if len(fields) < 2 or fields[1] not in known:
        raise source.bad(f'val/val_annotations.txt line {line[:60]!r} does not name a wnid of '
                         'wnids.txt (not the official archive)')
      val.append((f'val/images/{fields[0]}', fields[1]))
    _warn_if_unusual(len(wnids), {'train': len(train), 'validation': len(val)})
    return {'train': self._generate_examples(source, train),
            'validation': self._generate_examples(source, val)}

  def _generate_examples(self, source: manual.Source, files: list[tuple[str, str]]):
    """Yields (file stem, example); `files` holds (path, wnid)."""
    wnid_of = dict(files)

    def encode(item):
      path, data = item
      jpeg, shape = source.image(data, path)
      if shape != (IMAGE_SIZE, IMAGE_SIZE):
        raise source.bad(f'member {path} is {shape[0]}x{shape[1]}, expected '
                         f'{IMAGE_SIZE}x{IMAGE_SIZE} (not the official archive)')
      key = path.rsplit('/', 1)[-1].rsplit('.', 1)[0]  # n01443537_0, val_0
      return key, {'image': jpeg, 'label': wnid_of[path]}

    yield from manual.parallel_map(encode, source.read_many(p for p, _ in files))


def _warn_if_unusual(num_classes: int, sizes: dict[str, int]) -> None:
  if num_classes != NUM_CLASSES or sizes != SPLIT_SIZES:
    logging.warning('Tiny-ImageNet: %d classes and split sizes %s; the official archive has '
                    '%d and %s', num_classes, sizes, NUM_CLASSES, SPLIT_SIZES)
