"""Checkpoints and exported models. The only module that imports Orbax.

Two formats:
- Training checkpoints (`PHASE/checkpoints/`): an Orbax CheckpointManager holding the
  train-state pytree and a JSON `meta` item (epoch, position inside the epoch).
- Exported models (`PHASE/model/`, or the output of `tools.import_torch`): `model.json`
  (arch, num_classes, options) plus `variables/` ({'params', 'batch_stats'}; on gs://
  `variables.N/`, named by model.json's `variables`).
"""
import hashlib
import json
import os
import shutil
from typing import Any

from absl import logging
from etils import epath
from flax import traverse_util
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from aikd_jax import console, paths
from aikd_jax.errors import ConfigError, NonFiniteLossError, WorkdirError

MODEL_JSON = 'model.json'
MODEL_DIR = 'model'  # a phase's exported model: PHASE_DIR/model
VARIABLES = 'variables'  # its arrays; on gs://, model.json names the folder (variables.N)
# A checkpoint save (or the wait for one) that takes longer ends the run with one line.
SAVE_TIMEOUT_S = float(os.environ.get('AIKD_JAX_SAVE_TIMEOUT_S', '900'))


def _abstract(tree):
  """Shape/dtype/sharding template for restoring onto the same placement as `tree`."""
  def leaf(x):
    if isinstance(x, jax.Array):
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    return ocp.utils.to_shape_dtype_struct(x)
  return jax.tree.map(leaf, tree)


def state_digest(tree: Any) -> str:
  """SHA-256 of every leaf's path, dtype, shape and bytes (this process's first shard).

  Orbax stores arrays compressed, without a checksum: a flipped byte restores as
  silently different numbers. The train state is replicated (sharding.py), so the
  first addressable shard is the whole array on every process.
  """
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if isinstance(leaf, jax.Array):
      if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
      leaf = leaf.addressable_data(0)
    value = np.ascontiguousarray(np.asarray(leaf))
    digest.update(f'{jax.tree_util.keystr(path)} {value.dtype} {value.shape}'.encode())
    digest.update(value.tobytes())
  return digest.hexdigest()


class TrainCheckpointer:
  """Saves every epoch (asynchronously) and restores the newest readable step."""

  def __init__(self, directory: str, max_to_keep: int = 2):
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           cleanup_tmp_directories=True)
    self._manager = ocp.CheckpointManager(paths.resolve(directory), options=options)

  def save(self, step: int, state: Any, meta: dict) -> None:
    """Saves `state` and `meta` under `step`; every process must call this.

    `meta` also gets the state's checksum (`state_digest`), verified on restore.
    """
    meta = dict(meta, state_digest=state_digest(state))
    with self._deadline():  # also waits for the previous save
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

  def _deadline(self):
    """Ends the process with one line (exit 4) if a save hangs (storage unreachable)."""
    return console.deadline(
        SAVE_TIMEOUT_S, f'a checkpoint save to {self._manager.directory} did not finish '
        f'within {SAVE_TIMEOUT_S:g} s (is the storage reachable?); stopped without it. Run '
        'the same command to resume from the last finished checkpoint (the environment '
        'variable AIKD_JAX_SAVE_TIMEOUT_S sets the limit)', WorkdirError.exit_code)

  def restore_latest(self, template: Any):
    """Returns (state, meta) from the newest step that reads back, or None.

    A damaged step (missing, truncated, or changed files: its checksum differs) is moved
    aside into `damaged/` with a
    warning (never deleted), so that training can save that step again; Orbax's
    `latest_step()` only looks at directory names, so each step is tried in turn.
    """
    abstract = _abstract(template)
    for step in reversed(self._manager.all_steps()):
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        meta = dict(restored['meta'])
        saved = meta.pop('state_digest', None)  # None: saved before checksums
        if saved is not None and saved != state_digest(restored['state']):
          raise ValueError('checksum mismatch: the files changed after they were saved')
        return restored['state'], meta
      except Exception as e:  # pylint: disable=broad-except
        moved = self._move_aside(step)
        logging.warning('Checkpoint step %d in %s does not read back (%s: %s); moved it to '
                        '%s and fell back to an older one.', step, self._manager.directory,
                        type(e).__name__, str(e).splitlines()[0][:200] if str(e) else '',
                        moved)
    return None

  def _move_aside(self, step: int) -> str:
    """Renames step `step`'s folder into `damaged/` (process 0), then re-reads the steps."""
    root = epath.Path(self._manager.directory)
    target = root / 'damaged' / str(step)
    if jax.process_index() == 0:
      target.parent.mkdir(parents=True, exist_ok=True)
      n = 1
      while target.exists():
        target, n = root / 'damaged' / f'{step}.{n}', n + 1
      (root / str(step)).rename(target)  # on gs:// a copy of each object, then a delete
    _sync(f'moved aside checkpoint {step}')
    self._manager.reload()
    return os.fspath(target)

  def reached_preemption(self, step: int) -> bool:
    """Multi-host: True on every process at the sync step after JAX's preemption notice."""
    return self._manager.reached_preemption(step)

  def wait(self) -> None:
    with self._deadline():
      self._manager.wait_until_finished()

  def close(self) -> None:
    self.wait()
    self._manager.close()


def save_model(directory: str, *, arch: str, num_classes: int, options: dict,
               variables: dict) -> None:
  """Exports {'params', 'batch_stats'} with the metadata needed to rebuild the module.

  All-or-nothing: locally, the model is written into a folder beside `directory`,
  `model.json` last, and renamed into place; an existing `directory` is replaced only
  then. On an object store (gs://), where renaming a folder copies every object, the
  variables go to a new folder `variables.N` and the one upload of `model.json`, which
  names it, switches to the new model. Either way a crash leaves the old model (or none)
  loadable, never a part of the new one. Raises NonFiniteLossError (nothing written) when a variable
  holds NaN or Inf.
  """
  directory = paths.absolute(directory)
  variables = jax.tree.map(np.asarray, dict(variables))
  _check_finite(variables, directory)
  if paths.is_remote(directory):
    _save_model_in_place(epath.Path(directory), variables,
                         {'arch': arch, 'num_classes': int(num_classes), 'options': dict(options)})
    return
  tmp = _beside(directory, 'tmp')
  if jax.process_index() == 0:
    shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted export
  _sync('save_model:start')
  try:
    with ocp.StandardCheckpointer() as ckptr:
      ckptr.save(os.path.join(tmp, VARIABLES), variables)
    if jax.process_index() == 0:
      meta = {'arch': arch, 'num_classes': int(num_classes), 'options': dict(options)}
      _write_json(os.path.join(tmp, MODEL_JSON), meta)
      _replace(tmp, directory)
  except BaseException:
    if jax.process_index() == 0:
      shutil.rmtree(tmp, ignore_errors=True)
    raise
  _sync('save_model:done')


def _save_model_in_place(directory: epath.Path, variables: dict, meta: dict) -> None:
  """save_model on an object store, where a folder cannot be renamed but one object's
  upload is atomic: the variables go to a new folder (`variables.N`), then model.json,
  which names it, replaces the old one in one upload; the old folder is deleted last.
  A crash leaves the old model loadable until that upload, the new one after it."""
  old = _variables_name(directory)
  number = int(old.rsplit('.', 1)[1]) + 1 if old and '.' in old else 1
  name = f'{VARIABLES}.{number}'  # the same on every process: all read the old model.json
  _sync('save_model:start')
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(directory / name, variables, force=True)
  if jax.process_index() == 0:
    paths.write_text_atomic(directory / MODEL_JSON, json.dumps(dict(meta, variables=name),
                                                               indent=2))
    for stale in directory.iterdir():
      if stale.name.startswith(VARIABLES) and stale.name != name:
        stale.rmtree()
  _sync('save_model:done')


def _variables_name(directory: epath.Path) -> str | None:
  """The variables folder that `directory`'s model.json names (None: no readable model)."""
  try:
    return json.loads((directory / MODEL_JSON).read_text()).get('variables', VARIABLES)
  except (OSError, ValueError, AttributeError):
    return None


def _beside(directory: str, tag: str) -> str:
  parent, name = os.path.split(directory)
  return os.path.join(parent, f'.{name}.{tag}')


def _check_finite(variables: dict, directory: str) -> None:
  for path, leaf in traverse_util.flatten_dict(variables, sep='/').items():
    if np.issubdtype(leaf.dtype, np.floating) and not np.all(np.isfinite(leaf)):
      raise NonFiniteLossError(f'variable {path} holds NaN or Inf values; not writing the '
                               f'model {directory} (the weights diverged or the source is '
                               'damaged)')


def _write_json(path: str, obj: dict) -> None:
  with open(path, 'w') as f:
    json.dump(obj, f, indent=2)
    f.flush()
    os.fsync(f.fileno())


def _replace(new: str, directory: str) -> None:
  """Renames `new` to `directory`; an existing `directory` is deleted only afterwards."""
  old = None
  if os.path.lexists(directory):
    old = _beside(directory, 'old')
    shutil.rmtree(old, ignore_errors=True)
    os.rename(directory, old)
  os.rename(new, directory)
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def read_model_meta(directory: str) -> dict:
  """The metadata of an exported model; a missing or damaged one is a one-line error."""
  path = epath.Path(directory) / MODEL_JSON
  if not path.exists():
    raise WorkdirError(f'no exported model in {directory} (expected {MODEL_JSON} and '
                       'variables/)')
  try:
    meta = json.loads(path.read_text())
  except ValueError as e:
    raise WorkdirError(f'{path} is damaged (not valid JSON); export the model again') from e
  if not isinstance(meta, dict) or not {'arch', 'num_classes'} <= set(meta):
    raise WorkdirError(f'{path} is not an exported model\'s metadata; export it again')
  return meta


def check_model(directory: str, expected: dict | None = None, key: str = 'model') -> dict:
  """The metadata of the complete exported model in `directory`, which must fit `expected`.

  The one set of checks for every reader (superior, init weights, `models.load`): the
  folder exists, `model.json` reads back, `variables/` is there, and `expected`'s keys
  (arch, num_classes, width) match. Each failure is one line naming `key`.
  """
  if not epath.Path(directory).is_dir():
    raise ConfigError(f'{key} {directory} does not exist: fix --config.{key}')
  meta = read_model_meta(directory)
  if not (epath.Path(directory) / meta.get('variables', VARIABLES)).is_dir():
    raise WorkdirError(f'{key} {directory} has {MODEL_JSON} but no '
                       f'{meta.get("variables", VARIABLES)}/: export or convert the model again')
  expected = expected or {}
  found = {'arch': meta.get('arch'), 'num_classes': meta.get('num_classes'),
           'width': meta.get('options', {}).get('width', expected.get('width'))}
  bad = [f'{k} {found[k]!r} (this run: {v!r})' for k, v in expected.items() if found[k] != v]
  if bad:
    raise ConfigError(f'{key} {directory} does not fit this run: {", ".join(bad)}')
  return meta


def load_model(directory: str, sharding=None, *, expected: dict | None = None,
               key: str = 'model') -> tuple[dict, dict]:
  """(meta, variables) of an exported model (`check_model` first), host arrays or sharded."""
  directory = paths.resolve(directory)
  meta = check_model(directory, expected, key)
  with ocp.StandardCheckpointer() as ckptr:
    path = directory / meta.get('variables', VARIABLES)
    abstract = ckptr.metadata(path).item_metadata
    abstract = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), abstract)
    variables = ckptr.restore(path, abstract)
  return meta, variables
