"""Checkpoints and exported models. The only module that imports Orbax.

Two formats:
- Training checkpoints (`PHASE/checkpoints/`): an Orbax CheckpointManager holding the
  train-state pytree and a JSON `meta` item (epoch, position inside the epoch).
- Exported models (`PHASE/model/`, or the output of `tools.import_torch`): `model.json`
  (arch, num_classes, options) plus `variables/` ({'params', 'batch_stats'}).
"""
import json
import os
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from aikd_jax.errors import WorkdirError

MODEL_JSON = 'model.json'


def _abstract(tree):
  """Shape/dtype/sharding template for restoring onto the same placement as `tree`."""
  def leaf(x):
    if isinstance(x, jax.Array):
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    return ocp.utils.to_shape_dtype_struct(x)
  return jax.tree.map(leaf, tree)


class TrainCheckpointer:
  """Saves every epoch (asynchronously) and restores the newest readable step."""

  def __init__(self, directory: str, max_to_keep: int = 2):
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           cleanup_tmp_directories=True)
    self._manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

  def save(self, step: int, state: Any, meta: dict) -> None:
    """Saves `state` and `meta` under `step`; every process must call this."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

  def restore_latest(self, template: Any):
    """Returns (state, meta) from the newest step that reads back, or None.

    A damaged step (missing or truncated files) is moved aside into `damaged/` with a
    warning (never deleted), so that training can save that step again; Orbax's
    `latest_step()` only looks at directory names, so each step is tried in turn.
    """
    abstract = _abstract(template)
    for step in reversed(self._manager.all_steps()):
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        return restored['state'], restored['meta']
      except Exception as e:  # pylint: disable=broad-except
        moved = self._move_aside(step)
        logging.warning('Checkpoint step %d in %s does not read back (%s: %s); moved it to '
                        '%s and fell back to an older one.', step, self._manager.directory,
                        type(e).__name__, str(e).splitlines()[0][:200] if str(e) else '',
                        moved)
    return None

  def _move_aside(self, step: int) -> str:
    """Renames step `step`'s folder into `damaged/` (process 0), then re-reads the steps."""
    root = os.fspath(self._manager.directory)
    target = os.path.join(root, 'damaged', str(step))
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(target), exist_ok=True)
      n = 1
      while os.path.exists(target):
        target, n = os.path.join(root, 'damaged', f'{step}.{n}'), n + 1
      os.rename(os.path.join(root, str(step)), target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'moved aside checkpoint {step}')
    self._manager.reload()
    return target

  def reached_preemption(self, step: int) -> bool:
    """Multi-host: True on every process at the sync step after JAX's preemption notice."""
    return self._manager.reached_preemption(step)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def save_model(directory: str, *, arch: str, num_classes: int, options: dict,
               variables: dict) -> None:
  """Exports {'params', 'batch_stats'} with the metadata needed to rebuild the module."""
  directory = os.path.abspath(directory)
  variables = jax.tree.map(np.asarray, dict(variables))
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(os.path.join(directory, 'variables'), variables, force=True)
  if jax.process_index() == 0:
    meta = {'arch': arch, 'num_classes': int(num_classes), 'options': dict(options)}
    with open(os.path.join(directory, MODEL_JSON), 'w') as f:
      json.dump(meta, f, indent=2)


def read_model_meta(directory: str) -> dict:
  """The metadata of an exported model; a missing or damaged one is a one-line error."""
  path = os.path.join(directory, MODEL_JSON)
  if not os.path.exists(path):
    raise WorkdirError(f'no exported model in {directory} (expected {MODEL_JSON} and '
                       'variables/)')
  try:
    with open(path) as f:
      meta = json.load(f)
  except ValueError as e:
    raise WorkdirError(f'{path} is damaged (not valid JSON); export the model again') from e
  if not isinstance(meta, dict) or not {'arch', 'num_classes'} <= set(meta):
    raise WorkdirError(f'{path} is not an exported model\'s metadata; export it again')
  return meta


def load_model(directory: str, sharding=None) -> tuple[dict, dict]:
  """Returns (meta, variables) of an exported model, as host arrays or with `sharding`."""
  directory = os.path.abspath(directory)
  meta = read_model_meta(directory)
  with ocp.StandardCheckpointer() as ckptr:
    path = os.path.join(directory, 'variables')
    abstract = ckptr.metadata(path).item_metadata
    abstract = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), abstract)
    variables = ckptr.restore(path, abstract)
  return meta, variables
