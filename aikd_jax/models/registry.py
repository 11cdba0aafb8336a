"""Architecture registry: name -> Flax module factory."""
from typing import Callable

import flax.linen as nn

_ARCHS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
  """Decorator: registers `factory(num_classes, **options) -> nn.Module` under `name`."""
  def wrap(factory):
    if name in _ARCHS:
      raise ValueError(f'architecture {name!r} registered twice')
    _ARCHS[name] = factory
    return factory
  return wrap


def names() -> list[str]:
  return sorted(_ARCHS)


def create(arch: str, num_classes: int, **options) -> nn.Module:
  """Returns the Flax module for `arch`.

  Every module is called as `module.apply(variables, images_nhwc, train=bool,
  features=False)`. With `features=True` it returns `(logits, feats)` where
  `feats['stages']` is the list of stage outputs and `feats['prepool']` the map
  before global pooling; with `features=False` nothing extra is computed.
  Options: `width` (base channel count), `dtype` ('float32' or 'bfloat16').
  """
  if arch not in _ARCHS:
    raise ValueError(f'unknown architecture {arch!r}; known: {", ".join(names())}')
  return _ARCHS[arch](num_classes=num_classes, **options)
