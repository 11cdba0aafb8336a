"""Dataset registry: our name -> TFDS name, splits, classes, image size, normalisation.

The pipeline reads everything it needs about a dataset from its `DatasetSpec`;
adding a dataset is adding a row to `_SPECS` (and a builder under `builders/`
when TFDS has none that works offline).
"""
import dataclasses
import os

from aikd_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What the input pipeline needs to know about one dataset.

  Attributes:
    name: our name (`config.data.name`).
    tfds_name: the TFDS builder name.
    train_split: TFDS split used for training.
    test_split: TFDS split used for evaluation.
    num_classes: number of labels.
    image_size: height and width fed to the model.
    channels: image channels (1 or 3).
    mean: per-channel mean of images scaled to [0, 1].
    std: per-channel standard deviation of images scaled to [0, 1].
    train_augment: name of the training augmentation in `augment.py`
      ('crop_flip', 'random_resized_crop_flip' or 'none').
    eval_preprocess: how test images reach `image_size`: 'none' (already that size),
      'resize' (resize to image_size x image_size), or 'resize_center_crop' (resize
      the short side to `resize_size`, then centre-crop image_size).
    resize_size: the short side before the centre crop ('resize_center_crop').
    in_memory: True: the split is decoded into memory once (small 32-px datasets);
      False: streamed from TFDS with JPEG decoding inside the tf.data map.
    manual_dir: for builders that read local files: the default folder of
      those files (`config.data.manual_dir` overrides it). The pipeline then
      prepares the dataset itself on first use. None: the dataset must be
      prepared beforehand (`python -m aikd_jax.data.builders NAME`).
    train_examples: the size of the full train split (for projections such as
      `benchmarks/device_suite.py`; the pipeline counts what it reads).
  """
  name: str
  tfds_name: str
  train_split: str
  test_split: str
  num_classes: int
  image_size: int
  channels: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  train_augment: str
  eval_preprocess: str = 'none'
  resize_size: int | None = None
  in_memory: bool = True
  manual_dir: str | None = None
  train_examples: int | None = None

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return (self.image_size, self.image_size, self.channels)


_SPECS: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
  """Adds `spec` to the registry under `spec.name`."""
  if spec.name in _SPECS:
    raise ValueError(f'dataset {spec.name!r} registered twice')
  if len(spec.mean) != spec.channels or len(spec.std) != spec.channels:
    raise ValueError(f'dataset {spec.name!r}: mean and std need one value per channel')
  _SPECS[spec.name] = spec
  return spec


def names() -> list[str]:
  return sorted(_SPECS)


def get(name: str) -> DatasetSpec:
  """Returns the spec of dataset `name`; a ConfigError names the known ones."""
  if name not in _SPECS:
    raise ConfigError(f'unknown dataset {name!r}: set --config.data.name to one of '
                    f'{", ".join(names())}')
  return _SPECS[name]


register(DatasetSpec(
    name='cifar100', tfds_name='cifar100', train_split='train', test_split='test',
    num_classes=100, image_size=32, channels=3,
    mean=(0.4914, 0.4822, 0.4465), std=(0.2023, 0.1994, 0.2010),  # PS-KD's values
    train_augment='crop_flip', train_examples=50_000))

register(DatasetSpec(
    name='fashion_mnist', tfds_name='fashion_mnist_local', train_split='train',
    test_split='test', num_classes=10, image_size=28, channels=1,
    mean=(0.2860,), std=(0.3530,), train_augment='crop_flip',
    manual_dir='/usr/share/datasets/fashion-mnist', train_examples=60_000))

# ImageNet statistics (torchvision), used by CS-KD and Zipf's LS for every dataset but CIFAR.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# TFDS's default manual-download folder, `<data_dir>/downloads/manual`, for the default
# data_dir. Our archive builders prepare from there on first use; `--config.data.manual_dir`
# points elsewhere. (Their error names the folder and the file to put in it.)
TFDS_MANUAL_DIR = os.path.join(
    os.environ.get('TFDS_DATA_DIR') or os.path.expanduser('~/tensorflow_datasets'),
    'downloads', 'manual')

# Tiny-ImageNet (builders/tiny_imagenet.py) keeps the original 64x64 JPEGs; as in CS-KD
# and Zipf's LS, training takes RandomResizedCrop(32) + flip from the 64x64 image and
# evaluation resizes it to 32x32. Streamed (in_memory=False): the stored images are not
# the model's size, and decoding 64x64 JPEGs in the map is cheap.
register(DatasetSpec(
    name='tiny_imagenet', tfds_name='tiny_imagenet', train_split='train',
    test_split='validation', num_classes=200, image_size=32, channels=3,
    mean=IMAGENET_MEAN, std=IMAGENET_STD, train_augment='random_resized_crop_flip',
    eval_preprocess='resize', in_memory=False, manual_dir=TFDS_MANUAL_DIR,
    train_examples=100_000))


def _fine_grained(name: str, tfds_name: str, train_split: str, num_classes: int,
                  train_examples: int, manual_dir: str | None = None) -> DatasetSpec:
  """Registers a 224-px dataset with CS-KD's recipe.

  Train: RandomResizedCrop(224) + flip; eval: Resize(256) + CenterCrop(224); ImageNet
  statistics; streamed, the JPEGs decoded inside the tf.data map.
  """
  return register(DatasetSpec(
      name=name, tfds_name=tfds_name, train_split=train_split, test_split='test',
      num_classes=num_classes, image_size=224, channels=3, mean=IMAGENET_MEAN,
      std=IMAGENET_STD, train_augment='random_resized_crop_flip',
      eval_preprocess='resize_center_crop', resize_size=256, in_memory=False,
      manual_dir=manual_dir, train_examples=train_examples))


# TFDS's builders (5,994 / 5,794 and 12,000 / 8,580 images): they download, see
# `python -m aikd_jax.data.builders`.
_fine_grained('cub200', 'caltech_birds2011', 'train', 200, 5_994)
_fine_grained('stanford_dogs', 'stanford_dogs', 'train', 120, 12_000)
# Ours, from the archives in the manual dir: 5,360 / 1,340 (the standard lists) and
# 6,667 trainval / 3,334 test (variants; the 20-px banner is cropped when preparing).
_fine_grained('mit67', 'mit67', 'train', 67, 5_360, manual_dir=TFDS_MANUAL_DIR)
_fine_grained('fgvc_aircraft', 'fgvc_aircraft', 'trainval', 100, 6_667,
              manual_dir=TFDS_MANUAL_DIR)
