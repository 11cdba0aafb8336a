"""TFDS builder `mit67`: MIT Indoor Scenes (Indoor67) with its standard split (manual download).

TFDS has no MIT67. This builder reads, from the manual dir:

- `indoorCVPR_09.tar` directly (or the `Images/` folder it extracts to):
  `Images/<class>/<file>.jpg`, 15,620 images of 67 indoor scene classes;
- the standard split lists `TrainImages.txt` and `TestImages.txt` (lines such as
  `kitchen/int474.jpg`): 80 train and 20 test images per class, 5,360 / 1,340.

Labels index the sorted class folders (torchvision ImageFolder's order, as in
CS-KD). A few original files are GIF or PNG named .jpg, or CMYK or grey JPEGs:
every image is decoded when preparing, and those are re-encoded as RGB JPEG
(quality 95); RGB JPEGs are stored byte for byte.

Prepare once (or let training do it on first use):

  python -m aikd_jax.data.builders mit67 --manual_dir=DIR [--data_dir=TFDS_DIR]
"""
from absl import logging

from aikd_jax.data.builders import manual

NUM_CLASSES = 67
SPLIT_SIZES = {'train': 5_360, 'test': 1_340}  # the standard lists
ARCHIVE = manual.Download(
    dataset='MIT67', file_name='indoorCVPR_09.tar',
    url='http://groups.csail.mit.edu/vision/LabelMe/NewImages/indoorCVPR_09.tar',
    roots=('Images', 'indoorCVPR_09/Images'))
LISTS = {
    'train': manual.Download(dataset='MIT67', file_name='TrainImages.txt',
                             url='http://web.mit.edu/torralba/www/TrainImages.txt'),
    'test': manual.Download(dataset='MIT67', file_name='TestImages.txt',
                            url='http://web.mit.edu/torralba/www/TestImages.txt'),
}


class Mit67(manual.ManualBuilder):
  """MIT Indoor Scenes: RGB JPEGs of varying size, 67 classes, 5,360 train / 1,340 test."""

  DOWNLOADS = (ARCHIVE, LISTS['train'], LISTS['test'])
  MANUAL_DOWNLOAD_INSTRUCTIONS = manual.instructions(
      DOWNLOADS, 'mit67',
      'The tar is read as it is; its extracted folder Images/ works too.')
  NUM_CLASSES = NUM_CLASSES
  SPLIT_SIZES = SPLIT_SIZES
  OFFICIAL = 'the standard lists have'
  DESCRIPTION = ('MIT Indoor Scenes (Quattoni and Torralba, CVPR 2009) with the standard '
                 'TrainImages.txt / TestImages.txt split. Labels index the sorted '
                 'class folders; images are RGB JPEGs.')
  HOMEPAGE = 'https://web.mit.edu/torralba/www/indoor.html'

  def _read_lists(self, manual_dir: str):
    """The split lists (lines '<class>/<file>', keys too); the images from the archive."""
    lists = {split: _read_list(manual_dir, download) for split, download in LISTS.items()}
    _warn_if_overlap(lists)
    classes = sorted({path.split('/')[0] for paths in lists.values() for path in paths})
    examples = {split: [manual.Example(p, p, p.split('/')[0]) for p in paths]
                for split, paths in lists.items()}
    return manual.open_source(manual_dir, ARCHIVE), classes, examples


def _read_list(manual_dir: str, download: manual.Download) -> list[str]:
  """The paths of a split list, in order, without repeats (a repeat is warned about)."""
  source = manual.list_source(manual_dir, download)
  paths = manual.read_text(source, download.file_name)
  bad = next((p for p in paths if p.count('/') != 1), None)
  if bad is not None:
    raise source.bad(f'line {bad!r} is not <class>/<file> (not the official list)')
  unique = list(dict.fromkeys(paths))
  if len(unique) != len(paths):
    logging.warning('MIT67: %s lists %d files more than once; each is used once',
                    download.file_name, len(paths) - len(unique))
  return unique


def _warn_if_overlap(lists: dict[str, list[str]]) -> None:
  both = sorted(set(lists['train']) & set(lists['test']))
  if both:
    logging.warning('MIT67: %d images are in both %s and %s (e.g. %s): test results would be '
                    'inflated; download both lists again from %s and %s', len(both),
                    LISTS['train'].file_name, LISTS['test'].file_name, both[0],
                    LISTS['train'].url, LISTS['test'].url)
