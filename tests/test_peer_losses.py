"""The peer self-KD losses (TF-KD, PS-KD, CS-KD, Zipf's LS, TF-FD) against hand-computed
values and independent numpy computations, including each official code's quirks."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from aikd_jax import losses


def _np_log_softmax(z, axis=-1):
  z = z - z.max(axis=axis, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def _np_soft_ce(z, targets):
  return -np.mean(np.sum(targets * _np_log_softmax(z), axis=-1))


def _random(key, shape, scale=1.0):
  return np.asarray(jax.random.normal(jax.random.key(key), shape), np.float64) * scale


# --- TF-KD ------------------------------------------------------------------------------

def test_tfkd_hand_value():
  logits = jnp.array([[math.log(3.0), 0.0]])  # softmax (0.75, 0.25)
  teacher = jnp.zeros((1, 2))  # softmax (0.5, 0.5)
  targets = jnp.array([[1.0, 0.0]])
  loss, terms = losses.tfkd_loss(logits, targets, teacher, alpha=0.25, temperature=1.0,
                                 multiplier=3.0)
  ce = -math.log(0.75)
  elements = [0.5 * math.log(0.5 / 0.75), 0.5 * math.log(0.5 / 0.25)]
  kd = 1.0 * 3.0 * sum(elements) / 2  # T^2 * m * mean over B*C = 2 elements
  np.testing.assert_allclose(terms['ce'], ce, rtol=1e-6)
  np.testing.assert_allclose(terms['kd'], kd, rtol=1e-6)
  np.testing.assert_allclose(loss, 0.75 * ce + 0.25 * kd, rtol=1e-6)


def test_tfkd_elementwise_mean_is_batchmean_kl_over_classes():
  """KLDivLoss's legacy reduction divides by B * C, so kd = m * kd_kl / C."""
  z, t = jax.random.normal(jax.random.key(0), (2, 8, 100)) * 3
  targets = jax.nn.one_hot(jnp.arange(8), 100)
  _, terms = losses.tfkd_loss(z, targets, t, alpha=0.95, temperature=6.0, multiplier=50.0)
  np.testing.assert_allclose(terms['kd'], 50.0 * losses.kd_kl(z, t, 6.0) / 100, rtol=1e-5)


def test_tfkd_numpy_official_settings():
  z, t = _random(1, (6, 10), 3), _random(2, (6, 10), 3)
  targets = np.eye(10)[[0, 3, 9, 1, 1, 5]]
  alpha, temp, mult = 0.95, 6.0, 50.0
  log_p = _np_log_softmax(t / temp)
  kd = temp**2 * mult * np.mean(np.exp(log_p) * (log_p - _np_log_softmax(z / temp)))
  expected = (1 - alpha) * _np_soft_ce(z, targets) + alpha * kd
  loss, _ = jax.jit(losses.tfkd_loss, static_argnums=(3, 4, 5))(
      jnp.asarray(z, jnp.float32), jnp.asarray(targets, jnp.float32),
      jnp.asarray(t, jnp.float32), alpha, temp, mult)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_tfkd_mixed_targets_and_detached_teacher():
  z, t = jax.random.normal(jax.random.key(3), (2, 4, 5))
  ya, yb, lam = jnp.array([0, 1, 2, 3]), jnp.array([4, 4, 0, 1]), 0.3
  mixed = lam * jax.nn.one_hot(ya, 5) + (1 - lam) * jax.nn.one_hot(yb, 5)
  _, terms = losses.tfkd_loss(z, mixed, t, 0.9, 4.0, 1.0)
  expected = lam * losses.cross_entropy(z, ya) + (1 - lam) * losses.cross_entropy(z, yb)
  np.testing.assert_allclose(terms['ce'], expected, rtol=1e-6)
  grad_t = jax.grad(lambda t: losses.tfkd_loss(z, mixed, t, 0.9, 4.0, 1.0)[0])(t)
  np.testing.assert_array_equal(grad_t, 0.0)


# --- PS-KD ------------------------------------------------------------------------------

def test_pskd_alpha_schedule():
  np.testing.assert_allclose(losses.pskd_alpha(0, 0.8, 300), 0.8 / 300, rtol=1e-6)
  np.testing.assert_allclose(losses.pskd_alpha(149, 0.8, 300), 0.4, rtol=1e-6)
  np.testing.assert_allclose(losses.pskd_alpha(299, 0.8, 300), 0.8, rtol=1e-6)
  np.testing.assert_allclose(jax.jit(losses.pskd_alpha, static_argnums=(1, 2))(
      jnp.array(9), 0.5, 10), 0.5, rtol=1e-6)


def test_pskd_first_epoch_target_is_the_label():
  targets = jax.nn.one_hot(jnp.array([2, 0]), 3)
  stale = jnp.array([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]])
  q = losses.pskd_target(targets, stale, alpha_t=0.7, first_epoch=jnp.array(True))
  np.testing.assert_array_equal(q, targets)


def test_pskd_target_hand_value_after_first_epoch():
  targets = jax.nn.one_hot(jnp.array([2]), 3)
  rows = jnp.array([[0.2, 0.3, 0.5]])
  q = jax.jit(losses.pskd_target)(targets, rows, 0.4, False)
  np.testing.assert_allclose(q, [[0.4 * 0.2, 0.4 * 0.3, 0.6 + 0.4 * 0.5]], rtol=1e-6)
  np.testing.assert_allclose(jnp.sum(q), 1.0, rtol=1e-6)


def test_table_rows_mixed_like_the_labels():
  table = jnp.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.9, 0.1]])
  indices, labels = jnp.array([3, 1, 0]), jnp.array([1, 0, 1])
  np.testing.assert_array_equal(losses.table_rows(table, indices, labels), table[indices])
  perm, lam = jnp.array([1, 2, 0]), 0.25
  rows = losses.table_rows(table, indices, labels, perm, lam)
  # Example 0 (index 3) mixes with example 1 (index 1), 1 with 2 (index 0), 2 with 0.
  np.testing.assert_allclose(rows, [[0.25 * 0.9, 0.25 * 0.1 + 0.75],
                                    [0.75, 0.25],
                                    [0.25 + 0.75 * 0.9, 0.75 * 0.1]], rtol=1e-6)
  with pytest.raises(ValueError):
    losses.table_rows(table, indices, labels, perm)


def test_table_rows_never_written_read_as_the_label():
  """A row still all zeros (its example fell in a dropped partial batch) is the one-hot
  label, before mixing, not a zero distribution."""
  table = jnp.array([[0.2, 0.3, 0.5], [0.0, 0.0, 0.0]])
  indices, labels = jnp.array([0, 1]), jnp.array([0, 2])
  np.testing.assert_allclose(losses.table_rows(table, indices, labels),
                             [[0.2, 0.3, 0.5], [0.0, 0.0, 1.0]])
  rows = losses.table_rows(table, indices, labels, jnp.array([1, 0]), 0.25)
  np.testing.assert_allclose(rows, [[0.05, 0.075, 0.125 + 0.75],
                                    [0.15, 0.225, 0.25 + 0.375]], rtol=1e-6)
  # AI-KD's table holds logits: a written row goes through to_probs, an unwritten one not.
  logits = jnp.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
  rows = losses.table_rows(logits, indices, labels, to_probs=lambda z: jax.nn.softmax(z / 2))
  np.testing.assert_allclose(rows, [jax.nn.softmax(logits[0] / 2), [0.0, 0.0, 1.0]],
                             rtol=1e-6)
  # PS-KD's target from an unwritten row is the label itself, whatever alpha_t.
  q = losses.pskd_target(jax.nn.one_hot(labels, 3), losses.table_rows(table, indices, labels),
                         0.6, False)
  np.testing.assert_allclose(q[1], [0.0, 0.0, 1.0])


def test_pskd_loss_numpy():
  z = _random(4, (5, 7), 2)
  labels = np.array([0, 6, 3, 3, 1])
  rows = np.asarray(jax.nn.softmax(_random(5, (5, 7), 2)), np.float64)
  alpha = 0.8 * 120 / 300
  q = (1 - alpha) * np.eye(7)[labels] + alpha * rows
  q_jax = losses.pskd_target(jax.nn.one_hot(labels, 7), jnp.asarray(rows, jnp.float32),
                             losses.pskd_alpha(119, 0.8, 300), False)
  loss, terms = losses.pskd_loss(jnp.asarray(z, jnp.float32), q_jax)
  np.testing.assert_allclose(loss, _np_soft_ce(z, q), rtol=1e-5)
  assert terms['ce'] == loss


# --- CS-KD ------------------------------------------------------------------------------

def test_cskd_hand_value():
  anchor = jnp.array([[math.log(3.0), 0.0]])  # softmax (0.75, 0.25)
  pair = jnp.zeros((1, 2))  # softmax (0.5, 0.5)
  targets = jnp.array([[0.0, 1.0]])
  loss, terms = losses.cskd_loss(anchor, pair, targets, temperature=1.0, lam=2.0)
  kd = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
  np.testing.assert_allclose(terms['ce'], -math.log(0.25), rtol=1e-6)
  np.testing.assert_allclose(terms['kd'], kd, rtol=1e-6)
  np.testing.assert_allclose(loss, -math.log(0.25) + 2.0 * kd, rtol=1e-6)


def test_cskd_numpy_sum_over_classes_divided_by_batch():
  anchor, pair = _random(6, (8, 10), 3), _random(7, (8, 10), 3)
  labels = np.arange(8)
  temp, lam = 4.0, 3.0
  log_p = _np_log_softmax(pair / temp)
  kd = temp**2 * np.sum(np.exp(log_p) * (log_p - _np_log_softmax(anchor / temp))) / 8
  expected = _np_soft_ce(anchor, np.eye(10)[labels]) + lam * kd
  loss, _ = jax.jit(losses.cskd_loss, static_argnums=(3, 4))(
      jnp.asarray(anchor, jnp.float32), jnp.asarray(pair, jnp.float32),
      jax.nn.one_hot(labels, 10), temp, lam)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_cskd_no_gradient_into_the_pair():
  anchor, pair = jax.random.normal(jax.random.key(8), (2, 4, 6))
  targets = jax.nn.one_hot(jnp.array([0, 1, 2, 3]), 6)
  loss = lambda a, p: losses.cskd_loss(a, p, targets, 4.0, 1.0)[0]
  grad_anchor, grad_pair = jax.grad(loss, argnums=(0, 1))(anchor, pair)
  np.testing.assert_array_equal(grad_pair, 0.0)
  assert np.abs(grad_anchor).max() > 1e-3


# --- Zipf's LS --------------------------------------------------------------------------

def test_upsample2x_bilinear_matches_align_corners_false():
  """Sources of output i: (i + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25, clamped to
  [0, 1]: weights give 0, 0.25, 0.75, 1 of the way along each axis; f = 2y + x."""
  x = jnp.array([[0.0, 1.0], [2.0, 3.0]])[None, :, :, None]
  along = np.array([0.0, 0.25, 0.75, 1.0])
  expected = 2 * along[:, None] + along[None, :]
  np.testing.assert_allclose(losses.upsample2x_bilinear(x)[0, :, :, 0], expected,
                             atol=1e-6)


def test_dense_votes_hand_counts():
  """Logits per position v: (v, 0.9, -v): class 0 wins where v > 0.9, else class 1."""
  fmap = jnp.array([[0.0, 1.0], [2.0, 3.0]])[None, :, :, None]
  kernel = jnp.array([[1.0, 0.0, -1.0]])
  bias = jnp.array([0.0, 0.9, 0.0])
  np.testing.assert_array_equal(losses.dense_votes(fmap, kernel, bias, False), [[3, 1, 0]])
  # Upsampled values (see above): 11 of the 16 exceed 0.9.
  np.testing.assert_array_equal(losses.dense_votes(fmap, kernel, bias, True), [[11, 5, 0]])


def test_dense_votes_are_detached_and_jit():
  fmap = jax.random.normal(jax.random.key(9), (2, 3, 3, 4))
  kernel, bias = jax.random.normal(jax.random.key(10), (4, 5)), jnp.zeros(5)
  votes = jax.jit(losses.dense_votes, static_argnums=3)(fmap, kernel, bias, True)
  np.testing.assert_array_equal(jnp.sum(votes, -1), [36, 36])
  grads = jax.grad(lambda f, k: jnp.sum(losses.dense_votes(f, k, bias, True) * 1.5),
                   argnums=(0, 1))(fmap, kernel)
  for g in grads:
    np.testing.assert_array_equal(g, 0.0)


def test_zipf_ranks_hand_ties_and_zero_votes():
  votes = jnp.array([[3.0, 0.0, 5.0, 3.0, 0.0]])
  # 5 -> 1; the two 3s share 2; the zero-vote classes share 1 + 3 voted classes = 4.
  np.testing.assert_array_equal(losses.zipf_ranks(votes), [[2, 4, 1, 2, 4]])


def test_zipf_ranks_match_scipy_rankdata_min():
  votes = np.array(jax.random.randint(jax.random.key(11), (16, 20), 0, 5))
  votes[:, :3] = 0  # plenty of zero-vote classes and ties
  expected = stats.rankdata(-votes, axis=1, method='min')
  np.testing.assert_array_equal(jax.jit(losses.zipf_ranks)(votes.astype(np.float32)),
                                expected)


def test_zipf_loss_hand_value():
  """Label 0, votes (10, 0, 4, 0): ranks (1, 3, 2, 3); without the label, w = (1/3, 1/2,
  1/3) / (7/6) = (2/7, 3/7, 2/7). Non-target logits (0, 0, log 2): q = (1/4, 1/4, 1/2)."""
  votes = jnp.array([[10.0, 0.0, 4.0, 0.0]])
  p, q = np.array([2, 3, 2]) / 7, np.array([0.25, 0.25, 0.5])
  expected = np.sum(p * np.log(p / q))
  for target_logit in (5.0, -3.0):  # the label's own logit plays no part
    logits = jnp.array([[target_logit, 0.0, 0.0, math.log(2.0)]])
    np.testing.assert_allclose(losses.zipf_loss(logits, votes, jnp.array([0])), expected,
                               rtol=1e-5)


def _np_zipf(z, votes, labels):
  """Per-example Zipf KL, written from the definition with scipy's ranks."""
  ranks = stats.rankdata(-votes, axis=1, method='min')
  out = []
  for zi, ri, yi in zip(z, ranks, labels):
    keep = np.arange(len(zi)) != yi
    w = 1.0 / ri[keep]
    p = w / w.sum()
    log_q = _np_log_softmax(zi[keep])
    out.append(np.sum(p * (np.log(p) - log_q)))
  return np.array(out)


def test_zipf_loss_numpy_and_mixed_labels():
  z = _random(12, (8, 10), 3)
  votes = np.asarray(jax.random.randint(jax.random.key(13), (8, 10), 0, 6), np.float64)
  ya = np.array([0, 1, 2, 3, 4, 5, 6, 7])
  perm = np.array([3, 0, 1, 2, 7, 4, 5, 6])
  lam = 0.35
  zj, vj = jnp.asarray(z, jnp.float32), jnp.asarray(votes, jnp.float32)
  np.testing.assert_allclose(losses.zipf_loss(zj, vj, ya), _np_zipf(z, votes, ya).mean(),
                             rtol=1e-5)
  sets, weights = losses.zipf_label_sets(jnp.asarray(ya), jnp.asarray(perm), lam)
  np.testing.assert_array_equal(sets, [ya, ya[perm]])
  np.testing.assert_allclose(weights, [lam, 1 - lam], rtol=1e-6)
  expected = (lam * _np_zipf(z, votes, ya) + (1 - lam) * _np_zipf(z, votes, ya[perm])).mean()
  mixed = jax.jit(losses.zipf_loss)(zj, vj, sets, weights)
  np.testing.assert_allclose(mixed, expected, rtol=1e-5)
  # Per-example weights [K, B] give the same.
  per_example = jnp.broadcast_to(weights[:, None], (2, 8))
  np.testing.assert_allclose(losses.zipf_loss(zj, vj, sets, per_example), expected, rtol=1e-5)
  # One label set [B] with per-example weights [B].
  w = jnp.linspace(0.0, 1.0, 8)
  np.testing.assert_allclose(losses.zipf_loss(zj, vj, ya, w),
                             np.mean(np.asarray(w) * _np_zipf(z, votes, ya)), rtol=1e-5)
  # Unmixed: one label set of weight 1.
  sets1, weights1 = losses.zipf_label_sets(jnp.asarray(ya))
  np.testing.assert_allclose(losses.zipf_loss(zj, vj, sets1, weights1),
                             losses.zipf_loss(zj, vj, ya), rtol=1e-6)


def test_zipf_loss_gradient_skips_the_label_and_the_votes():
  z = jax.random.normal(jax.random.key(14), (3, 6))
  votes = jnp.array([[4.0, 1, 0, 0, 2, 0], [0, 0, 0, 0, 0, 9], [1, 1, 1, 1, 1, 1]])
  labels = jnp.array([0, 5, 2])
  grad_z, grad_v = jax.grad(losses.zipf_loss, argnums=(0, 1))(z, votes, labels)
  assert np.all(np.isfinite(grad_z))
  np.testing.assert_array_equal(grad_z[jnp.arange(3), labels], 0.0)
  np.testing.assert_array_equal(grad_v, 0.0)


def test_zipf_ls_loss_total():
  z = jax.random.normal(jax.random.key(15), (4, 5))
  votes = jnp.tile(jnp.arange(5.0), (4, 1))
  y = jnp.array([0, 1, 2, 4])
  loss, terms = losses.zipf_ls_loss(z, jax.nn.one_hot(y, 5), votes, y, None, lam=0.1)
  np.testing.assert_allclose(terms['ce'], losses.cross_entropy(z, y), rtol=1e-6)
  np.testing.assert_allclose(terms['zipf'], losses.zipf_loss(z, votes, y), rtol=1e-6)
  np.testing.assert_allclose(loss, terms['ce'] + 0.1 * terms['zipf'], rtol=1e-6)


# --- TF-FD ------------------------------------------------------------------------------

def test_adaptive_avg_pool_integer_and_uneven_bins():
  x = jnp.arange(16.0).reshape(1, 4, 4, 1)
  np.testing.assert_allclose(losses.adaptive_avg_pool(x, 2, 2)[0, :, :, 0],
                             [[2.5, 4.5], [10.5, 12.5]])
  # torch bins for 5 -> 3: [0, 2), [1, 4), [3, 5).
  y = jnp.array([0.0, 1, 2, 3, 4]).reshape(1, 5, 1, 1)
  np.testing.assert_allclose(losses.adaptive_avg_pool(y, 3, 1)[0, :, 0, 0],
                             [0.5, 2.0, 3.5], rtol=1e-6)


def test_tffd_inter_hand_value_and_channel_slice():
  shallow = jnp.array([[1.0, 3.0], [5.0, 7.0]]).reshape(1, 2, 2, 1)  # pools to 4
  deep = jnp.array([1.0, 100.0]).reshape(1, 1, 1, 2)  # only channel 0 is compared
  np.testing.assert_allclose(losses.tffd_inter([shallow, deep]), (4.0 - 1.0)**2)


def test_tffd_inter_numpy_mean_over_pairs():
  f = [_random(16, (2, 4, 4, 2)), _random(17, (2, 2, 2, 4)), _random(18, (2, 1, 1, 8))]

  def pool(x, size):
    b, h, w, c = x.shape
    return x.reshape(b, size, h // size, size, w // size, c).mean(axis=(2, 4))

  pairs = [np.mean((pool(f[i], f[j].shape[1]) - f[j][..., :f[i].shape[-1]])**2)
           for i, j in [(0, 1), (0, 2), (1, 2)]]
  value = jax.jit(losses.tffd_inter)([jnp.asarray(x, jnp.float32) for x in f])
  np.testing.assert_allclose(value, np.mean(pairs), rtol=1e-5)


def test_tffd_inter_detaches_the_deep_side():
  f1 = jax.random.normal(jax.random.key(19), (2, 4, 4, 2))
  f2 = jax.random.normal(jax.random.key(20), (2, 2, 2, 4))
  g1, g2 = jax.grad(lambda a, b: losses.tffd_inter([a, b]), argnums=(0, 1))(f1, f2)
  np.testing.assert_array_equal(g2, 0.0)
  assert np.abs(g1).max() > 1e-3


def test_tffd_intra_hand_value():
  """Channel 0 map (3, 4): normalised (0.6, 0.8), saliency 0.7; channel 1 map (1, 0):
  saliency 0.5. Sorted: (ch0 | ch1); MSE = ((3 - 1)^2 + (4 - 0)^2) / 2 = 10."""
  f = jnp.array([[3.0, 1.0], [4.0, 0.0]]).reshape(1, 1, 2, 2)
  np.testing.assert_allclose(losses.tffd_intra([f]), 10.0, rtol=1e-6)
  np.testing.assert_allclose(losses.tffd_intra([f[..., ::-1]]), 10.0, rtol=1e-6)


def test_tffd_intra_pairs_channels_by_saliency_rank():
  """Four channels of one spatial position each: saliency is the sign (+1 or -1 after
  normalising per example), so the order is set by how many examples are positive."""
  f = jnp.array([[[[-1.0, 2.0, 5.0, -3.0]]], [[[4.0, -1.0, 1.0, -2.0]]]])  # [2, 1, 1, 4]
  # Saliency: ch0 0, ch1 0, ch2 1, ch3 -1 -> order (2, 0, 1, 3) (stable among ties).
  first, second = f[..., jnp.array([2, 0])], f[..., jnp.array([1, 3])]
  np.testing.assert_allclose(losses.tffd_intra([f]), jnp.mean((first - second)**2),
                             rtol=1e-6)


def test_tffd_intra_numpy_mean_over_stages_and_gradients_both_halves():
  f = [_random(21, (3, 4, 4, 6)), _random(22, (3, 2, 2, 8))]

  def intra(x):
    norms = np.sqrt((x**2).sum(axis=(1, 2), keepdims=True))
    order = np.argsort(-(x / norms).mean(axis=(0, 1, 2)), kind='stable')
    ranked, half = x[..., order], x.shape[-1] // 2
    return np.mean((ranked[..., :half] - ranked[..., half:])**2)

  fj = [jnp.asarray(x, jnp.float32) for x in f]
  np.testing.assert_allclose(jax.jit(losses.tffd_intra)(fj), np.mean([intra(x) for x in f]),
                             rtol=1e-5)
  grad = jax.grad(lambda a: losses.tffd_intra([a]))(fj[0])
  assert np.all(np.abs(grad).max(axis=(0, 1, 2)) > 0)  # every channel, both halves


def test_tffd_intra_rejects_odd_channels():
  with pytest.raises(ValueError, match='even'):
    losses.tffd_intra([jnp.ones((1, 2, 2, 3))])


def test_tffd_ramp_and_total():
  np.testing.assert_allclose([losses.tffd_ramp(e) for e in (0, 9, 19, 100)],
                             [0.05, 0.5, 1.0, 1.0], rtol=1e-6)
  z = jax.random.normal(jax.random.key(23), (2, 5))
  y = jnp.array([1, 3])
  stages = [jax.random.normal(jax.random.key(24), (2, 4, 4, 2)),
            jax.random.normal(jax.random.key(25), (2, 2, 2, 4))]
  loss, terms = losses.tffd_loss(z, jax.nn.one_hot(y, 5), stages, 5e-4, 8e-4,
                                 losses.tffd_ramp(4))
  np.testing.assert_allclose(terms['inter'], losses.tffd_inter(stages), rtol=1e-6)
  np.testing.assert_allclose(terms['intra'], losses.tffd_intra(stages), rtol=1e-6)
  expected = losses.cross_entropy(z, y) + 0.25 * (5e-4 * terms['inter'] + 8e-4 * terms['intra'])
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
