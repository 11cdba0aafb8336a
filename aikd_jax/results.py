"""A phase's results: `results.json`, `predictions.npz` and `reliability.png`, in one place.

`results.json` is written last and atomically: its presence marks a finished phase. Its
keys are `KEYS` (docs/usage.md, "Outputs"); a reader of a table needs nothing else: the method
and its hyper-parameters, the superior it learned from, the data, model, epochs and
seed, the final and the best epoch's top-1 error, throughput, and the provenance
(config, versions, devices, code commit).
"""
import dataclasses
import importlib.metadata
import io
import json
import os
import subprocess

import jax
from jax.experimental import multihost_utils
import numpy as np

from aikd_jax import paths, plots

RESULTS_JSON = 'results.json'
PREDICTIONS = 'predictions.npz'
METRIC_KEYS = ('top1_err', 'top5_err', 'f1_macro', 'ece', 'nll', 'ece_ts', 'temperature',
               'ts_temperature_at_bound')
KEYS = METRIC_KEYS + (
    'phase', 'method', 'method_config', 'dataset', 'arch', 'epochs', 'steps', 'seed',
    'best_top1_err', 'best_epoch', 'superior', 'train_time_s', 'images_per_s', 'throughput',
    'provenance')
_PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'tensorflow-datasets',
             'tensorflow', 'tensorflow-cpu', 'clu', 'numpy')


def _git(*args: str) -> str | None:
  here = os.path.dirname(os.path.abspath(__file__))
  try:
    out = subprocess.run(['git', *args], cwd=here, capture_output=True, text=True, timeout=10)
  except (OSError, subprocess.SubprocessError):
    return None
  return out.stdout.strip() if out.returncode == 0 else None


def provenance(config_dict: dict) -> dict:
  """What reproduces a number: the resolved config, versions, devices, code commit."""
  versions = {}
  for name in _PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass  # e.g. tensorflow-cpu where tensorflow is installed
  commit = _git('rev-parse', 'HEAD')
  return {
      'config': config_dict, 'versions': versions,
      'devices': {'kind': jax.devices()[0].device_kind, 'count': jax.device_count(),
                  'processes': jax.process_count(), 'backend': jax.default_backend()},
      'git': None if commit is None else {
          'commit': commit, 'dirty': bool(_git('status', '--porcelain', '--untracked-files=no'))},
  }


def method_config(config) -> dict:
  """The selected method's hyper-parameters (its config group), or {} if it has none."""
  group = config.method_config
  return dataclasses.asdict(group) if group is not None else {}


def phase_results(*, phase: str, config, metrics: dict, steps: int, train_time_s: float,
                  best: tuple[float, int], superior: dict | None = None,
                  throughput: dict | None = None) -> dict:
  """The content of a phase's results.json (the keys `KEYS`, in that order)."""
  out = {k: metrics.get(k) for k in METRIC_KEYS}
  out.update(
      phase=phase, method=config.method, method_config=method_config(config),
      dataset=config.data.name, arch=config.model.arch, epochs=config.num_epochs,
      steps=steps, seed=config.seed, best_top1_err=best[0], best_epoch=best[1],
      superior=superior, train_time_s=train_time_s,
      images_per_s=steps * config.batch_size / max(train_time_s, 1e-9),
      throughput=throughput, provenance=provenance(config.to_dict()))
  return out


def _json_safe(value):
  """inf/NaN as strings ('inf'): results.json stays strict JSON for every reader."""
  if isinstance(value, float) and not np.isfinite(value):
    return str(value)
  if isinstance(value, dict):
    return {k: _json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_safe(v) for v in value]
  return value


def write(directory: str, results: dict, logits: np.ndarray, labels: np.ndarray,
          features: np.ndarray | None, title: str) -> None:
  """predictions.npz and reliability.png, then results.json (atomic: the done marker).

  Process 0 writes; every process waits until it has, so all of them see the phase end.
  """
  if jax.process_index() == 0:
    arrays = {'logits': logits.astype(np.float32), 'labels': labels.astype(np.int32)}
    if features is not None:
      arrays['features'] = features.astype(np.float32)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    paths.write_bytes_atomic(paths.join(directory, PREDICTIONS), buffer.getvalue())
    plots.reliability_diagram(logits, labels, paths.join(directory, 'reliability.png'),
                              title=title)
    paths.write_text_atomic(paths.join(directory, RESULTS_JSON),
                            json.dumps(_json_safe(results), indent=2))
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f'results written to {directory}')
