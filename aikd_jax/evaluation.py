"""Test-set classification metrics (docs/usage.md, *Outputs*; PS-KD's official evaluation).

All functions take host arrays: `logits` float [N, C] and `labels` int [N],
and compute in float64.

Why hand-written NumPy rather than `clu.metrics`: these metrics need all the
test logits at once (the ECE bins, macro F1 over the whole confusion matrix,
and fitting a temperature by minimising the NLL over the whole set), which
clu.metrics' per-batch mergeable accumulators do not provide. The test set is
small (10k x 100 logits), so gathering it on the host is cheap.

Conventions, matching PS-KD's `main.val` / `utils/metric.py`:
  * errors and ECE are in percent; NLL is a plain mean (natural log);
  * top-k: correct if the label is among the k largest logits;
  * ECE: confidence = max softmax, equal-width bins with upper edges
    `np.arange(b, 1 + b, b)` (b = 1 / n_bins), membership lower < conf <= upper.
"""
from typing import NamedTuple

import numpy as np

# Temperatures are fitted inside [1 / _BETA_MAX, 1 / _BETA_MIN]. The optimum
# lies outside only in degenerate cases: no misclassified example (NLL keeps
# falling as T -> 0) or logits no better than chance (optimum at T -> inf).
_BETA_MIN = 1e-4
_BETA_MAX = 1e4


class ReliabilityBins(NamedTuple):
  """Per-bin calibration statistics; every field has shape [n_bins].

  Attributes:
    lower: lower bin edges (exclusive).
    upper: upper bin edges (inclusive).
    count: number of examples whose confidence falls in the bin.
    accuracy: fraction of them whose argmax is the label (0 if empty).
    confidence: their mean confidence (0 if empty).
  """
  lower: np.ndarray
  upper: np.ndarray
  count: np.ndarray
  accuracy: np.ndarray
  confidence: np.ndarray


def _check(logits, labels) -> tuple[np.ndarray, np.ndarray]:
  """Returns (float64 logits [N, C], int64 labels [N]) after validating them.

  Raises:
    ValueError: on bad shapes, empty input, labels outside [0, C) or
      non-finite logits (NaN confidences would silently drop out of every
      ECE bin and give a wrong but finite number).
  """
  logits = np.asarray(logits, dtype=np.float64)
  labels = np.asarray(labels)
  if logits.ndim != 2 or labels.ndim != 1 or logits.shape[0] != labels.shape[0]:
    raise ValueError(f'Expected logits [N, C] and labels [N], got '
                     f'{logits.shape} and {labels.shape}.')
  if logits.shape[0] == 0 or logits.shape[1] == 0:
    raise ValueError(f'Empty logits: {logits.shape}.')
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f'Labels must be integers, got {labels.dtype}.')
  labels = labels.astype(np.int64)
  if labels.min() < 0 or labels.max() >= logits.shape[1]:
    raise ValueError(f'Labels must lie in [0, {logits.shape[1]}), got '
                     f'[{labels.min()}, {labels.max()}].')
  if not np.all(np.isfinite(logits)):
    raise ValueError('Logits contain NaN or Inf.')
  return logits, labels


def _log_softmax(logits: np.ndarray) -> np.ndarray:
  """Numerically stable log-softmax over the last axis."""
  shifted = logits - logits.max(axis=-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _softmax(logits: np.ndarray) -> np.ndarray:
  """Numerically stable softmax over the last axis."""
  return np.exp(_log_softmax(logits))


def topk_error(logits, labels, k: int) -> float:
  """Top-k error in percent: 100 - % of examples whose label is in the top k.

  Ties are broken towards the lower class index (as `np.argmax` and a stable
  sort do), so all-equal logits are not counted as correct for every class.

  Args:
    logits: float [N, C].
    labels: int [N].
    k: 1 <= k <= C.

  Returns:
    The error in percent.
  """
  logits, labels = _check(logits, labels)
  if not 1 <= k <= logits.shape[1]:
    raise ValueError(f'k must lie in [1, {logits.shape[1]}], got {k}.')
  label_logit = np.take_along_axis(logits, labels[:, None], axis=1)
  classes = np.arange(logits.shape[1])[None, :]
  # Position of the label in a stable descending sort of each row.
  rank = ((logits > label_logit) |
          ((logits == label_logit) & (classes < labels[:, None]))).sum(axis=1)
  return float(100.0 - 100.0 * np.mean(rank < k))


def f1_macro(logits, labels, num_classes: int) -> float:
  """Macro F1 of the argmax in percent, as sklearn `f1_score(average='macro')`.

  Like sklearn's default (`labels=None`), the unweighted mean runs over the
  classes present in the labels or the predictions; a class's F1 is
  2 TP / (2 TP + FP + FN), which is 0 when it has no true positive (sklearn's
  zero_division behaviour for precision + recall = 0).

  Args:
    logits: float [N, C].
    labels: int [N].
    num_classes: C; sizes the confusion counts.

  Returns:
    The macro F1 in percent.
  """
  logits, labels = _check(logits, labels)
  if logits.shape[1] != num_classes:
    raise ValueError(f'logits have {logits.shape[1]} classes, expected '
                     f'{num_classes}.')
  preds = logits.argmax(axis=1)
  tp = np.bincount(labels[preds == labels], minlength=num_classes)
  n_pred = np.bincount(preds, minlength=num_classes)
  n_true = np.bincount(labels, minlength=num_classes)
  present = (n_pred + n_true) > 0
  # 2TP + FP + FN = n_pred + n_true, which is > 0 for every present class.
  f1 = 2.0 * tp[present] / (n_pred[present] + n_true[present])
  return float(100.0 * f1.mean())


def _bin_edges(n_bins: int) -> tuple[np.ndarray, np.ndarray]:
  """Returns (lower, upper) bin edges, bit-identical to PS-KD's for 10 bins."""
  if n_bins < 1:
    raise ValueError(f'n_bins must be >= 1, got {n_bins}.')
  bin_size = 1.0 / n_bins
  upper = np.arange(bin_size, 1.0 + bin_size, bin_size)[:n_bins]
  # No-ops for 10 bins; guard against float drift for other counts so that a
  # confidence of exactly 1.0 is always counted.
  upper[-1] = 1.0
  lower = upper - bin_size
  lower[0] = 0.0
  return lower, upper


def reliability_bins(logits, labels, n_bins: int = 10) -> ReliabilityBins:
  """Bins the examples by confidence (max softmax); see `ReliabilityBins`.

  Membership is lower < confidence <= upper, so a confidence of exactly 0.5
  falls in (0.4, 0.5].

  Args:
    logits: float [N, C].
    labels: int [N].
    n_bins: number of equal-width bins over [0, 1].

  Returns:
    A `ReliabilityBins`.
  """
  logits, labels = _check(logits, labels)
  probs = _softmax(logits)
  conf = probs.max(axis=1)
  correct = (logits.argmax(axis=1) == labels).astype(np.float64)
  lower, upper = _bin_edges(n_bins)
  member = (conf[None, :] > lower[:, None]) & (conf[None, :] <= upper[:, None])
  count = member.sum(axis=1)
  denom = np.maximum(count, 1)
  accuracy = (member * correct[None, :]).sum(axis=1) / denom
  confidence = (member * conf[None, :]).sum(axis=1) / denom
  return ReliabilityBins(lower, upper, count, accuracy, confidence)


def ece_from_bins(bins: ReliabilityBins) -> float:
  """ECE in percent: 100 * sum_b n_b |acc_b - conf_b| / N."""
  total = bins.count.sum()
  gaps = bins.count * np.abs(bins.accuracy - bins.confidence)
  return float(100.0 * gaps.sum() / total)


def ece(logits, labels, n_bins: int = 10) -> float:
  """Expected calibration error in percent (empty bins contribute 0)."""
  return ece_from_bins(reliability_bins(logits, labels, n_bins))


def nll(logits, labels) -> float:
  """Mean negative log-likelihood (natural log) of the labels."""
  logits, labels = _check(logits, labels)
  log_probs = _log_softmax(logits)
  return float(-np.take_along_axis(log_probs, labels[:, None], axis=1).mean())


def _nll_derivatives(logits: np.ndarray, label_logit: np.ndarray,
                     beta: float) -> tuple[float, float]:
  """First and second derivatives of NLL(beta * logits) w.r.t. beta.

  d/dbeta = mean(E_p[z] - z_y) and d2/dbeta2 = mean(Var_p[z]) >= 0, with
  p = softmax(beta * z): the NLL is convex in beta.
  """
  probs = _softmax(beta * logits)
  mean_z = (probs * logits).sum(axis=1)
  var_z = (probs * (logits - mean_z[:, None]) ** 2).sum(axis=1)
  return float(np.mean(mean_z - label_logit)), float(np.mean(var_z))


def fit_temperature(logits, labels) -> float:
  """Returns the T > 0 that minimises NLL(logits / T) (Guo et al., 2017).

  Method: NLL(beta * logits) is convex in beta = 1 / T, so the minimum is the
  root of its derivative g(beta), which is increasing. We keep a bracket
  [lo, hi] with g(lo) < 0 < g(hi), start at beta = 1 and take Newton steps,
  falling back to bisection (geometric, as the bracket spans decades) when a
  step leaves the bracket. This converges to machine precision in a handful of
  iterations. The reference (gpleiss) runs LBFGS from T = 1.5 for 50
  iterations; on this convex problem it finds the same minimum, only less
  precisely.

  The search is limited to beta in [1e-4, 1e4]; if the minimum lies outside
  (all examples correct: T -> 0; logits no better than chance: T -> inf) the
  nearest bound is returned.

  Args:
    logits: float [N, C].
    labels: int [N].

  Returns:
    The fitted temperature T.
  """
  logits, labels = _check(logits, labels)
  label_logit = np.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
  lo, hi = _BETA_MIN, _BETA_MAX
  if _nll_derivatives(logits, label_logit, lo)[0] >= 0.0:
    return 1.0 / lo
  if _nll_derivatives(logits, label_logit, hi)[0] <= 0.0:
    return 1.0 / hi
  beta = 1.0
  for _ in range(200):
    grad, hess = _nll_derivatives(logits, label_logit, beta)
    if grad == 0.0:
      break
    if grad < 0.0:
      lo = beta
    else:
      hi = beta
    step = grad / hess if hess > 0.0 else np.inf
    new_beta = beta - step
    if not lo < new_beta < hi:
      new_beta = np.sqrt(lo * hi)
    converged = abs(new_beta - beta) <= 1e-13 * beta
    beta = new_beta
    if converged or hi - lo <= 1e-13 * lo:
      break
  return float(1.0 / beta)


def temperature_scaled_ece(logits, labels,
                           n_bins: int = 10) -> tuple[float, float]:
  """ECE after temperature scaling, by 2-fold cross-fitting on the test set.

  The paper's protocol has no validation split, so the test set is split by
  index into a first and a second half; T is fitted on one half and the ECE
  of logits / T is scored on the other, then the halves swap.

  Args:
    logits: float [N, C], N >= 2.
    labels: int [N].
    n_bins: ECE bins.

  Returns:
    (mean of the two ECEs in percent, mean of the two temperatures).
  """
  temps, eces = _cross_fit(logits, labels, n_bins)
  return float(np.mean(eces)), float(np.mean(temps))


def _cross_fit(logits, labels, n_bins: int = 10) -> tuple[list[float], list[float]]:
  """([T of each fold], [ECE % of the other half at that T]); see temperature_scaled_ece."""
  logits, labels = _check(logits, labels)
  if logits.shape[0] < 2:
    raise ValueError('Temperature-scaled ECE needs at least 2 examples.')
  half = logits.shape[0] // 2
  folds = [(slice(None, half), slice(half, None)),
           (slice(half, None), slice(None, half))]
  eces, temps = [], []
  for fit_idx, score_idx in folds:
    t = fit_temperature(logits[fit_idx], labels[fit_idx])
    eces.append(ece(logits[score_idx] / t, labels[score_idx], n_bins))
    temps.append(t)
  return temps, eces


# A fitted T within a relative 1e-9 of the search's ends is a clamp, not a minimum.
_T_LOWEST, _T_HIGHEST = 1.0 / _BETA_MAX * (1 + 1e-9), 1.0 / _BETA_MIN * (1 - 1e-9)


def temperature_at_bound(t: float) -> bool:
  """True when a fitted T is a clamp of the search, not a minimum (see fit_temperature)."""
  return not _T_LOWEST < t < _T_HIGHEST


def _reported_temperature(temps: list[float]) -> tuple[float, bool]:
  """(temperature to report, whether a fold's fit hit its bound).

  At a bound the optimum lies beyond the search (logits no better than chance: T -> inf;
  no misclassified example: T -> 0), so the limit is reported (inf or 0), never the
  clamp, which would look like a real temperature.
  """
  if not any(temperature_at_bound(t) for t in temps):
    return float(np.mean(temps)), False
  return (float('inf') if max(temps) >= _T_HIGHEST else 0.0), True


def classification_metrics(logits, labels,
                           num_classes: int) -> dict[str, float]:
  """All test metrics, keyed `top1_err, top5_err, f1_macro, ece, nll, ece_ts,
  temperature, ts_temperature_at_bound` (top-5 uses min(5, num_classes)).

  `ts_temperature_at_bound` is True when the temperature fit of a fold hit its search
  bound; `temperature` is then inf (or 0), not the clamp."""
  logits, labels = _check(logits, labels)
  temps, eces = _cross_fit(logits, labels)
  temperature, at_bound = _reported_temperature(temps)
  return {
      'top1_err': topk_error(logits, labels, 1),
      'top5_err': topk_error(logits, labels, min(5, num_classes)),
      'f1_macro': f1_macro(logits, labels, num_classes),
      'ece': ece(logits, labels),
      'nll': nll(logits, labels),
      'ece_ts': float(np.mean(eces)),
      'temperature': temperature,
      'ts_temperature_at_bound': at_bound,
  }
