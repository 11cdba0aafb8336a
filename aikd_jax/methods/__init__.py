"""Training objectives by name: each module of this package registers its methods.

A method is one module here (see `base.py` for the interface): it defines a `Method`
subclass and, when it has hyper-parameters, a frozen config dataclass for its group
`config.<group>`, and calls `registry.register` (methods/registry.py). Modules are found
by name, so adding a method edits no other file (docs/architecture.md, "Adding a method").
"""
import importlib
import pkgutil

from aikd_jax.errors import ConfigError
from aikd_jax.methods import registry
from aikd_jax.methods.registry import Registration


_LOADED = False


def _load_all() -> None:
  """Imports every module of this package once (each registers its methods)."""
  global _LOADED
  if not _LOADED:
    _LOADED = True
    for info in pkgutil.iter_modules(__path__):
      importlib.import_module(f'{__name__}.{info.name}')


def names() -> list[str]:
  _load_all()
  return sorted(registry.REGISTRY)


def config_groups() -> dict[str, type]:
  """Group name -> frozen dataclass, for every method group (config.py checks them)."""
  _load_all()
  return dict(registry.GROUPS)


def registration(name: str) -> Registration:
  _load_all()
  if name not in registry.REGISTRY:
    raise ConfigError(f'unknown method {name!r}; known: {", ".join(names())}: '
                      'fix --config.method')
  return registry.REGISTRY[name]


def create(config):
  """The `Method` that `config.method` names, built from the typed `RunConfig`."""
  return registration(config.method).cls.from_config(config.method, config.method_config, config)
