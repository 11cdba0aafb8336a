"""aikd_jax/paper_tables.py: the paper's numbers, each under the setting the configs train."""
import importlib

from flax import traverse_util
import pytest

from aikd_jax import paper_tables
from configs import common

_CIFAR_R18 = ('cifar100', 'preact_resnet18')


def _rows(name, setting=_CIFAR_R18):
  return paper_tables.table(name).rows[setting]


def test_tables_2_to_4_agree_with_the_grid_configs_paper_numbers():
  for (dataset, arch), (table, base, base_std, aikd, aikd_std) in common.PAPER.items():
    name = 'Table 4' if table == 'Table 4' else 'Tables 2, 3'
    rows = {r.method: r for r in paper_tables.table(name).rows[(dataset, arch)]}
    assert rows['baseline'].numbers['top1_err'] == (base, base_std)
    assert rows['aikd'].numbers['top1_err'] == (aikd, aikd_std)
  assert [r.method for r in paper_tables.table('Table 4').rows[('cub200', 'densenet121')]] == [
      'baseline', 'cskd', 'tfkd', 'pskd', 'aikd']
  assert paper_tables.lookup('mit67', 'resnet50', 'tfkd').numbers['f1_macro'] == (62.9, 0.4)
  assert paper_tables.COARSE == common.SIZE_32


def test_each_table_keeps_its_own_printed_numbers():
  assert paper_tables.lookup(*_CIFAR_R18, 'aikd').numbers['top1_err'] == (19.87, 0.10)
  for name in ('Table 5', 'Table 8'):
    assert paper_tables.lookup(*_CIFAR_R18, 'aikd', name).numbers['top1_err'] == (19.87, 0.07)
  omega = {r.overrides['aikd.omega']: r.numbers for r in _rows('Table 6')}
  assert omega[0.1] == {'top1_err': (19.87, 0.07), 'top5_err': (4.81, 0.04)}
  assert omega[1.0] == omega[0.75] == {'top1_err': (20.42, 0.04), 'top5_err': (5.27, 0.29)}
  assert [r.label for r in _rows('Table 5')] == [
      'AI-KD', 'No Adv', 'Only Progressive', 'Only Guide', 'Baseline']
  assert [r.label for r in _rows('Table 8')] == ['AI-KD', '+ Cutout', '+ Mixup', '+ CutMix']
  assert _rows('Table 7')[1].numbers == {'top1_err': (21.29, 0.12), 'top5_err': (5.46, 0.09)}
  assert [t.marks for t in paper_tables.TABLES] == [2, 2, 2, 2, 1, 0, 2]
  assert all(not r.numbers for r in _rows('τ search'))


def test_a_row_setting_is_what_departs_from_the_recipe():
  assert _rows('Table 6')[3].setting('cifar100') == ()  # omega 0.1 is the recipe's
  assert _rows('Table 6')[0].setting('cifar100') == (('aikd.omega', 0.0),)
  assert _rows('Table 8')[3].setting('cifar100') == (
      ('augment.cutmix', 1.0), ('augment.cutmix_prob', 0.5))
  assert _rows('Table 7')[0].setting('cifar100') == ()


@pytest.mark.parametrize('dataset,arch', sorted(common.PAPER))
def test_recipe_is_what_the_grid_configs_train(dataset, arch):
  config = traverse_util.flatten_dict(common.make(dataset, arch).to_dict(), sep='.')
  for key, value in paper_tables.recipe(dataset).items():
    assert value == config[key], key


@pytest.mark.parametrize('preset,table', [('table6_omega', 'Table 6'),
                                          ('table7_alpha', 'Table 7'),
                                          ('table8_augment', 'Table 8'),
                                          ('temperatures', 'τ search')])
def test_rows_have_the_overrides_of_the_presets(preset, table):
  sweep = importlib.import_module(f'configs.sweeps.{preset}').SWEEP
  assert [dict(r.overrides) for r in _rows(table)] == list(sweep['variants'].values())


def test_table_5_rows_are_the_methods_of_its_preset():
  sweep = importlib.import_module('configs.sweeps.table5_losses').SWEEP
  assert {r.method for r in _rows('Table 5')} == set(sweep['methods'])
  assert all(not r.overrides for r in _rows('Table 5'))


def test_the_package_never_imports_configs():
  """aikd_jax stands alone: configs/ may import it, never the other way round."""
  import pathlib  # pylint: disable=g-import-not-at-top
  package = pathlib.Path(paper_tables.__file__).parent
  offenders = [str(p) for p in package.rglob('*.py')
               if any(line.strip().startswith(('from configs', 'import configs'))
                      for line in p.read_text().splitlines())]
  assert not offenders
