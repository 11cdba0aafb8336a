"""Tests for aikd_jax.evaluation and aikd_jax.plots (hand-computed values)."""
import numpy as np
import pytest

from aikd_jax import evaluation
from aikd_jax import plots


def _logits_from_probs(probs):
  """Logits whose softmax is `probs` (rows sum to 1)."""
  return np.log(np.asarray(probs, dtype=np.float64))


def _one_hot_logits(preds, num_classes, scale=5.0):
  """Logits whose argmax is `preds`."""
  return scale * np.eye(num_classes)[np.asarray(preds)]


# --- top-k -------------------------------------------------------------------


def test_topk_error_hand_computed():
  row = [0.1, 0.5, 0.3, 0.9, 0.2, 0.0]  # Descending: 3, 1, 2, 4, 0, 5.
  logits = np.array([row] * 4)
  labels = np.array([3, 2, 5, 0])  # Ranks 0, 2, 5, 4.
  assert evaluation.topk_error(logits, labels, 1) == pytest.approx(75.0)
  assert evaluation.topk_error(logits, labels, 3) == pytest.approx(50.0)
  assert evaluation.topk_error(logits, labels, 5) == pytest.approx(25.0)
  assert evaluation.topk_error(logits, labels, 6) == pytest.approx(0.0)


def test_topk_error_ties_follow_argmax():
  logits = np.zeros((4, 3))
  labels = np.array([0, 1, 2, 0])
  # Ties go to the lowest index, as argmax: only label 0 is top-1.
  assert evaluation.topk_error(logits, labels, 1) == pytest.approx(50.0)
  assert evaluation.topk_error(logits, labels, 2) == pytest.approx(25.0)


def test_topk_error_rejects_bad_k():
  with pytest.raises(ValueError):
    evaluation.topk_error(np.zeros((2, 3)), np.array([0, 1]), 4)


# --- macro F1 ----------------------------------------------------------------


def test_f1_macro_hand_computed():
  labels = np.array([0, 0, 0, 1, 1, 2, 2, 3])
  preds = np.array([0, 0, 1, 1, 4, 2, 0, 0])
  # Confusion by hand (class: TP, FP, FN):
  #   0: 2, 2, 1   P = 2/4, R = 2/3
  #   1: 1, 1, 1   P = 1/2, R = 1/2
  #   2: 1, 0, 1   P = 1,   R = 1/2
  #   3: 0, 0, 1   F1 = 0
  #   4: 0, 1, 0   F1 = 0 (only predicted: still averaged, as sklearn)
  #   5: absent from labels and predictions: not averaged.
  def f1(p, r):
    return 2 * p * r / (p + r)
  expected = 100 * (f1(2 / 4, 2 / 3) + f1(1 / 2, 1 / 2) + f1(1, 1 / 2)) / 5
  got = evaluation.f1_macro(_one_hot_logits(preds, 6), labels, 6)
  assert got == pytest.approx(expected, abs=1e-12)


def test_f1_macro_perfect_and_wrong_num_classes():
  labels = np.array([0, 1, 2, 1])
  assert evaluation.f1_macro(_one_hot_logits(labels, 4), labels, 4) == 100.0
  with pytest.raises(ValueError):
    evaluation.f1_macro(_one_hot_logits(labels, 4), labels, 5)


# --- ECE ---------------------------------------------------------------------


def _hand_ece_example():
  """Two-class example; confidence = max prob; argmax = class 0 unless noted."""
  logits = np.concatenate([
      np.zeros((1, 2)),                    # conf exactly 0.5, pred 0
      _logits_from_probs([[0.55, 0.45]]),  # bin (0.5, 0.6]
      _logits_from_probs([[0.58, 0.42]]),  # bin (0.5, 0.6]
      _logits_from_probs([[0.95, 0.05]]),  # bin (0.9, 1.0]
      _logits_from_probs([[0.05, 0.95]]),  # bin (0.9, 1.0], pred 1
      _logits_from_probs([[0.91, 0.09]]),  # bin (0.9, 1.0]
      np.array([[0.0, -1000.0]]),          # conf exactly 1.0
  ])
  labels = np.array([0, 1, 0, 0, 1, 1, 0])
  return logits, labels


def test_reliability_bins_hand_built():
  logits, labels = _hand_ece_example()
  bins = evaluation.reliability_bins(logits, labels)
  np.testing.assert_allclose(bins.upper, np.arange(1, 11) / 10, rtol=1e-12)
  np.testing.assert_allclose(bins.lower, np.arange(0, 10) / 10, atol=1e-12)
  # 0.5 falls in (0.4, 0.5], not (0.5, 0.6]; 1.0 in (0.9, 1.0].
  np.testing.assert_array_equal(bins.count, [0, 0, 0, 0, 1, 2, 0, 0, 0, 4])
  np.testing.assert_allclose(bins.accuracy[[4, 5, 9]], [1.0, 0.5, 0.75])
  np.testing.assert_allclose(bins.confidence[[4, 5, 9]],
                             [0.5, 0.565, (0.95 + 0.95 + 0.91 + 1.0) / 4])
  empty = bins.count == 0
  assert np.all(bins.accuracy[empty] == 0)
  assert np.all(bins.confidence[empty] == 0)


def test_ece_hand_built():
  logits, labels = _hand_ece_example()
  # Gaps: bin 4: 1 * |1 - 0.5|; bin 5: 2 * |0.5 - 0.565|;
  # bin 9: 4 * |0.75 - 0.9525|.
  expected = 100 * (0.5 + 2 * 0.065 + 4 * 0.2025) / 7
  assert evaluation.ece(logits, labels) == pytest.approx(expected, abs=1e-9)


def test_ece_zero_when_perfectly_calibrated():
  # 10 examples at confidence 0.8 with 8 correct; 5 at 0.6 with 3 correct.
  logits = np.concatenate([
      np.repeat(_logits_from_probs([[0.8, 0.2]]), 10, axis=0),
      np.repeat(_logits_from_probs([[0.4, 0.6]]), 5, axis=0),
  ])
  labels = np.array([0] * 8 + [1] * 2 + [1] * 3 + [0] * 2)
  assert evaluation.ece(logits, labels) == pytest.approx(0.0, abs=1e-10)


def test_ece_fully_wrong_confident():
  logits = np.array([[10.0, -10.0]] * 3)
  labels = np.array([1, 1, 1])
  conf = 1 / (1 + np.exp(-20.0))
  assert evaluation.ece(logits, labels) == pytest.approx(100 * conf)


# --- NLL ---------------------------------------------------------------------


def test_nll_direct_formula():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(7, 5))
  labels = rng.integers(0, 5, size=7)
  probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  expected = -np.mean(np.log(probs[np.arange(7), labels]))
  assert evaluation.nll(logits, labels) == pytest.approx(expected, rel=1e-12)


def test_nll_stable_for_large_logits():
  logits = np.array([[1000.0, 0.0], [1000.0, 999.0]])
  labels = np.array([1, 1])
  # -log softmax of the label: 1000 for the first row; for the second,
  # logsumexp(1000, 999) - 999 = 1 + log(1 + e^-1).
  expected = (1000.0 + 1.0 + np.log1p(np.exp(-1.0))) / 2
  assert evaluation.nll(logits, labels) == pytest.approx(expected, rel=1e-12)


def test_rejects_non_finite_and_bad_labels():
  with pytest.raises(ValueError):
    evaluation.nll(np.array([[np.nan, 0.0]]), np.array([0]))
  with pytest.raises(ValueError):
    evaluation.nll(np.zeros((1, 2)), np.array([2]))


# --- temperature scaling -----------------------------------------------------


def _sampled_problem(t_true, n=20000, c=10, seed=0):
  """Logits z and labels drawn from softmax(z / t_true)."""
  rng = np.random.default_rng(seed)
  z = 3.0 * rng.normal(size=(n, c))
  p = np.exp(z / t_true)
  p /= p.sum(axis=1, keepdims=True)
  u = rng.random(size=(n, 1))
  labels = np.minimum((p.cumsum(axis=1) < u).sum(axis=1), c - 1)
  return z, labels


@pytest.mark.parametrize('t_true', [0.5, 2.0])
def test_fit_temperature_recovers_known_temperature(t_true):
  z, labels = _sampled_problem(t_true)
  t_fit = evaluation.fit_temperature(z, labels)
  assert abs(t_fit - t_true) < 0.04 * t_true


def test_fitted_temperature_is_a_minimum():
  z, labels = _sampled_problem(1.7, n=5000, seed=1)
  t = evaluation.fit_temperature(z, labels)
  best = evaluation.nll(z / t, labels)
  for factor in (0.99, 1.01, 0.9999, 1.0001):
    assert evaluation.nll(z / (t * factor), labels) >= best


def test_fit_temperature_degenerate_cases_hit_bounds():
  labels = np.array([0, 1, 2])
  all_right = _one_hot_logits(labels, 3)
  all_wrong = -_one_hot_logits(labels, 3)  # The label is the smallest logit.
  assert evaluation.fit_temperature(all_right, labels) <= 1e-4 + 1e-12
  assert evaluation.fit_temperature(all_wrong, labels) >= 1e4 - 1e-6


def test_temperature_scaled_ece_uses_swapped_halves():
  z, labels = _sampled_problem(1.5, n=301, c=5, seed=2)
  z[150:] *= 3.0  # Make the halves differ, so a wrong split shows.
  a, b = slice(0, 150), slice(150, None)
  t_a = evaluation.fit_temperature(z[a], labels[a])
  t_b = evaluation.fit_temperature(z[b], labels[b])
  expected_ece = (evaluation.ece(z[b] / t_a, labels[b]) +
                  evaluation.ece(z[a] / t_b, labels[a])) / 2
  ece_ts, temperature = evaluation.temperature_scaled_ece(z, labels)
  assert ece_ts == pytest.approx(expected_ece, rel=1e-9)
  assert temperature == pytest.approx((t_a + t_b) / 2, rel=1e-9)
  assert abs(t_a - t_b) > 0.5  # The check above could tell the halves apart.


def test_temperature_scaled_ece_fits_each_half(monkeypatch):
  seen = []
  def fake_fit(logits, labels):
    seen.append((len(labels), float(logits[0, 0])))
    return 1.0
  monkeypatch.setattr(evaluation, 'fit_temperature', fake_fit)
  z = np.arange(10, dtype=np.float64)[:, None] * np.array([[1.0, 0.0]])
  evaluation.temperature_scaled_ece(z, np.zeros(10, dtype=int))
  assert seen == [(5, 0.0), (5, 5.0)]


# --- summary and plot --------------------------------------------------------


def test_classification_metrics_keys_and_values():
  z, labels = _sampled_problem(1.0, n=400, c=3, seed=3)
  metrics = evaluation.classification_metrics(z, labels, num_classes=3)
  assert set(metrics) == {'top1_err', 'top5_err', 'f1_macro', 'ece', 'nll',
                          'ece_ts', 'temperature', 'ts_temperature_at_bound'}
  assert metrics.pop('ts_temperature_at_bound') is False
  assert all(isinstance(v, float) for v in metrics.values())
  assert metrics['top5_err'] == 0.0  # top-min(5, 3) = top-3 of 3 classes.
  assert metrics['top1_err'] == evaluation.topk_error(z, labels, 1)
  assert metrics['ece'] == evaluation.ece(z, labels)
  assert metrics['nll'] == evaluation.nll(z, labels)
  assert 0.5 < metrics['temperature'] < 2.0


def test_reliability_diagram_writes_png(tmp_path):
  z, labels = _sampled_problem(2.0, n=500, c=10, seed=4)
  path = tmp_path / 'sub' / 'reliability.png'
  plots.reliability_diagram(z, labels, str(path), title='test')
  data = path.read_bytes()
  assert data[:8] == b'\x89PNG\r\n\x1a\n'
  assert len(data) > 5000


def test_metrics_report_a_temperature_fit_at_its_bound():
  """A near-random model: the fit is clamped; report inf and the flag, not 1e4 or 5000."""
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 10, 400)
  z = rng.normal(size=(400, 10))
  z[np.arange(400), labels] -= 1.0  # worse than chance on both halves
  m = evaluation.classification_metrics(z, labels, 10)
  assert m['ts_temperature_at_bound'] is True
  assert m['temperature'] == float('inf')
  assert np.isfinite(m['ece_ts'])


def test_metrics_temperature_within_bounds_is_the_fold_mean():
  z, labels = _sampled_problem(1.5, n=301, c=5, seed=2)
  m = evaluation.classification_metrics(z, labels, 5)
  ece_ts, temperature = evaluation.temperature_scaled_ece(z, labels)
  assert m['ts_temperature_at_bound'] is False
  assert (m['temperature'], m['ece_ts']) == (temperature, ece_ts)
  # By hand: fit T on each half, score the other half at it, average both.
  t1 = evaluation.fit_temperature(z[:150], labels[:150])
  t2 = evaluation.fit_temperature(z[150:], labels[150:])
  assert m['temperature'] == pytest.approx((t1 + t2) / 2, rel=1e-12)
  assert m['ece_ts'] == pytest.approx((evaluation.ece(z[150:] / t1, labels[150:])
                                       + evaluation.ece(z[:150] / t2, labels[:150])) / 2)
  assert not evaluation.temperature_at_bound(temperature)
  assert evaluation.temperature_at_bound(1e4) and evaluation.temperature_at_bound(1e-4)
