"""The paper's grid: `make(dataset, arch)` is configs/default.py with what differs per cell.

Each `configs/<dataset>_<model>.py` is a docstring (its command and the paper's
number) and `get_config()` returning `make(...)`. `PAPER` holds the paper's top-1
errors (mean over three runs, %), which those docstrings cite.
"""
from configs import default

# Section 5.1: coarse datasets (32 px) use PreAct ResNet-18/-50 and DenseNet-121,
# fine-grained ones (224 px) ResNet-18/-50 and DenseNet-121.
SIZE_32 = ('cifar100', 'tiny_imagenet')
SIZE_224 = ('cub200', 'stanford_dogs', 'mit67', 'fgvc_aircraft')
ARCHS = {32: ('preact_resnet18', 'preact_resnet50', 'cifar_densenet121'),
         224: ('resnet18', 'resnet50', 'densenet121')}
# Section 5.2: batch 128 for the coarse datasets, 32 for the fine-grained ones.
BATCH_SIZE = {32: 128, 224: 32}
EVAL_BATCH_SIZE = {32: 500, 224: 100}  # ours: any size gives the same metrics
# The architectures' reference widths: stem width for ResNets, growth rate for DenseNets.
WIDTH = {'preact_resnet18': 64, 'preact_resnet50': 64, 'cifar_densenet121': 32,
         'resnet18': 64, 'resnet50': 64, 'densenet121': 32}


def image_size(dataset: str) -> int:
  if dataset in SIZE_32:
    return 32
  if dataset in SIZE_224:
    return 224
  raise ValueError(f'{dataset!r} is not one of the paper datasets: '
                   f'{", ".join(SIZE_32 + SIZE_224)}')


def make(dataset: str, arch: str):
  """configs/default.py for `dataset` (our registry name) and `arch` (a model name)."""
  size = image_size(dataset)
  if arch not in ARCHS[size]:
    raise ValueError(f'the paper trains {", ".join(ARCHS[size])} on {dataset}, not {arch!r}')
  c = default.get_config()
  c.data.name = dataset
  c.model.arch = arch
  c.model.width = WIDTH[arch]
  c.batch_size = BATCH_SIZE[size]
  c.eval_batch_size = EVAL_BATCH_SIZE[size]
  set_method_values(c, dataset, arch)
  return c


def set_method_values(c, dataset: str, arch: str) -> None:
  """The peer methods' official values for the cell (docs/methods.md, table at the top).

  Values without an official source for a cell follow the nearest official one (marked).
  """
  size = image_size(dataset)
  # TF-KD: per architecture, the same on every dataset; ResNet-50 has no official config
  # and uses ResNet-18's.
  c.tfkd.alpha, c.tfkd.temperature, c.tfkd.multiplier = (
      (0.9, 20.0, 50.0) if 'densenet' in arch else (0.95, 6.0, 50.0))
  c.pskd.alpha_t = 0.8  # every dataset (no official fine-grained value)
  c.cskd.temperature = 4.0
  c.cskd.lam = 1.0 if size == 32 else 3.0
  # Zipf's LS: 0.1 on CIFAR-100, 1.0 on Tiny-ImageNet (no official fine-grained value: 1.0,
  # as for the other many-class from-scratch data); upsample the small 32-px maps only,
  # except the 32-px DenseNet-121: the official CIFAR_DenseNet121 drops its `upsample`
  # argument, so its votes come from the plain 4x4 map (docs/methods.md).
  c.zipf_ls.lam = 0.1 if dataset == 'cifar100' else 1.0
  c.zipf_ls.upsample = size == 32 and arch != 'cifar_densenet121'
  c.tffd.lambda_inter, c.tffd.lambda_intra = 5e-4, 8e-4


# (dataset, arch) -> (table, Baseline top-1 error, its std, AI-KD top-1 error, its std), in %,
# mean and standard deviation over three runs. Table 2's rows "ResNet 18" / "ResNet 50"
# are PreAct ResNets on CIFAR-100 and Tiny-ImageNet (section 5.1). Baseline is plain
# cross-entropy training: our phase 1 (the superior).
PAPER = {
    ('cifar100', 'preact_resnet18'): ('Table 2', 23.97, 0.29, 19.87, 0.10),
    ('cifar100', 'preact_resnet50'): ('Table 2', 21.57, 0.32, 19.42, 0.59),
    ('cifar100', 'cifar_densenet121'): ('Table 4', 19.71, 0.37, 18.35, 0.18),
    ('tiny_imagenet', 'preact_resnet18'): ('Table 2', 46.28, 0.19, 41.84, 0.10),
    ('tiny_imagenet', 'preact_resnet50'): ('Table 2', 41.73, 0.12, 38.79, 0.02),
    ('tiny_imagenet', 'cifar_densenet121'): ('Table 4', 40.38, 0.14, 38.33, 0.07),
    ('cub200', 'resnet18'): ('Table 2', 36.65, 0.87, 29.59, 0.27),
    ('cub200', 'resnet50'): ('Table 2', 37.53, 1.28, 32.68, 0.33),
    ('cub200', 'densenet121'): ('Table 4', 34.69, 0.09, 26.65, 0.29),
    ('stanford_dogs', 'resnet18'): ('Table 2', 32.61, 0.55, 28.61, 0.21),
    ('stanford_dogs', 'resnet50'): ('Table 2', 32.84, 0.42, 29.11, 0.08),
    ('stanford_dogs', 'densenet121'): ('Table 4', 33.19, 0.80, 27.13, 0.16),
    ('mit67', 'resnet18'): ('Table 2', 39.90, 0.16, 36.84, 0.34),
    ('mit67', 'resnet50'): ('Table 2', 38.83, 0.15, 36.42, 0.87),
    ('mit67', 'densenet121'): ('Table 4', 37.59, 0.62, 34.58, 0.75),
    ('fgvc_aircraft', 'resnet18'): ('Table 2', 18.61, 1.16, 15.43, 0.15),
    ('fgvc_aircraft', 'resnet50'): ('Table 2', 17.94, 1.18, 13.79, 0.44),
    ('fgvc_aircraft', 'densenet121'): ('Table 4', 17.71, 0.17, 13.84, 0.38),
}
