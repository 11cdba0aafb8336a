"""The pytrees of a run: the student and the method's own state.

The frozen superior is not part of the state: it is loaded from its exported model on
every start and passed to the step as a separate, non-donated argument.
"""
from typing import Any, Callable

import flax
from flax import traverse_util
from flax.training import train_state
import jax
import jax.numpy as jnp
import optax

from aikd_jax.errors import ConfigError
from aikd_jax.methods import base


class StudentState(train_state.TrainState):
  batch_stats: Any
  # The optimizer's schedule (not a pytree leaf, like `tx`): the step logs its value.
  lr_schedule: Callable[[Any], Any] = flax.struct.field(pytree_node=False, default=None)


@flax.struct.dataclass
class State:
  student: StudentState
  method: Any  # the method's own state (methods/base.py `init_state`), or None


def learning_rate_schedule(optim, steps_per_epoch: int) -> optax.Schedule:
  """Step-wise LR from the epoch-based milestones of `optim` (the one conversion)."""
  boundaries = {m * steps_per_epoch: optim.lr_decay for m in optim.lr_milestones}
  return optax.piecewise_constant_schedule(optim.lr, boundaries)


def student_optimizer(optim, lr_schedule: optax.Schedule) -> optax.GradientTransformation:
  """SGD with Nesterov momentum and coupled L2 weight decay, exactly as torch.optim.SGD."""
  return optax.chain(
      optax.add_decayed_weights(optim.weight_decay),
      optax.sgd(lr_schedule, momentum=optim.momentum, nesterov=optim.nesterov))


def variables_of(student: StudentState) -> dict:
  """The student's {'params', 'batch_stats'}."""
  return {'params': student.params, 'batch_stats': student.batch_stats}


def overlay_pretrained(variables: dict, pretrained: dict, num_classes: int) -> dict:
  """`variables` with every array taken from `pretrained` (e.g. ImageNet weights).

  The classifier may have another class count (its last axis): it keeps its fresh
  initialisation. Any other missing variable or shape mismatch is an error.
  """
  fresh, given = traverse_util.flatten_dict(variables), traverse_util.flatten_dict(pretrained)
  out = {}
  for path, value in fresh.items():
    name = '/'.join(path)
    if path not in given:
      raise ConfigError(f'model.init has no variable {name}')
    if given[path].shape == value.shape:
      out[path] = jnp.asarray(given[path], value.dtype)
    elif value.shape[-1] == num_classes and given[path].shape[:-1] == value.shape[:-1]:
      out[path] = value  # a new classifier head for another class count
    else:
      raise ConfigError(f'model.init variable {name} has shape {given[path].shape}; '
                      f'the model needs {value.shape}')
  return traverse_util.unflatten_dict(out)


def create_state(key, *, model, method, optim, image_shape, num_classes, num_train_examples,
                 steps_per_epoch, pretrained=None) -> State:
  """Initial state: the student, then the method's own state from its initial variables.

  `pretrained` ({'params', 'batch_stats'}) replaces the random initialisation of the
  model (`config.model.init`), except for a classifier of another class count.
  """
  k_model, k_method = jax.random.split(key)
  variables = model.init(k_model, jnp.zeros((1, *image_shape), jnp.float32), train=False)
  if pretrained is not None:
    variables = overlay_pretrained(dict(variables), pretrained, num_classes)
  variables = {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}
  lr_schedule = learning_rate_schedule(optim, steps_per_epoch)
  student = StudentState.create(apply_fn=model.apply, params=variables['params'],
                                batch_stats=variables['batch_stats'],
                                tx=student_optimizer(optim, lr_schedule), lr_schedule=lr_schedule)
  ctx = base.InitContext(model=model, variables=variables, num_classes=num_classes,
                         num_train_examples=num_train_examples, steps_per_epoch=steps_per_epoch)
  return State(student=student, method=method.init_state(k_method, ctx))
