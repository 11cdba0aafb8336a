"""Losses against hand-computed values."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aikd_jax import losses


def test_cross_entropy_hand_value():
  logits = jnp.array([[1.0, 0.0], [0.0, 0.0]])
  expected = (math.log(1 + math.exp(-1)) + math.log(2)) / 2
  np.testing.assert_allclose(losses.cross_entropy(logits, jnp.array([0, 1])), expected, rtol=1e-6)


def test_kd_kl_hand_value_tau1():
  student = jnp.array([[math.log(3.0), 0.0]])  # softmax = (0.75, 0.25)
  teacher = jnp.zeros((1, 2))  # softmax = (0.5, 0.5)
  expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
  np.testing.assert_allclose(losses.kd_kl(student, teacher, 1.0), expected, rtol=1e-6)


def test_kd_kl_temperature_scaling_and_batch_mean():
  student = jnp.array([[math.log(3.0), 0.0], [0.0, 0.0]])
  teacher = jnp.zeros((2, 2))
  tau = 2.0
  q0 = math.sqrt(3) / (math.sqrt(3) + 1)  # softmax(student[0] / 2)[0]
  kl0 = 0.5 * math.log(0.5 / q0) + 0.5 * math.log(0.5 / (1 - q0))
  expected = tau**2 * (kl0 + 0.0) / 2  # second row: identical distributions
  np.testing.assert_allclose(losses.kd_kl(student, teacher, tau), expected, rtol=1e-5)


def test_kd_kl_is_zero_for_identical_and_positive_otherwise():
  z = jax.random.normal(jax.random.key(0), (8, 10)) * 3
  np.testing.assert_allclose(losses.kd_kl(z, z, 4.0), 0.0, atol=1e-6)
  assert losses.kd_kl(z, z[::-1], 4.0) > 0.1


def test_kd_kl_equals_cross_entropy_minus_entropy():
  s, t = jax.random.normal(jax.random.key(1), (2, 6, 5))
  p = jax.nn.softmax(t)
  entropy = -jnp.mean(jnp.sum(p * jnp.log(p), -1))
  np.testing.assert_allclose(losses.kd_kl(s, t), losses.soft_cross_entropy(s, p) - entropy,
                             rtol=1e-5)


def test_kl_to_one_hot_distribution_is_cross_entropy_at_any_tau():
  z = jax.random.normal(jax.random.key(2), (6, 5))
  y = jnp.array([0, 1, 2, 3, 4, 0])
  one_hot = jax.nn.one_hot(y, 5)
  np.testing.assert_allclose(losses.kl_to_distribution(z, one_hot, 1.0),
                             losses.cross_entropy(z, y), rtol=1e-6)
  expected = 16.0 * losses.cross_entropy(z / 4.0, y)
  np.testing.assert_allclose(losses.kl_to_distribution(z, one_hot, 4.0), expected, rtol=1e-6)


def test_kl_to_distribution_matches_kd_kl_for_softmax_targets():
  s, t = jax.random.normal(jax.random.key(3), (2, 4, 7))
  tau = 3.0
  np.testing.assert_allclose(losses.kl_to_distribution(s, jax.nn.softmax(t / tau), tau),
                             losses.kd_kl(s, t, tau), rtol=1e-5)


@pytest.mark.parametrize('w, expected', [((3.0, 4.0), 16.0), ((0.6, 0.8), 0.0),
                                         ((0.0, 0.5), 0.25)])
def test_gradient_penalty_linear_critic(w, expected):
  """D(x) = w.x + b has gradient w everywhere, so GP = (||w|| - 1)^2 whatever eps is."""
  w = jnp.array(w)
  critic = lambda x: x @ w + 0.7
  real, fake = jax.random.normal(jax.random.key(4), (2, 16, 2))
  eps = jax.random.uniform(jax.random.key(5), (16, 1))
  np.testing.assert_allclose(losses.gradient_penalty(critic, real, fake, eps), expected,
                             atol=1e-5)


def test_gradient_penalty_quadratic_critic_uses_interpolates():
  """D(x) = sum(x^2) has gradient 2 x_hat, so the penalty depends on eps as computed by hand."""
  real = jnp.array([[1.0, 0.0], [0.0, 2.0]])
  fake = jnp.array([[0.0, 0.0], [0.0, 0.0]])
  eps = jnp.array([[0.25], [1.0]])
  # x_hat = [[0.25, 0], [0, 2]] -> grads [[0.5, 0], [0, 4]] -> norms 0.5, 4.
  expected = ((0.5 - 1) ** 2 + (4 - 1) ** 2) / 2
  critic = lambda x: jnp.sum(x**2, axis=-1)
  np.testing.assert_allclose(losses.gradient_penalty(critic, real, fake, eps), expected,
                             rtol=1e-6)


def test_gradient_penalty_is_finite_at_zero_gradient():
  critic = lambda x: jnp.zeros(x.shape[0])
  x = jnp.zeros((4, 3))
  gp, grad = jax.value_and_grad(
      lambda r: losses.gradient_penalty(critic, r, x, jnp.full((4, 1), 0.5)))(x)
  assert gp == pytest.approx(1.0, abs=1e-5)
  assert np.all(np.isfinite(grad))


def test_critic_and_adversarial_losses():
  d_fake, d_real = jnp.array([1.0, 3.0]), jnp.array([0.5, 0.5])
  np.testing.assert_allclose(losses.critic_loss(d_fake, d_real, jnp.array(0.2), 10.0),
                             2.0 - 0.5 + 2.0)
  np.testing.assert_allclose(losses.adversarial_loss(d_fake), -2.0)


def test_remix_mixes_each_row_with_its_partner():
  """Images, targets and table rows are mixed by `remix`: lam x_i + (1 - lam) x_perm[i]."""
  rows = jnp.array([[1.0, 0.0], [0.0, 2.0], [4.0, 8.0]])
  perm = jnp.array([2, 0, 1])
  got = losses.remix(rows, perm, 0.75)
  np.testing.assert_allclose(got, [[0.75 + 1.0, 2.0],  # 0.75 [1, 0] + 0.25 [4, 8]
                                   [0.25, 1.5],  # 0.75 [0, 2] + 0.25 [1, 0]
                                   [3.0, 6.5]], rtol=1e-6)  # 0.75 [4, 8] + 0.25 [0, 2]
  images = jnp.ones((2, 1, 1, 1), jnp.bfloat16) * jnp.array([2.0, 6.0], jnp.bfloat16)[:, None,
                                                                                      None, None]
  mixed = losses.remix(images, jnp.array([1, 0]), 0.5)
  assert mixed.dtype == jnp.bfloat16  # lam takes the rows' dtype
  np.testing.assert_array_equal(mixed.astype(jnp.float32).ravel(), [4.0, 4.0])
  assert losses.remix(rows) is rows  # unmixed: the rows as they are
  with pytest.raises(ValueError, match='^mixed_targets needs both perm and lam, or neither$'):
    losses.remix(rows, lam=0.5, caller='mixed_targets')
  with pytest.raises(ValueError, match='remix needs both'):
    losses.remix(rows, perm)


def test_table_is_written_at_the_ids_and_detached():
  table = losses.empty_table(4, 3)
  assert table.shape == (4, 3) and table.dtype == jnp.float32 and not jnp.any(table)
  rows = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], jnp.bfloat16)
  table = losses.write_rows(table, jnp.array([2, 0]), rows)
  np.testing.assert_array_equal(table, [[4, 5, 6], [0, 0, 0], [1, 2, 3], [0, 0, 0]])
  assert table.dtype == jnp.float32
  # The stored rows carry no gradient back to what produced them.
  grad = jax.grad(lambda x: jnp.sum(losses.write_rows(losses.empty_table(2, 2),
                                                      jnp.array([1]), x)))(jnp.ones((1, 2)))
  np.testing.assert_array_equal(grad, [[0.0, 0.0]])
