"""The numbers of a short deterministic run, pinned: a change to what training computes
cannot pass unnoticed.

The session's smoke run (tests/conftest.py `finished`: configs/demo.py:smoke on the fake
Fashion-MNIST files, superior then AI-KD student, 6 steps each) is compared with
tests/golden/pinned_metrics.json to 1e-6. When a change is meant to alter the training
computation (data order, augmentation, a loss, initialisation, BatchNorm, random streams),
regenerate the file in the same commit and give the reason in its message:

  AIKD_UPDATE_GOLDEN=1 python -m pytest -p no:xdist tests/test_pinned.py
"""
import json
import os

import pytest

from aikd_jax import results

GOLDEN = os.path.join(os.path.dirname(__file__), 'golden', 'pinned_metrics.json')
# ts_temperature_at_bound is a flag, not a number.
PINNED = tuple(k for k in results.METRIC_KEYS if k != 'ts_temperature_at_bound')
UPDATE_HINT = (
    'the pinned metrics of the smoke run changed, so the training computation changed. If '
    'that is intended, regenerate tests/golden/pinned_metrics.json in the same commit '
    '(AIKD_UPDATE_GOLDEN=1 python -m pytest -p no:xdist tests/test_pinned.py) and say in '
    'the commit message why the numbers moved; otherwise it is a bug')


def _metrics(run_results: dict) -> dict:
  return {phase: {k: run_results[phase][k] for k in PINNED} for phase in ('superior', 'student')}


@pytest.mark.slow
def test_smoke_run_metrics_match_the_pinned_values(finished):
  _, run_results = finished
  got = _metrics(run_results)
  if os.environ.get('AIKD_UPDATE_GOLDEN'):
    with open(GOLDEN, 'w') as f:
      json.dump(got, f, indent=2, sort_keys=True)
      f.write('\n')
  with open(GOLDEN) as f:
    want = json.load(f)
  assert set(got) == set(want), UPDATE_HINT
  for phase, metrics in want.items():
    assert set(got[phase]) == set(metrics), UPDATE_HINT
    for key, value in metrics.items():
      if isinstance(value, str):  # results.json writes an infinite temperature as 'inf'
        value = float(value)
      assert float(got[phase][key]) == pytest.approx(value, rel=1e-6, abs=1e-6), (
          f'{phase} {key}: {got[phase][key]!r} != pinned {value!r}; {UPDATE_HINT}')
