"""The run config, read once: a raw ml_collections `ConfigDict` in, frozen dataclasses out.

`parse(raw)` checks every value (its type, range or choice, and the combinations that
cannot work) and returns a `RunConfig`; nothing after it reads the `ConfigDict`. Checks
that need the outside world (the dataset, devices, paths, the workdir) are in
`preflight.py`. Each field declares its checks next to its type, so a new key is checked
by adding one line; each method declares its own group (`methods/*.py`).
"""
import dataclasses
import math
import types
import typing
from typing import Any, Callable, Mapping

from aikd_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Check:
  """A predicate on a value and what it says when the value fails it."""
  ok: Callable[[Any], bool]
  says: str


POSITIVE = Check(lambda v: v > 0, 'must be > 0')
NON_NEGATIVE = Check(lambda v: v >= 0, 'must be >= 0')
UNIT = Check(lambda v: 0 <= v <= 1, 'must be in [0, 1]')
BELOW_ONE = Check(lambda v: 0 <= v < 1, 'must be in [0, 1)')
# Temperature scaling is cross-fitted on two halves of the test set (evaluation.py).
TWO_HALVES = Check(lambda v: v >= 2, 'must be >= 2 (temperature scaling fits on one half of '
                   'the test set and scores the other)')
SEED = Check(lambda v: 0 <= v < 2**31, 'must be in [0, 2^31)')
INCREASING = Check(lambda v: all(a < b for a, b in zip((0,) + tuple(v), v)),
                   'must be positive and increasing')


def one_of(*choices) -> Check:
  return Check(lambda v: v in choices, f'must be one of {", ".join(map(repr, choices))}')


def field(*checks: Check):
  """A dataclass field whose (non-None) value must pass `checks`."""
  return dataclasses.field(metadata={'checks': checks})


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig:
  name: str
  tfds_dir: str | None
  manual_dir: str | None
  train_subset: int | None = field(POSITIVE)
  eval_subset: int | None = field(TWO_HALVES)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
  arch: str
  width: int = field(POSITIVE)
  init: str | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimConfig:
  lr: float = field(POSITIVE)
  momentum: float = field(BELOW_ONE)
  nesterov: bool
  weight_decay: float = field(NON_NEGATIVE)
  lr_milestones: tuple[int, ...] = field(INCREASING)
  lr_decay: float = field(POSITIVE)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AugmentConfig:
  cutout: int = field(NON_NEGATIVE)  # hole side in pixels; 0: off
  mixup: float = field(NON_NEGATIVE)  # Beta(alpha, alpha); 0: off
  cutmix: float = field(NON_NEGATIVE)
  cutmix_prob: float = field(UNIT)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckpointConfig:
  max_to_keep: int = field(POSITIVE)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig:
  """Every key of a run, checked. `methods` holds each method group's typed config."""
  seed: int = field(SEED)
  method: str
  num_epochs: int = field(POSITIVE)
  batch_size: int = field(POSITIVE)
  eval_batch_size: int = field(POSITIVE)
  dtype: str = field(one_of('float32', 'bfloat16'))
  superior_workdir: str | None
  superior_seed: int | None = field(SEED)
  superior_init: str | None
  train_superior: str = field(one_of('auto', 'always'))
  superior_augment: str = field(one_of('none', 'same'))
  data: DataConfig
  model: ModelConfig
  optim: OptimConfig
  augment: AugmentConfig
  checkpoint: CheckpointConfig
  log_every_steps: int = field(POSITIVE)
  fast_compile: bool
  profile_steps: int = field(NON_NEGATIVE)
  methods: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def method_config(self):
    """The typed config group of the selected method (None if it has none)."""
    from aikd_jax import methods  # pylint: disable=g-import-not-at-top
    group = methods.registration(self.method).group
    return self.methods.get(group) if group else None

  def to_dict(self) -> dict:
    """The config as plain JSON-able data, method groups at the top level (config.json)."""
    out = {f.name: _plain(getattr(self, f.name))
           for f in dataclasses.fields(self) if f.name != 'methods'}
    out.update({group: _plain(c) for group, c in self.methods.items()})
    return out


def _plain(value):
  if dataclasses.is_dataclass(value):
    return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
  return list(value) if isinstance(value, tuple) else value


# -- parsing ------------------------------------------------------------------------------
def _type_name(hint) -> str:
  return ' or '.join('None' if a is type(None) else a.__name__
                     for a in (typing.get_args(hint) or (hint,)))


def _coerce(key: str, value, hint):
  """`value` as the field type `hint` (int, float, bool, str, tuple[int, ...], X | None)."""
  origin, args = typing.get_origin(hint), typing.get_args(hint)
  if origin in (types.UnionType, typing.Union):
    if value is None and type(None) in args:
      return None
    hint = next(a for a in args if a is not type(None))
    origin, args = typing.get_origin(hint), typing.get_args(hint)
  if origin is tuple:
    if not isinstance(value, (list, tuple)):
      raise ConfigError(f'{key} must be a tuple, got {value!r}')
    return tuple(_coerce(f'{key}[{i}]', v, args[0]) for i, v in enumerate(value))
  if hint is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if hint is float and isinstance(value, float) and not math.isfinite(value):
    raise ConfigError(f'{key} must be a finite number, got {value!r}: fix --config.{key}')
  if hint is int and isinstance(value, float) and value.is_integer():
    return int(value)
  if not isinstance(value, hint) or (hint is not bool and isinstance(value, bool)):
    raise ConfigError(f'{key} must be {_type_name(hint)}, got {value!r}: '
                      f'fix --config.{key}')
  return value


def parse_group(cls, raw: Mapping, prefix: str = ''):
  """Builds the frozen dataclass `cls` from the mapping `raw`, checking every field."""
  hints = typing.get_type_hints(cls)
  fields = [f for f in dataclasses.fields(cls) if f.name != 'methods']
  unknown = sorted(set(raw) - {f.name for f in fields})
  if unknown:
    raise ConfigError(f'unknown config key {prefix}{unknown[0]}; {prefix or "the top level"} '
                      f'has: {", ".join(f.name for f in fields)}')
  values = {}
  for f in fields:
    key = prefix + f.name
    if f.name not in raw:
      raise ConfigError(f'the config has no key {key}; start from configs/default.py')
    if dataclasses.is_dataclass(hints[f.name]):
      if not isinstance(raw[f.name], Mapping):
        raise ConfigError(f'{key} must be a group of keys, got {raw[f.name]!r}')
      values[f.name] = parse_group(hints[f.name], raw[f.name], key + '.')
      continue
    value = _coerce(key, raw[f.name], hints[f.name])
    for check in f.metadata.get('checks', ()):
      if value is not None and not check.ok(value):
        raise ConfigError(f'{key} {check.says}, got {value!r}: fix --config.{key}')
    values[f.name] = value
  return cls(**values)


def _check_names(c: RunConfig) -> None:
  """The dataset and architecture must be registered."""
  from aikd_jax import models  # pylint: disable=g-import-not-at-top
  from aikd_jax.data import datasets  # pylint: disable=g-import-not-at-top
  datasets.get(c.data.name)
  if c.model.arch not in models.names():
    raise ConfigError(f'unknown model.arch {c.model.arch!r}; known: '
                      f'{", ".join(models.names())}: fix --config.model.arch')


def _check_combinations(c: RunConfig) -> None:
  """Checks between keys; each raises the one line that names both."""
  if c.augment.mixup > 0 and c.augment.cutmix > 0:
    raise ConfigError(f'augment.mixup ({c.augment.mixup}) and augment.cutmix '
                      f'({c.augment.cutmix}) are both on; set one of them to 0')
  if c.superior_workdir and c.superior_init:
    raise ConfigError('superior_workdir and superior_init are both set; keep one')


def parse(raw) -> RunConfig:
  """The checked, typed config of the raw `ConfigDict` (or dict) `raw`."""
  from aikd_jax import methods  # pylint: disable=g-import-not-at-top
  raw = dict(raw.to_dict() if hasattr(raw, 'to_dict') else raw)
  groups = methods.config_groups()  # group name -> its dataclass
  method_raw = {g: raw.pop(g) for g in list(raw) if g in groups}
  config = parse_group(RunConfig, raw)
  registration = methods.registration(config.method)  # unknown method: one line
  if registration.group and registration.group not in method_raw:
    raise ConfigError(f'method {config.method} needs the config group {registration.group}; '
                      'start from configs/default.py')
  parsed = {g: parse_group(groups[g], r, g + '.') for g, r in sorted(method_raw.items())}
  for group, typed in parsed.items():
    validate = getattr(typed, 'validate', None)
    if validate is not None:
      validate()
  config = dataclasses.replace(config, methods=parsed)
  _check_names(config)
  _check_combinations(config)
  return config
