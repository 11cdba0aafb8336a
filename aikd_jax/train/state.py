"""The pytrees of a run: student, previous-epoch snapshot, critic (DESIGN section 3).

The frozen superior is not part of the state: it is loaded from its exported model on
every start and passed to the step as a separate, non-donated argument.
"""
from typing import Any

import flax
from flax.training import train_state
import jax
import jax.numpy as jnp
import optax


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


def create_state(key, *, model, critic, method, config, image_shape, num_classes,
                 steps_per_epoch) -> State:
  """Initial state; `critic` and `previous` are None when the method does not use them."""
  k_model, k_critic = jax.random.split(key)
  variables = model.init(k_model, jnp.zeros((1, *image_shape), jnp.float32), train=False)
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
