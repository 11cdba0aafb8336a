"""Every config in configs/ loads as `--config=configs/<file>.py` does, and follows the recipe."""
import glob
import importlib
import os

from absl import flags
from ml_collections import config_flags
import pytest

from aikd_jax import models
from aikd_jax.data import datasets
from configs import common

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_HELPERS = {'__init__.py', 'common.py'}
CONFIG_FILES = sorted(os.path.relpath(p, _ROOT)
                      for p in glob.glob(os.path.join(_ROOT, 'configs', '*.py'))
                      if os.path.basename(p) not in _HELPERS)


def _load(path: str):
  """The config of `--config=<path>`, through ml_collections' config_flags."""
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', os.path.join(_ROOT, path), flag_values=values,
                                  lock_config=True)
  values(['prog'])
  return values.config


@pytest.mark.parametrize('path', CONFIG_FILES)
def test_config_loads_with_known_dataset_and_arch(path):
  c = _load(path)
  spec = datasets.get(c.data.name)
  assert c.model.arch in models.names()
  assert c.batch_size > 0 and c.eval_batch_size > 0
  assert spec.num_classes > 0


def _grid_module(path: str):
  return importlib.import_module(path[:-len('.py')].replace(os.sep, '.'))


def test_grid_has_one_config_per_paper_cell():
  cells = {}
  for path in CONFIG_FILES:
    if path.endswith(('default.py', 'demo.py')):
      continue
    c = _load(path)
    cells.setdefault((c.data.name, c.model.arch), []).append(path)
  assert set(cells) == set(common.PAPER)
  assert all(len(paths) == 1 for paths in cells.values()), cells


@pytest.mark.parametrize('path', [p for p in CONFIG_FILES
                                  if not p.endswith(('default.py', 'demo.py'))])
def test_grid_config_follows_recipe_and_cites_paper(path):
  c = _load(path)
  size = datasets.get(c.data.name).image_size
  assert size == common.image_size(c.data.name)
  assert c.model.arch in common.ARCHS[size]
  assert (c.batch_size, c.eval_batch_size) == ((128, 500) if size == 32 else (32, 100))
  assert c.model.width == (32 if 'densenet' in c.model.arch else 64)
  assert (c.num_epochs, c.optim.lr, tuple(c.optim.lr_milestones)) == (300, 0.1, (150, 225))
  doc = _grid_module(path).__doc__
  table, baseline, _, aikd, _ = common.PAPER[(c.data.name, c.model.arch)]
  assert f'--config={path}' in doc and table in doc
  assert f'AI-KD {aikd:.2f}' in doc and f'Baseline {baseline:.2f}' in doc


def test_make_rejects_cells_outside_the_paper():
  with pytest.raises(ValueError, match='resnet18'):
    common.make('cifar100', 'resnet18')
  with pytest.raises(ValueError, match='not one of the paper datasets'):
    common.make('fashion_mnist', 'preact_resnet18')


@pytest.mark.parametrize('path', [p for p in CONFIG_FILES
                                  if not p.endswith(('default.py', 'demo.py'))])
def test_grid_config_sets_the_peer_methods_official_values(path):
  """docs/methods.md, "Hyper-parameters at a glance", for the cell's dataset and model."""
  c = _load(path)
  size = common.image_size(c.data.name)
  densenet = 'densenet' in c.model.arch
  assert (c.tfkd.alpha, c.tfkd.temperature, c.tfkd.multiplier) == (
      (0.9, 20.0, 50.0) if densenet else (0.95, 6.0, 50.0))
  assert c.pskd.alpha_t == 0.8
  assert (c.cskd.temperature, c.cskd.lam) == (4.0, 1.0 if size == 32 else 3.0)
  assert c.zipf_ls.lam == (0.1 if c.data.name == 'cifar100' else 1.0)
  # The official CIFAR_DenseNet121 ignores `upsample`: 16 votes from its 4x4 map.
  assert c.zipf_ls.upsample == (size == 32 and c.model.arch != 'cifar_densenet121')
  assert (c.tffd.lambda_inter, c.tffd.lambda_intra) == (5e-4, 8e-4)


def test_zipf_votes_like_the_official_code_upsample_only_32px_preact_resnets():
  """Official CIFAR_DenseNet121 drops `upsample`: 16 votes per image, not 64."""
  upsampled = {(c.data.name, c.model.arch) for c in map(_load, CONFIG_FILES)
               if c.zipf_ls.upsample and not c.data.name == 'fashion_mnist'}
  assert upsampled == {('cifar100', 'preact_resnet18'), ('cifar100', 'preact_resnet50'),
                       ('tiny_imagenet', 'preact_resnet18'),
                       ('tiny_imagenet', 'preact_resnet50')}


def test_default_holds_the_cifar100_preact_r18_cell():
  """configs/default.py is the CIFAR-100 / PreAct ResNet-18 cell, method values included."""
  from configs import default  # pylint: disable=g-import-not-at-top
  cell = common.make('cifar100', 'preact_resnet18').to_dict()
  base = default.get_config().to_dict()
  for group in ('tfkd', 'pskd', 'cskd', 'zipf_ls', 'tffd', 'aikd'):
    assert base[group] == cell[group], group


def test_grid_cell_runs_a_peer_method():
  """`--config=configs/cub_r18.py --config.method=cskd` is the paper's CS-KD cell."""
  from aikd_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  c = _load('configs/cub_r18.py')
  c.method = 'cskd'  # what the --config.method override sets
  typed = config_lib.parse(c)
  assert typed.method == 'cskd' and typed.data.name == 'cub200'
  assert (typed.method_config.temperature, typed.method_config.lam) == (4.0, 3.0)
