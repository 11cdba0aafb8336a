"""The store of registered methods: each method module calls `register` when imported.

Kept apart from the package's query functions (methods/__init__.py), which import every
method module by name: a method module imports this leaf, never the package, so the
imports stay one-way.
"""
import dataclasses


@dataclasses.dataclass(frozen=True)
class Registration:
  name: str
  cls: type  # a `base.Method` subclass, built by its `from_config`
  group: str | None = None  # the config group of its hyper-parameters
  config_cls: type | None = None  # the frozen dataclass of that group


REGISTRY: dict[str, Registration] = {}
GROUPS: dict[str, type] = {}


def register(name: str, cls: type, *, group: str | None = None,
             config_cls: type | None = None):
  """Registers method `name`: `cls.from_config(name, config.<group>, run_config)` builds it."""
  if name in REGISTRY:
    raise ValueError(f'method {name!r} registered twice')
  if group is not None:
    if GROUPS.setdefault(group, config_cls) is not config_cls:
      raise ValueError(f'config group {group!r} registered with two classes')
  REGISTRY[name] = Registration(name, cls, group, config_cls)
