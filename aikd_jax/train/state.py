"""The pytrees of a run: student, previous-epoch snapshot, critic (DESIGN section 3).

The frozen superior is not part of the state: it is loaded from its exported model on
every start and passed to the step as a separate, non-donated argument.
"""
from typing import Any

import flax
from flax import traverse_util
from flax.training import train_state
import jax
import jax.numpy as jnp
import optax

from aikd_jax.errors import UserError


class StudentState(train_state.TrainState):
  batch_stats: Any


class CriticState(train_state.TrainState):
  batch_stats: Any


@flax.struct.dataclass
class State:
  student: StudentState
  previous: Any  # {'params', 'batch_stats'} of the previous epoch, or None if unused
  critic: Any  # CriticState, or None if unused


def learning_rate_schedule(config, steps_per_epoch: int) -> optax.Schedule:
  """Step-wise LR from the epoch-based milestones in `config.optim` (the one conversion)."""
  boundaries = {int(m) * steps_per_epoch: config.optim.lr_decay for m in config.optim.lr_milestones}
  return optax.piecewise_constant_schedule(config.optim.lr, boundaries)


def student_optimizer(config, steps_per_epoch: int) -> optax.GradientTransformation:
  """SGD with Nesterov momentum and coupled L2 weight decay, exactly as torch.optim.SGD."""
  return optax.chain(
      optax.add_decayed_weights(config.optim.weight_decay),
      optax.sgd(learning_rate_schedule(config, steps_per_epoch),
                momentum=config.optim.momentum, nesterov=config.optim.nesterov))


def critic_optimizer(config) -> optax.GradientTransformation:
  return optax.adam(config.aikd.critic_lr, b1=config.aikd.critic_b1, b2=config.aikd.critic_b2)


def snapshot(student: StudentState) -> dict:
  """An explicit copy of the student's variables: it never aliases a donated buffer."""
  return jax.tree.map(jnp.copy, {'params': student.params, 'batch_stats': student.batch_stats})


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
      raise UserError(f'model.init has no variable {name}')
    if given[path].shape == value.shape:
      out[path] = jnp.asarray(given[path], value.dtype)
    elif value.shape[-1] == num_classes and given[path].shape[:-1] == value.shape[:-1]:
      out[path] = value  # a new classifier head for another class count
    else:
      raise UserError(f'model.init variable {name} has shape {given[path].shape}; '
                      f'the model needs {value.shape}')
  return traverse_util.unflatten_dict(out)


def create_state(key, *, model, critic, method, config, image_shape, num_classes,
                 steps_per_epoch, pretrained=None) -> State:
  """Initial state; `critic` and `previous` are None when the method does not use them.

  `pretrained` ({'params', 'batch_stats'}) replaces the random initialisation of the
  model (`config.model.init`), except for a classifier of another class count.
  """
  k_model, k_critic = jax.random.split(key)
  variables = model.init(k_model, jnp.zeros((1, *image_shape), jnp.float32), train=False)
  if pretrained is not None:
    variables = overlay_pretrained(dict(variables), pretrained, num_classes)
  student = StudentState.create(apply_fn=model.apply, params=variables['params'],
                                batch_stats=variables.get('batch_stats', {}),
                                tx=student_optimizer(config, steps_per_epoch))
  previous = snapshot(student) if method.uses_previous else None
  critic_state = None
  if method.uses_critic:
    cvars = critic.init(k_critic, jnp.zeros((2, num_classes), jnp.float32), train=False)
    critic_state = CriticState.create(apply_fn=critic.apply, params=cvars['params'],
                                      batch_stats=cvars.get('batch_stats', {}),
                                      tx=critic_optimizer(config))
  return State(student=student, previous=previous, critic=critic_state)
