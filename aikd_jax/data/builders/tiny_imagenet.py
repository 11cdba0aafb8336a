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
from aikd_jax.data.builders import manual

NUM_CLASSES = 200
SPLIT_SIZES = {'train': 100_000, 'validation': 10_000}  # the official archive
IMAGE_SIZE = 64
DOWNLOAD = manual.Download(
    dataset='Tiny-ImageNet', file_name='tiny-imagenet-200.zip',
    url='http://cs231n.stanford.edu/tiny-imagenet-200.zip', roots=('tiny-imagenet-200',))


class TinyImagenet(manual.ManualBuilder):
  """Tiny-ImageNet-200: 64x64 RGB JPEGs, 200 classes, 100,000 train / 10,000 validation."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = manual.instructions(
      [DOWNLOAD], 'tiny_imagenet',
      'The zip is read as it is; its extracted folder tiny-imagenet-200/ works too.')
  DOWNLOADS = (DOWNLOAD,)
  NUM_CLASSES = NUM_CLASSES
  SPLIT_SIZES = SPLIT_SIZES
  DESCRIPTION = ('Tiny-ImageNet-200 (cs231n): 64x64 images of 200 ImageNet classes, '
                 'read from the original zip. Labels index the sorted wnids.')
  HOMEPAGE = 'http://cs231n.stanford.edu/'
  IMAGE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 3)

  def _read_lists(self, manual_dir: str):
    """Train: the JPEGs under train/<wnid>/images/; validation: val/val_annotations.txt."""
    source = manual.open_source(manual_dir, DOWNLOAD)
    wnids = sorted(manual.read_text(source, 'wnids.txt'))
    known = set(wnids)
    train = [manual.Example(p, manual.stem(p), p.split('/')[1]) for p in source.names()
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
      path = f'val/images/{fields[0]}'
      val.append(manual.Example(path, manual.stem(path), fields[1]))
    return source, wnids, {'train': train, 'validation': val}

  def _image(self, source, path, data):
    jpeg, shape = source.image(data, path)
    if shape != (IMAGE_SIZE, IMAGE_SIZE):
      raise source.bad(f'member {path} is {shape[0]}x{shape[1]}, expected '
                       f'{IMAGE_SIZE}x{IMAGE_SIZE} (not the official archive)')
    return jpeg
