"""Typed, checked config fields: the leaf under every config group (it imports nothing of
ours but errors.py).

A config group is a frozen dataclass whose fields declare their checks next to their type
(`lr: float = field(POSITIVE)`); `parse_group` builds one from a mapping, coercing and
checking each value, and names the key and the fix in one ConfigError line. config.py
(the run's groups) and each method's group (methods/*.py) are built from these.
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
  fields = [f for f in dataclasses.fields(cls) if not f.metadata.get('derived')]
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
