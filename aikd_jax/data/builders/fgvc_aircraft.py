"""TFDS builder `fgvc_aircraft`: FGVC-Aircraft 2013b, variant level (manual download).

TFDS has no FGVC-Aircraft. This builder reads `fgvc-aircraft-2013b.tar.gz`
directly (or the `fgvc-aircraft-2013b/` folder it extracts to) from the manual dir:
`data/variants.txt` (the 100 variants, one a line), `data/images_variant_trainval.txt`
and `data/images_variant_test.txt` (lines `<image id> <variant name>`, the name
may hold spaces) and `data/images/<image id>.jpg`. Splits: trainval 6,667 and
test 3,334 images; labels index the variants in the order of variants.txt.

Every original image ends in a 20-pixel copyright banner at the bottom. As is
standard practice (and the dataset's README advises), the builder crops those
20 rows off and stores the rest as an RGB JPEG (quality 95).

Reading the tar.gz directly takes a few passes over the archive (one for the
lists, then one per split); preparing from the extracted folder is quicker.
Prepare once (or let training do it on first use):

  python -m aikd_jax.data.builders fgvc_aircraft --manual_dir=DIR [--data_dir=TFDS_DIR]
"""
from aikd_jax.data.builders import manual

NUM_CLASSES = 100
SPLIT_SIZES = {'trainval': 6_667, 'test': 3_334}
BANNER_ROWS = 20  # copyright banner at the bottom of every original image
DOWNLOAD = manual.Download(
    dataset='FGVC-Aircraft', file_name='fgvc-aircraft-2013b.tar.gz',
    url='https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz',
    roots=('fgvc-aircraft-2013b/data',))
VARIANTS = 'variants.txt'
LISTS = {'trainval': 'images_variant_trainval.txt', 'test': 'images_variant_test.txt'}


class FgvcAircraft(manual.ManualBuilder):
  """FGVC-Aircraft 2013b: 100 variants, 6,667 trainval / 3,334 test, banner cropped."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = manual.instructions(
      [DOWNLOAD], 'fgvc_aircraft',
      'The tar.gz is read as it is; its extracted folder fgvc-aircraft-2013b/ works too '
      '(and prepares faster).')
  DOWNLOADS = (DOWNLOAD,)
  NUM_CLASSES = NUM_CLASSES
  SPLIT_SIZES = SPLIT_SIZES
  CLASSES = 'variants'
  DESCRIPTION = ('FGVC-Aircraft 2013b (Maji et al., 2013) at the variant level, '
                 f'with the bottom {BANNER_ROWS}-pixel copyright banner cropped off. '
                 'Labels index the variants in the order of variants.txt.')
  HOMEPAGE = 'https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/'

  def _read_lists(self, manual_dir: str):
    """The variants and the lists (lines '<image id> <variant name>'), keyed by image id."""
    source = manual.open_source(manual_dir, DOWNLOAD)
    texts = manual.read_texts(source, [VARIANTS, *LISTS.values()])
    variants = texts[VARIANTS]
    if len(set(variants)) != len(variants):
      raise source.bad(f'{VARIANTS} lists a variant twice (not the official archive)')
    known = set(variants)
    splits = {}
    for split, list_name in LISTS.items():
      variant_of = {}
      for line in texts[list_name]:
        image_id, _, variant = line.partition(' ')
        if variant not in known:
          raise source.bad(f'{list_name} line {line[:60]!r} does not name a variant of '
                           f'{VARIANTS} (not the official archive)')
        variant_of[image_id] = variant
      splits[split] = [manual.Example(f'images/{image_id}.jpg', image_id, variant)
                       for image_id, variant in variant_of.items()]
    return source, variants, splits

  def _image(self, source, path, data):
    return source.image(data, path, crop_bottom=BANNER_ROWS)[0]
