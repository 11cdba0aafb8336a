"""Pure train and eval steps. `loop.py` jits them over the mesh.

One skeleton serves every method (`methods/base.py`): batch augmentation, the frozen
superior's forward when the method needs it, the method's loss under `jax.grad`, the SGD
step, then the method's own state update. Nothing here names a method.
"""
import jax
import jax.numpy as jnp
import optax

from aikd_jax import mixing
from aikd_jax.methods import base
from aikd_jax.train.state import State


def frozen_logits(model, variables, images):
  """Eval-mode (running BatchNorm statistics) logits of a frozen model, without gradient."""
  return jax.lax.stop_gradient(model.apply(variables, images, train=False))


def student_forward(apply_fn, features: bool) -> base.Forward:
  """forward(params, batch_stats, images) -> (StudentOutput, new batch_stats), train mode."""
  def forward(params, batch_stats, images):
    out, new_vars = apply_fn({'params': params, 'batch_stats': batch_stats}, images,
                             train=True, features=features, mutable=['batch_stats'])
    logits, feats = out if features else (out, None)
    return base.StudentOutput(logits, feats), new_vars['batch_stats']
  return forward


def augment_key(step_key):
  """The key of the step's batch augmentation (methods get `step_key` itself)."""
  return jax.random.fold_in(step_key, 1 << 20)


def make_train_step(*, model, method, augment, seed: int, num_classes: int,
                    steps_per_epoch: int):
  """Returns `train_step(state, batch, superior) -> (state, metrics)`, a pure function.

  `augment` is the typed `config.augment`; `superior` the frozen superior's variables
  (None unless `method.needs_superior`).
  """
  base_key = jax.random.key(seed)
  forward = student_forward(model.apply, method.features)

  def train_step(state: State, batch, superior):
    student = state.student
    step_key = jax.random.fold_in(base_key, student.step)
    batch, targets = mixing.apply(augment_key(step_key), batch, augment, num_classes)
    inputs = base.StepInputs(
        batch=batch, targets=targets, key=step_key, step=student.step,
        epoch=student.step // steps_per_epoch,
        superior_logits=(frozen_logits(model, superior, batch['image'])
                         if method.needs_superior else None),
        model=model)

    def loss_fn(params):
      loss, terms, logits, new_stats = method.loss(forward, params, student.batch_stats,
                                                   state.method, inputs)
      return loss, (logits, new_stats, terms)

    (loss, (logits, new_stats, terms)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        student.params)
    metrics = {'loss': loss, **terms, 'grad_norm': optax.tree.norm(grads),
               'learning_rate': student.lr_schedule(student.step),
               'accuracy': jnp.mean(jnp.argmax(logits, -1) == batch['label'])}
    new_student = student.apply_gradients(grads=grads, batch_stats=new_stats)
    method_state, method_metrics = method.after_step(state.method, logits, inputs)
    metrics.update(method_metrics)
    return state.replace(student=new_student, method=method_state), metrics

  return train_step


def make_eval_step(model):
  """Returns `eval_step(variables, images) -> (logits, features)` in eval mode.

  `features` are the penultimate features: the global average of the pre-pool map
  (what the classifier sees; the report's t-SNE embeds them).
  """
  def eval_step(variables, images):
    logits, feats = model.apply(variables, images, train=False, features=True)
    return logits, feats['prepool'].mean(axis=(1, 2)).astype(jnp.float32)
  return eval_step
