"""config.parse: every checked key has a row of invalid values, and each fails with one line.

Add a row to INVALID when you add a checked key: `test_every_checked_key_has_a_row` fails
until you do.
"""
import dataclasses
import re
import typing

import pytest

from aikd_jax import config as config_lib
from aikd_jax import methods
from aikd_jax.errors import ConfigError
from configs import demo
from tests.runs import set_keys

# (key, invalid value, what the one-line error says)
INVALID = [
    ('seed', -1, 'seed must be in [0, 2^31)'),
    ('seed', 2**31, 'seed must be in [0, 2^31)'),
    ('seed', 1.5, 'seed must be int'),
    ('num_epochs', 0, 'num_epochs must be > 0'),
    ('batch_size', 0, 'batch_size must be > 0'),
    ('eval_batch_size', -5, 'eval_batch_size must be > 0'),
    ('dtype', 'float16', "dtype must be one of 'float32', 'bfloat16'"),
    ('superior_seed', -2, 'superior_seed must be in [0, 2^31)'),
    ('train_superior', 'never', "train_superior must be one of 'auto', 'always'"),
    ('superior_augment', 'cutmix', "superior_augment must be one of 'none', 'same'"),
    ('log_every_steps', 0, 'log_every_steps must be > 0'),
    ('method', 'kd', "unknown method 'kd'"),
    ('fast_compile', 'yes', 'fast_compile must be bool'),
    ('profile_steps', -1, 'profile_steps must be >= 0'),
    ('data.name', 'imagenet', "unknown dataset 'imagenet'"),
    ('data.train_subset', 0, 'data.train_subset must be > 0'),
    ('data.eval_subset', -1, 'data.eval_subset must be >= 2'),
    ('data.eval_subset', 1, 'data.eval_subset must be >= 2 (temperature scaling'),
    ('model.arch', 'vit', "unknown model.arch 'vit'"),
    ('model.width', 0, 'model.width must be > 0'),
    ('optim.lr', -0.1, 'optim.lr must be > 0'),
    ('optim.lr', float('inf'), 'optim.lr must be a finite number, got inf'),
    ('optim.lr', float('nan'), 'optim.lr must be a finite number, got nan'),
    ('optim.momentum', 1.0, 'optim.momentum must be in [0, 1)'),
    ('optim.nesterov', 1, 'optim.nesterov must be bool'),
    ('optim.weight_decay', -1e-4, 'optim.weight_decay must be >= 0'),
    ('optim.lr_milestones', (5, 3), 'optim.lr_milestones must be positive and increasing'),
    ('optim.lr_milestones', (0,), 'optim.lr_milestones must be positive and increasing'),
    ('optim.lr_decay', 0.0, 'optim.lr_decay must be > 0'),
    ('augment.cutout', -8, 'augment.cutout must be >= 0'),
    ('augment.mixup', -1.0, 'augment.mixup must be >= 0'),
    ('augment.cutmix', -0.5, 'augment.cutmix must be >= 0'),
    ('augment.cutmix_prob', 1.5, 'augment.cutmix_prob must be in [0, 1]'),
    ('checkpoint.max_to_keep', 0, 'checkpoint.max_to_keep must be > 0'),
    ('aikd.alpha_ce', -0.1, 'aikd.alpha_ce must be >= 0'),
    ('aikd.alpha_p', -0.3, 'aikd.alpha_p must be >= 0'),
    ('aikd.alpha_g', -1.0, 'aikd.alpha_g must be >= 0'),
    ('aikd.omega', -0.1, 'aikd.omega must be >= 0'),
    ('aikd.tau_p', 0.0, 'aikd.tau_p must be > 0'),
    ('aikd.tau_g', -1.0, 'aikd.tau_g must be > 0'),
    ('aikd.previous', 'model', "aikd.previous must be one of 'snapshot', 'table'"),
    ('aikd.gp_weight', -10.0, 'aikd.gp_weight must be >= 0'),
    ('aikd.gp_weight', float('inf'), 'aikd.gp_weight must be a finite number, got inf'),
    ('aikd.critic_steps', 0, 'aikd.critic_steps must be > 0'),
    ('aikd.critic_lr', 0.0, 'aikd.critic_lr must be > 0'),
    ('aikd.critic_b1', 1.0, 'aikd.critic_b1 must be in [0, 1)'),
    ('aikd.critic_b2', -0.1, 'aikd.critic_b2 must be in [0, 1)'),
    ('aikd.critic_norm', 'group', "aikd.critic_norm must be one of 'batch', 'layer', 'none'"),
    ('aikd.critic_input', 'softmax', "aikd.critic_input must be one of 'logits', 'probs'"),
    ('tfkd.alpha', 1.5, 'tfkd.alpha must be in [0, 1]'),
    ('tfkd.temperature', 0.0, 'tfkd.temperature must be > 0'),
    ('tfkd.temperature', float('inf'), 'tfkd.temperature must be a finite number, got inf'),
    ('tfkd.multiplier', -50.0, 'tfkd.multiplier must be > 0'),
    ('pskd.alpha_t', -0.8, 'pskd.alpha_t must be in [0, 1]'),
    ('cskd.temperature', 0.0, 'cskd.temperature must be > 0'),
    ('cskd.lam', -1.0, 'cskd.lam must be >= 0'),
    ('cskd.lam', float('inf'), 'cskd.lam must be a finite number, got inf'),
    ('zipf_ls.lam', -0.1, 'zipf_ls.lam must be >= 0'),
    ('zipf_ls.upsample', 'yes', 'zipf_ls.upsample must be bool'),
    ('tffd.lambda_inter', -5e-4, 'tffd.lambda_inter must be >= 0'),
    ('tffd.lambda_intra', -8e-4, 'tffd.lambda_intra must be >= 0'),
]
# Combinations: (overrides, what the error says)
INVALID_COMBINATIONS = [
    ({'augment.mixup': 1.0, 'augment.cutmix': 1.0}, 'are both on; set one of them to 0'),
    ({'superior_workdir': '/a', 'superior_init': '/b'}, 'superior_workdir and superior_init'),
]


def _raw(**overrides) -> dict:
  return set_keys(demo.get_config('smoke').to_dict(), overrides)


@pytest.mark.parametrize('key,value,says', INVALID, ids=[f'{k}={v}' for k, v, _ in INVALID])
def test_invalid_value_is_one_line_naming_the_key(key, value, says):
  with pytest.raises(ConfigError) as e:
    config_lib.parse(_raw(**{key: value}))
  message = str(e.value)
  assert says in message and '\n' not in message


@pytest.mark.parametrize('overrides,says', INVALID_COMBINATIONS)
def test_invalid_combination(overrides, says):
  with pytest.raises(ConfigError, match=says):
    config_lib.parse(_raw(**overrides))


def _checked_keys(cls, prefix=''):
  hints = typing.get_type_hints(cls)
  for f in dataclasses.fields(cls):
    if dataclasses.is_dataclass(hints.get(f.name)):
      yield from _checked_keys(hints[f.name], prefix + f.name + '.')
    elif f.metadata.get('checks'):
      yield prefix + f.name


def test_every_checked_key_has_a_row():
  keys = set(_checked_keys(config_lib.RunConfig))
  for group, cls in methods.config_groups().items():
    keys |= set(_checked_keys(cls, group + '.'))
  assert keys - {k for k, _, _ in INVALID} == set()


def _float_keys(cls, prefix=''):
  hints = typing.get_type_hints(cls)
  for f in dataclasses.fields(cls):
    if dataclasses.is_dataclass(hints.get(f.name)):
      yield from _float_keys(hints[f.name], prefix + f.name + '.')
    elif float in (hints.get(f.name), *typing.get_args(hints.get(f.name))):
      yield prefix + f.name


FLOAT_KEYS = sorted(set(_float_keys(config_lib.RunConfig)).union(
    *(_float_keys(cls, group + '.') for group, cls in methods.config_groups().items())))


@pytest.mark.parametrize('key', FLOAT_KEYS)
@pytest.mark.parametrize('value', [float('inf'), float('-inf'), float('nan')])
def test_every_float_key_refuses_inf_and_nan(key, value):
  with pytest.raises(ConfigError, match=f'{re.escape(key)} must be a finite number'):
    config_lib.parse(_raw(**{key: value}))


def test_parse_gives_frozen_typed_groups():
  c = config_lib.parse(_raw(**{'optim.lr': 1, 'optim.lr_milestones': [1, 2]}))
  assert c.optim.lr == 1.0 and isinstance(c.optim.lr, float)
  assert c.optim.lr_milestones == (1, 2)
  assert c.method_config.tau_p == 1.0
  with pytest.raises(dataclasses.FrozenInstanceError):
    c.optim.lr = 0.5  # type: ignore[misc]


def test_unknown_and_missing_keys():
  raw = _raw()
  raw['optim']['lrr'] = 0.1
  with pytest.raises(ConfigError, match='unknown config key optim.lrr'):
    config_lib.parse(raw)
  raw = _raw()
  del raw['optim']['lr']
  with pytest.raises(ConfigError, match='has no key optim.lr'):
    config_lib.parse(raw)


def test_to_dict_round_trips():
  c = config_lib.parse(_raw())
  assert config_lib.parse(c.to_dict()) == c
