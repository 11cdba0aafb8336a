"""Pure loss functions. Logits are [batch, classes]; every result is a scalar.

Conventions follow the official PyTorch code of each method (reference/methods.md):
KL terms use the batch mean (torch `reduction='batchmean'`) and carry a tau^2 factor.
"""
from typing import Callable

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Batch mean of the softmax cross-entropy with integer labels."""
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def soft_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Batch mean of -sum_c targets_c * log softmax(logits)_c (targets are distributions)."""
  return jnp.mean(optax.softmax_cross_entropy(logits, targets))


def kl_to_distribution(student_logits: jax.Array, target_probs: jax.Array,
                       temperature: float = 1.0) -> jax.Array:
  """tau^2 * batch-mean KL(target_probs || softmax(student / tau)); targets may hold zeros."""
  log_q = jax.nn.log_softmax(student_logits / temperature, axis=-1)
  log_p = jnp.log(jnp.where(target_probs > 0, target_probs, 1.0))
  kl = jnp.sum(target_probs * (log_p - log_q), axis=-1)
  return temperature**2 * jnp.mean(kl)


def kd_kl(student_logits: jax.Array, teacher_logits: jax.Array,
          temperature: float = 1.0) -> jax.Array:
  """tau^2 * batch-mean KL(softmax(teacher / tau) || softmax(student / tau))."""
  log_p = jax.nn.log_softmax(teacher_logits / temperature, axis=-1)
  log_q = jax.nn.log_softmax(student_logits / temperature, axis=-1)
  kl = jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)
  return temperature**2 * jnp.mean(kl)


def gradient_penalty(critic_fn: Callable[[jax.Array], jax.Array], real: jax.Array,
                     fake: jax.Array, eps: jax.Array) -> jax.Array:
  """WGAN-GP penalty mean_i (||grad_x D(x_hat)_i||_2 - 1)^2.

  x_hat = eps * real + (1 - eps) * fake with `eps` of shape (batch, 1). The gradient is
  that of sum(D(x_hat)) with respect to x_hat, which is what torch's
  `autograd.grad(D(x_hat), x_hat, grad_outputs=ones)` computes (with a BatchNorm critic in
  train mode it includes the cross-example terms through the batch statistics).
  The norm is guarded at zero, where the gradient of a plain norm is NaN.
  """
  x_hat = eps * real + (1.0 - eps) * fake
  grads = jax.grad(lambda x: jnp.sum(critic_fn(x)))(x_hat)
  norms = jnp.sqrt(jnp.sum(grads**2, axis=-1) + 1e-12)
  return jnp.mean((norms - 1.0)**2)


def critic_loss(d_fake: jax.Array, d_real: jax.Array, penalty: jax.Array,
                gp_weight: float) -> jax.Array:
  """WGAN-GP critic objective: mean D(fake) - mean D(real) + lambda * GP."""
  return jnp.mean(d_fake) - jnp.mean(d_real) + gp_weight * penalty


def adversarial_loss(d_student: jax.Array) -> jax.Array:
  """The student's adversarial term L_A = -mean D(student logits)."""
  return -jnp.mean(d_student)
