"""Training objectives by name: each module of this package registers its methods.

A method is one module here (see `base.py` for the interface): it defines a `Method`
subclass and, when it has hyper-parameters, a frozen config dataclass for its group
`config.<group>`, and calls `register`. Modules are found by name, so adding a method
edits no other file (docs/architecture.md, "Adding a method").
"""
import dataclasses
import importlib
import pkgutil

from aikd_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Registration:
  name: str
  cls: type  # a `base.Method` subclass, built by its `from_config`
  group: str | None = None  # the config group of its hyper-parameters
  config_cls: type | None = None  # the frozen dataclass of that group


_REGISTRY: dict[str, Registration] = {}
_GROUPS: dict[str, type] = {}
_LOADED = False


def register(name: str, cls: type, *, group: str | None = None,
             config_cls: type | None = None):
  """Registers method `name`: `cls.from_config(name, config.<group>, run_config)` builds it."""
  if name in _REGISTRY:
    raise ValueError(f'method {name!r} registered twice')
  if group is not None:
    if _GROUPS.setdefault(group, config_cls) is not config_cls:
      raise ValueError(f'config group {group!r} registered with two classes')
  _REGISTRY[name] = Registration(name, cls, group, config_cls)


def _load_all() -> None:
  """Imports every module of this package once (each registers its methods)."""
  global _LOADED
  if not _LOADED:
    _LOADED = True
    for info in pkgutil.iter_modules(__path__):
      importlib.import_module(f'{__name__}.{info.name}')


def names() -> list[str]:
  _load_all()
  return sorted(_REGISTRY)


def config_groups() -> dict[str, type]:
  """Group name -> frozen dataclass, for every method group (config.py checks them)."""
  _load_all()
  return dict(_GROUPS)


def registration(name: str) -> Registration:
  _load_all()
  if name not in _REGISTRY:
    raise ConfigError(f'unknown method {name!r}; known: {", ".join(names())}: '
                      'fix --config.method')
  return _REGISTRY[name]


def create(config):
  """The `Method` that `config.method` names, built from the typed `RunConfig`."""
  return registration(config.method).cls.from_config(config.method, config.method_config, config)
