"""Training objectives by name. Each is a small module over one step skeleton (train/steps.py).

A method declares which frozen models it needs (`uses_superior`, `uses_previous`,
`uses_critic`) and computes the student's loss from the student logits and those
models' outputs. Inactive parts cost nothing: the step skips every forward pass and the
critic update that the method does not ask for.
"""
from aikd_jax.errors import UserError
from aikd_jax.methods import aikd

_FACTORIES = {
    'baseline': aikd.from_config,
    'aikd': aikd.from_config,
    'no_adv': aikd.from_config,
    'only_progressive': aikd.from_config,
    'only_guide': aikd.from_config,
}


def names() -> list[str]:
  return sorted(_FACTORIES)


def get(name: str, config):
  """Returns the method object named `name`, parameterised by `config`."""
  if name not in _FACTORIES:
    raise UserError(f'unknown method {name!r}; known: {", ".join(names())}')
  return _FACTORIES[name](name, config)
