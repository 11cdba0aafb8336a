"""Pure train and eval steps (DESIGN section 2). `loop.py` jits them over the mesh.

One skeleton serves every method: the superior's and the previous student's forward
passes and the critic update are traced only when the method asks for them.
"""
import jax
import jax.numpy as jnp
import optax

from aikd_jax import losses, mixing
from aikd_jax.train.state import State


def _frozen_logits(model, variables, images):
  """Eval-mode (running BatchNorm statistics) logits of a frozen model, without gradient."""
  return jax.lax.stop_gradient(model.apply(variables, images, train=False))


def _critic_input(logits, kind: str):
  return jax.nn.softmax(logits, axis=-1) if kind == 'probs' else logits


def _previous_target(model, method, previous, images, targets, has_previous):
  """softmax(z_prev / tau_P) from the previous-epoch snapshot; the label targets in epoch 0.

  The snapshot's forward pass also runs in epoch 0 (on the initial weights) and is then
  discarded: a select is cheaper in every later epoch than a `lax.cond` around it.
  """
  probs = method.previous_target(_frozen_logits(model, previous, images))
  return jnp.where(has_previous, probs, targets)


def _critic_update(critic_state, fake, real, key, gp_weight, kind):
  """One Adam step on L_D = mean D(fake) - mean D(real) + lambda GP (critic in train mode).

  The critic's running statistics are never used (it always runs in train mode); the
  state keeps those of the call on the student's logits.
  """
  fake, real = _critic_input(fake, kind), _critic_input(real, kind)

  def loss_fn(params):
    def apply(x):
      return critic_state.apply_fn({'params': params, 'batch_stats': critic_state.batch_stats},
                                   x, train=True, mutable=['batch_stats'])
    d_fake, new_stats = apply(fake)
    d_real, _ = apply(real)
    eps = jax.random.uniform(key, (fake.shape[0], 1), jnp.float32)
    penalty = losses.gradient_penalty(lambda x: apply(x)[0], real, fake, eps)
    loss = losses.critic_loss(d_fake, d_real, penalty, gp_weight)
    wasserstein = jnp.mean(d_real) - jnp.mean(d_fake)
    return loss, (new_stats['batch_stats'] if 'batch_stats' in new_stats else {},
                  {'critic_loss': loss, 'wasserstein': wasserstein, 'gradient_penalty': penalty})

  grads, (stats, metrics) = jax.grad(loss_fn, has_aux=True)(critic_state.params)
  return critic_state.apply_gradients(grads=grads, batch_stats=stats), metrics


def augment_key(step_key):
  """The key of the step's batch augmentation (the critic uses fold_in(step_key, i))."""
  return jax.random.fold_in(step_key, 1 << 20)


def make_train_step(*, model, method, config, num_classes, steps_per_epoch, lr_schedule):
  """Returns `train_step(state, batch, superior) -> (state, metrics)`, a pure function."""
  base_key = jax.random.key(config.seed)
  critic_kind = config.aikd.critic_input

  def train_step(state: State, batch, superior):
    student = state.student
    step_key = jax.random.fold_in(base_key, student.step)
    # Cutout / Mixup / CutMix on the global batch; labels become target distributions.
    batch, targets = mixing.apply(augment_key(step_key), batch, config, num_classes)
    images, labels = batch['image'], batch['label']
    z_sup = _frozen_logits(model, superior, images) if method.uses_superior else None
    prev_probs = None
    if method.uses_previous:
      prev_probs = _previous_target(model, method, state.previous, images, targets,
                                    student.step >= steps_per_epoch)

    def critic_fn(z):
      c = state.critic
      return c.apply_fn({'params': c.params, 'batch_stats': c.batch_stats},
                        _critic_input(z, critic_kind), train=True, mutable=['batch_stats'])[0]

    def loss_fn(params):
      logits, new_vars = student.apply_fn(
          {'params': params, 'batch_stats': student.batch_stats}, images, train=True,
          mutable=['batch_stats'])
      loss, terms = method.student_loss(logits, targets, superior_logits=z_sup,
                                        previous_probs=prev_probs, critic_fn=critic_fn)
      return loss, (logits, new_vars['batch_stats'], terms)

    (loss, (logits, new_stats, terms)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        student.params)
    metrics = {'loss': loss, **terms, 'grad_norm': optax.tree.norm(grads),
               'learning_rate': lr_schedule(student.step),
               'accuracy': jnp.mean(jnp.argmax(logits, -1) == labels)}
    new_student = student.apply_gradients(grads=grads, batch_stats=new_stats)
    critic = state.critic
    if method.uses_critic:
      fake = jax.lax.stop_gradient(logits)
      for i in range(config.aikd.critic_steps):
        critic, critic_metrics = _critic_update(critic, fake, z_sup,
                                                jax.random.fold_in(step_key, i),
                                                config.aikd.gp_weight, critic_kind)
      metrics.update(critic_metrics)
    return state.replace(student=new_student, critic=critic), metrics

  return train_step


def make_eval_step(model):
  """Returns `eval_step(variables, images) -> logits` in eval mode."""
  def eval_step(variables, images):
    return model.apply(variables, images, train=False)
  return eval_step
