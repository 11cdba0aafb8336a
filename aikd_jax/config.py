"""The run config, read once: a raw ml_collections `ConfigDict` in, frozen dataclasses out.

`parse(raw)` checks every value (its type, range or choice, and the combinations that
cannot work) and returns a `RunConfig`; nothing after it reads the `ConfigDict`. Checks
that need the outside world (the dataset, devices, paths, the workdir) are in
`preflight.py`. Each field declares its checks next to its type (fields.py), so a new key
is checked by adding one line; each method declares its own group (`methods/*.py`), and
this module, above methods/, is the one parse that knows them all.
"""
import dataclasses
from typing import Any, Mapping

from aikd_jax import methods, models
from aikd_jax.data import datasets
from aikd_jax.errors import ConfigError
from aikd_jax.fields import (BELOW_ONE, INCREASING, NON_NEGATIVE, POSITIVE, SEED, TWO_HALVES,
                             UNIT, field, one_of, parse_group)


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
  # Filled by `parse` from the method groups, not read by parse_group (derived).
  methods: Mapping[str, Any] = dataclasses.field(default_factory=dict,
                                                 metadata={'derived': True})

  @property
  def method_config(self):
    """The typed config group of the selected method (None if it has none)."""
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


def _check_names(c: RunConfig) -> None:
  """The dataset and architecture must be registered."""
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
