"""Pure loss functions. Logits are [batch, classes]; every loss is a scalar.

Conventions follow the official PyTorch code of each method (docs/methods.md): KL terms
use the batch mean (torch `reduction='batchmean'`) and carry a tau^2 factor, except where
a method's official code reduces otherwise (TF-KD's element-wise mean).
"""
from typing import Callable, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
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


# ---------------------------------------------------------------------------------------
# Peer self-distillation methods (docs/methods.md).
#
# Convention: each method has one `<method>_loss` that returns `(total, terms)`, where
# `terms` maps a term's name to its scalar value before weighting and `total` is the
# weighted sum given in the docstring. The other functions are pieces (targets, schedules,
# votes, single terms) and return arrays. All math is float32. `targets` is always the
# [B, C] label distribution of `mixing.apply` (one-hot, or the Mixup/CutMix mixture), so
# every hard-label CE below is the soft CE lam * CE(y_a) + (1 - lam) * CE(y_b).
# ---------------------------------------------------------------------------------------

Terms = Dict[str, jax.Array]


def _f32(x) -> jax.Array:
  return jnp.asarray(x, jnp.float32)


def is_mixed(perm: Optional[jax.Array], lam: Optional[jax.Array], caller: str) -> bool:
  """Whether a batch is mixed: `perm` and `lam` both given (True) or both None (False).

  They are `batch['mix_perm']` and `batch['mix_lam']` of `mixing.apply`. One without the
  other is a bug of the caller: ValueError '<caller> needs both perm and lam, or neither'.
  """
  if perm is None and lam is None:
    return False
  if perm is None or lam is None:
    raise ValueError(f'{caller} needs both perm and lam, or neither')
  return True


def remix(rows: jax.Array, perm: Optional[jax.Array] = None, lam: Optional[jax.Array] = None,
          caller: str = 'remix') -> jax.Array:
  """lam * rows + (1 - lam) * rows[perm] (lam in the rows' dtype): per-example rows (images,
  targets, table rows) mixed as Mixup/CutMix mixed the batch, example i with perm[i].

  The one place this mixture is written (`mixing` uses it for images and targets; it is
  here, in a leaf, so that `table_rows` can use it too). Unmixed (`perm` and `lam` None):
  the rows as they are; `caller` names the function in `is_mixed`'s error.
  """
  if not is_mixed(perm, lam, caller):
    return rows
  lam = jnp.asarray(lam, rows.dtype)
  return lam * rows + (1 - lam) * rows[perm]


# --- TF-KD (teacher-free KD, self-training variant) -------------------------------------

def tfkd_loss(logits: jax.Array, targets: jax.Array, teacher_logits: jax.Array,
              alpha: float, temperature: float,
              multiplier: float) -> Tuple[jax.Array, Terms]:
  """TF-KD_self as its official code computes it; returns (total, {'ce', 'kd'}).

  total = (1 - alpha) * ce + alpha * kd, with
    ce = soft CE(logits, targets),
    kd = T^2 * m * mean over the B*C elements of p_c * (log p_c - log q_c),
         p = softmax(teacher / T), q = softmax(logits / T).
  The element-wise mean is torch `KLDivLoss()`'s legacy default reduction, so
  kd = m * kd_kl(logits, teacher, T) / C: on the usual batch-mean scale the KD weight is
  alpha * T^2 * m / C. The teacher is detached.
  """
  logits, targets = _f32(logits), _f32(targets)
  teacher_logits = jax.lax.stop_gradient(_f32(teacher_logits))
  terms = {'ce': soft_cross_entropy(logits, targets),
           'kd': multiplier * kd_kl(logits, teacher_logits, temperature) / logits.shape[-1]}
  return (1.0 - alpha) * terms['ce'] + alpha * terms['kd'], terms


# --- PS-KD (progressive self-knowledge distillation) ------------------------------------

def pskd_alpha(epoch, alpha_T: float, num_epochs: int) -> jax.Array:
  """alpha_t = alpha_T * (epoch + 1) / num_epochs, `epoch` 0-indexed (reaches alpha_T
  in the last epoch)."""
  return alpha_T * (_f32(epoch) + 1.0) / num_epochs


def empty_table(num_examples: int, num_classes: int) -> jax.Array:
  """A per-example table [N, C] float32 of zeros (PS-KD; AI-KD's table mode): until
  `write_rows` writes a row, `table_rows` reads it as the example's label."""
  return jnp.zeros((num_examples, num_classes), jnp.float32)


def write_rows(table: jax.Array, indices: jax.Array, rows: jax.Array) -> jax.Array:
  """The table with rows[i] (float32, detached) stored at indices[i]: after a step, each
  anchor's prediction at its dataset index (the mixed prediction under Mixup/CutMix)."""
  return table.at[indices].set(jax.lax.stop_gradient(_f32(rows)))


def table_rows(table: jax.Array, indices: jax.Array, labels: jax.Array,
               perm: Optional[jax.Array] = None, lam: Optional[jax.Array] = None,
               to_probs: Optional[Callable[[jax.Array], jax.Array]] = None) -> jax.Array:
  """The stored predictions P[idx] [B, C] of a per-example table (PS-KD; AI-KD's table
  mode); under Mixup/CutMix lam * P[a] + (1 - lam) * P[b].

  `indices` and `labels` are the dataset indices and labels of the (unmixed) batch; `perm`
  and `lam` are `batch['mix_perm']` and `batch['mix_lam']` of `mixing.apply` (so example i
  is mixed with example perm[i], as its image and its label were). `to_probs` turns stored
  rows into distributions (AI-KD's table holds logits); None: they already are.

  A row never written (all zeros: the last partial batch is dropped, so an example can miss
  an epoch, docs/methods.md) reads as the one-hot label, what the official code's row
  holds in epoch 0.
  """
  raw = _f32(table[indices])
  rows = raw if to_probs is None else to_probs(raw)
  written = jnp.any(raw != 0, axis=-1, keepdims=True)
  rows = jnp.where(written, rows, jax.nn.one_hot(labels, rows.shape[-1], dtype=rows.dtype))
  return remix(rows, perm, lam, 'table_rows')


def pskd_target(targets: jax.Array, table_rows: jax.Array, alpha_t,
                first_epoch) -> jax.Array:
  """q = (1 - alpha_t) * targets + alpha_t * P, where P = table_rows, except in the first
  epoch, where P = targets (the official code overwrites the rows with the one-hot labels
  before reading them, so q = targets). `first_epoch` may be a traced bool."""
  targets = _f32(targets)
  previous = jnp.where(first_epoch, targets, _f32(table_rows))
  alpha_t = _f32(alpha_t)
  return (1.0 - alpha_t) * targets + alpha_t * previous


def pskd_loss(logits: jax.Array, pskd_targets: jax.Array) -> Tuple[jax.Array, Terms]:
  """PS-KD's objective; returns (total, {'ce'}) with total = ce = batch mean of
  -sum_c q_c log softmax(logits)_c, q from `pskd_target` (no temperature)."""
  ce = soft_cross_entropy(_f32(logits), jax.lax.stop_gradient(_f32(pskd_targets)))
  return ce, {'ce': ce}


# --- CS-KD (class-wise self-knowledge distillation) -------------------------------------

def cskd_loss(anchor_logits: jax.Array, pair_logits: jax.Array, anchor_targets: jax.Array,
              temperature: float, lam: float) -> Tuple[jax.Array, Terms]:
  """CS-KD's objective; returns (total, {'ce', 'kd'}) with total = ce + lam * kd.

    ce = soft CE(anchor_logits, anchor_targets),
    kd = T^2 / B * sum_{i, c} p_ic (log p_ic - log q_ic),
         p = softmax(pair / T) (detached), q = softmax(anchor / T).
  Row i of `pair_logits` is the prediction for another image of anchor i's class.
  """
  pair = jax.lax.stop_gradient(_f32(pair_logits))
  anchor = _f32(anchor_logits)
  terms = {'ce': soft_cross_entropy(anchor, _f32(anchor_targets)),
           'kd': kd_kl(anchor, pair, temperature)}
  return terms['ce'] + lam * terms['kd'], terms


# --- Zipf's label smoothing --------------------------------------------------------------

def upsample2x_bilinear(x: jax.Array) -> jax.Array:
  """[B, H, W, D] -> [B, 2H, 2W, D], bilinear with half-pixel centres and clamped edges:
  torch `F.interpolate(scale_factor=2, mode='bilinear', align_corners=False)`."""
  b, h, w, d = x.shape
  return jax.image.resize(x, (b, 2 * h, 2 * w, d), method='bilinear')


def dense_votes(prepool_map: jax.Array, kernel: jax.Array, bias: jax.Array,
                upsample: bool) -> jax.Array:
  """Class votes [B, C] (float32 counts, detached) of the final Linear at every position.

  The map [B, H, W, D] (optionally upsampled x2, bilinear) is fed position by position to
  the classifier head (`kernel` [D, C], `bias` [C]); each position votes for its argmax
  class (the first on ties). The votes of an example sum to H * W (x4 when upsampled).
  """
  x = _f32(prepool_map)
  if upsample:
    x = upsample2x_bilinear(x)
  dense_logits = x @ _f32(kernel) + _f32(bias)  # [B, H, W, C]
  num_classes = dense_logits.shape[-1]
  winners = jnp.argmax(dense_logits, axis=-1)
  votes = jnp.sum(jax.nn.one_hot(winners, num_classes, dtype=jnp.float32), axis=(1, 2))
  return jax.lax.stop_gradient(votes)


def zipf_ranks(votes: jax.Array) -> jax.Array:
  """rank_c = 1 + #{c' : votes_c' > votes_c} along the last axis (float32).

  This is scipy `rankdata(-votes, method='min')`: tied classes share the smallest rank,
  so all zero-vote classes share rank 1 + (number of classes with votes).
  """
  votes = _f32(votes)
  num_classes = votes.shape[-1]
  ascending = jnp.sort(votes, axis=-1)
  not_greater = jnp.vectorize(
      lambda row, v: jnp.searchsorted(row, v, side='right'), signature='(c),(c)->(c)')
  return (1 + num_classes - not_greater(ascending, votes)).astype(jnp.float32)


def _zipf_kl_per_example(logits: jax.Array, weights: jax.Array,
                         labels: jax.Array) -> jax.Array:
  """[B]: KL(w' || softmax of the non-target logits), w' = weights without the label's
  entry, renormalised; summed over the C - 1 non-target classes."""
  is_target = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.bool_)
  w = jnp.where(is_target, 0.0, weights)
  p = w / jnp.sum(w, axis=-1, keepdims=True)
  log_norm = jax.nn.logsumexp(jnp.where(is_target, -jnp.inf, logits), axis=-1,
                              keepdims=True)
  log_q = logits - log_norm
  log_p = jnp.log(jnp.where(p > 0, p, 1.0))
  return jnp.sum(jnp.where(is_target, 0.0, p * (log_p - log_q)), axis=-1)


def zipf_loss(logits: jax.Array, votes: jax.Array, labels: jax.Array,
              label_weights: Optional[jax.Array] = None) -> jax.Array:
  """Zipf's LS term: batch mean of sum_k weight_k * KL_k.

  For a label y: w_c = 1 / rank_c (ranks of the detached `votes`, see `zipf_ranks`), the
  entry of y is deleted and w renormalised over the C - 1 other classes; KL_y =
  sum_{c != y} w_c (log w_c - log q_c) with q = softmax over the C - 1 non-target logits.

  `labels` int [B] with `label_weights` None (1), a scalar or [B]; or K label sets
  [K, B] with `label_weights` [K] or [K, B]. E.g. `zipf_label_sets` of a mixed batch gives
  [y_a, y_b] and [lam, 1 - lam], so the loss is lam * L(y_a) + (1 - lam) * L(y_b).
  """
  logits = _f32(logits)
  weights = 1.0 / zipf_ranks(jax.lax.stop_gradient(votes))
  labels = jnp.asarray(labels)
  label_weights = _f32(1.0 if label_weights is None else label_weights)
  if labels.ndim == 1:  # one label set: weights are a scalar or per example [B]
    labels, label_weights = labels[None], label_weights[None]
  elif label_weights.ndim == 1:  # one weight per label set [K]
    label_weights = label_weights[:, None]
  per_set = jax.vmap(lambda y: _zipf_kl_per_example(logits, weights, y))(labels)  # [K, B]
  return jnp.mean(jnp.sum(label_weights * per_set, axis=0))


def zipf_label_sets(labels: jax.Array, perm: Optional[jax.Array] = None,
                    lam: Optional[jax.Array] = None) -> Tuple[jax.Array, jax.Array]:
  """(label sets [K, B], weights [K]) for `zipf_loss`: ([y], [1]) for an unmixed batch,
  ([y, y[perm]], [lam, 1 - lam]) for `batch['mix_perm']`, `batch['mix_lam']`."""
  if not is_mixed(perm, lam, 'zipf_label_sets'):
    return labels[None], jnp.ones((1,), jnp.float32)
  lam = _f32(lam)
  return jnp.stack([labels, labels[perm]]), jnp.stack([lam, 1.0 - lam])


def zipf_ls_loss(logits: jax.Array, targets: jax.Array, votes: jax.Array,
                 labels: jax.Array, label_weights: Optional[jax.Array],
                 lam: float) -> Tuple[jax.Array, Terms]:
  """Zipf's LS objective; returns (total, {'ce', 'zipf'}) with total = ce + lam * zipf,
  ce = soft CE(logits, targets) and zipf = `zipf_loss(logits, votes, labels,
  label_weights)`."""
  terms = {'ce': soft_cross_entropy(_f32(logits), _f32(targets)),
           'zipf': zipf_loss(logits, votes, labels, label_weights)}
  return terms['ce'] + lam * terms['zipf'], terms


# --- TF-FD (teacher-free feature distillation) ------------------------------------------

def _adaptive_pool_matrix(size_in: int, size_out: int) -> np.ndarray:
  """[size_out, size_in] averaging matrix of torch's adaptive pooling: output i averages
  inputs floor(i * n / m) .. ceil((i + 1) * n / m) - 1."""
  matrix = np.zeros((size_out, size_in), np.float32)
  for i in range(size_out):
    start = (i * size_in) // size_out
    end = -((-(i + 1) * size_in) // size_out)
    matrix[i, start:end] = 1.0 / (end - start)
  return matrix


def adaptive_avg_pool(x: jax.Array, height: int, width: int) -> jax.Array:
  """torch `F.adaptive_avg_pool2d` on NHWC [B, H, W, C] -> [B, height, width, C] (for an
  integer ratio, plain average pooling with kernel = stride = ratio)."""
  _, h, w, _ = x.shape
  if (h, w) == (height, width):
    return x
  rows = jnp.asarray(_adaptive_pool_matrix(h, height))
  cols = jnp.asarray(_adaptive_pool_matrix(w, width))
  return jnp.einsum('bhwc,ih,jw->bijc', x, rows, cols)


def _inter_pair(shallow: jax.Array, deep: jax.Array) -> jax.Array:
  """MSE(pool(shallow), stop_gradient(deep)[..., :C']) over the common size and the first
  C' = min(C_shallow, C_deep) channels (the larger map is pooled to the smaller)."""
  height = min(shallow.shape[1], deep.shape[1])
  width = min(shallow.shape[2], deep.shape[2])
  channels = min(shallow.shape[-1], deep.shape[-1])
  source = adaptive_avg_pool(shallow, height, width)[..., :channels]
  target = adaptive_avg_pool(jax.lax.stop_gradient(deep), height, width)[..., :channels]
  return jnp.mean((source - target)**2)


def tffd_inter(stages: Sequence[jax.Array]) -> jax.Array:
  """Inter-layer term: the mean over all pairs i < j (i shallower) of
  MSE(avgpool(f_i to f_j's spatial size), stop_gradient(f_j[..., :C_i])). NHWC maps."""
  stages = [_f32(f) for f in stages]
  pairs = [_inter_pair(stages[i], stages[j])
           for i in range(len(stages)) for j in range(i + 1, len(stages))]
  if not pairs:
    raise ValueError('tffd_inter needs at least two stages')
  return sum(pairs) / len(pairs)


def _intra_stage(f: jax.Array) -> jax.Array:
  """Channels sorted by saliency (descending): MSE(first half, second half), no detach.
  saliency_c = mean over (n, h, w) of f[n, :, :, c] / max(||f[n, :, :, c]||_2, 1e-12)."""
  channels = f.shape[-1]
  if channels % 2:
    raise ValueError(f'tffd_intra needs an even channel count, got {channels}')
  norms = jnp.sqrt(jnp.sum(f**2, axis=(1, 2), keepdims=True))
  saliency = jnp.mean(f / jnp.maximum(norms, 1e-12), axis=(0, 1, 2))
  order = jnp.argsort(-jax.lax.stop_gradient(saliency), stable=True)
  ranked = f[..., order]
  half = channels // 2
  return jnp.mean((ranked[..., :half] - ranked[..., half:])**2)


def tffd_intra(stages: Sequence[jax.Array]) -> jax.Array:
  """Intra-layer term: the mean over stages of `_intra_stage` (see there)."""
  if not stages:
    raise ValueError('tffd_intra needs at least one stage')
  return sum(_intra_stage(_f32(f)) for f in stages) / len(stages)


def tffd_ramp(epoch) -> jax.Array:
  """min(1, e / 20) for the 1-indexed epoch e = epoch + 1 (`epoch` 0-indexed, as
  `pskd_alpha`): 1/20 in the first epoch, 1 from the 20th (epoch index 19) on."""
  return jnp.minimum(1.0, (_f32(epoch) + 1.0) / 20.0)


def tffd_loss(logits: jax.Array, targets: jax.Array, stages: Sequence[jax.Array],
              lambda_inter: float, lambda_intra: float,
              ramp) -> Tuple[jax.Array, Terms]:
  """TF-FD's objective; returns (total, {'ce', 'inter', 'intra'}) with
  total = ce + ramp * (lambda_inter * inter + lambda_intra * intra), ramp = `tffd_ramp`."""
  terms = {'ce': soft_cross_entropy(_f32(logits), _f32(targets)),
           'inter': tffd_inter(stages), 'intra': tffd_intra(stages)}
  feature = lambda_inter * terms['inter'] + lambda_intra * terms['intra']
  return terms['ce'] + _f32(ramp) * feature, terms
