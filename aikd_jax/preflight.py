"""Checks of a typed config against the outside world, before anything is written.

`config.parse` checks values; this module checks what they name: the devices, the
model on the dataset's images (traced, not run), the superior and init weights, and the
workdir (writable, and if it holds a run, the same config). A run that fails here leaves the workdir exactly as it found it.
"""
import json
import os

from etils import epath
from flax import traverse_util
import jax
import jax.numpy as jnp

from aikd_jax import paths
from aikd_jax.errors import ConfigError, WorkdirError

# Keys that may change between a run and its resumption without changing its results.
RESUMABLE_KEYS = frozenset({'log_every_steps', 'checkpoint.max_to_keep', 'data.tfds_dir',
                            'data.manual_dir', 'eval_batch_size', 'fast_compile',
                            'profile_steps'})
CONFIG_JSON = 'config.json'


def flatten(d: dict) -> dict:
  """{'optim': {'lr': 0.1}} -> {'optim.lr': 0.1}."""
  return traverse_util.flatten_dict(d, sep='.')


def differing_keys(saved: dict, now: dict, ignore=frozenset()) -> list[str]:
  """The flat keys (`optim.lr`) whose values differ between two configs, minus `ignore`."""
  saved, now = flatten(saved), flatten(now)
  return sorted(k for k in set(saved) | set(now)
                if saved.get(k) != now.get(k) and k not in ignore)


def check_devices(config, local_devices: int) -> None:
  """Each process's batch share must split evenly over its devices."""
  for key in ('batch_size', 'eval_batch_size'):
    size = getattr(config, key)
    per_process = size // jax.process_count()
    if per_process % local_devices:
      raise ConfigError(f'{key} {size} does not split over the {jax.device_count()} devices '
                        f'({local_devices} per process): make it a multiple of '
                        f'{local_devices * jax.process_count()} with --config.{key}')


def check_augment(config, image_size: int) -> None:
  if config.augment.cutout > image_size:
    raise ConfigError(f'augment.cutout {config.augment.cutout} is larger than the '
                      f'{image_size}-px images: fix --config.augment.cutout')


def _empty_results(jaxpr):
  """The operations of `jaxpr` (and of the jaxprs inside it) whose output has no elements."""
  for eqn in jaxpr.eqns:
    if any(0 in getattr(v.aval, 'shape', ()) for v in eqn.outvars):
      yield eqn
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        sub = getattr(sub, 'jaxpr', sub)  # ClosedJaxpr -> Jaxpr
        if hasattr(sub, 'eqns'):
          yield from _empty_results(sub)


def check_model(config, model, image_shape: tuple[int, int, int], method) -> None:
  """The model can take the dataset's images, and its stages can feed the method.

  The model is traced on one image (shapes only, nothing runs): a feature map shrunk to
  0 px (a deep net on small images) would make the global pool a mean of nothing (NaN).
  """
  image = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
  forward = lambda x: model.init_with_output(jax.random.key(0), x, train=False, features=True)
  jaxpr, ((_, features), _) = jax.make_jaxpr(forward, return_shape=True)(image)
  stages = [tuple(s.shape[1:]) for s in features['stages']]
  name = f'model.arch {config.model.arch} (model.width {config.model.width})'
  if next(_empty_results(jaxpr.jaxpr), None) is not None:
    raise ConfigError(f'{name} cannot take the {image_shape[0]}x{image_shape[1]} images of '
                      f'{config.data.name}: its feature maps shrink to nothing (stage outputs '
                      f'{stages}, height x width x channels); choose another --config.model.arch')
  method.check_stages(stages, name)


def read_json(path: str, what: str) -> dict:
  """A JSON object of a workdir; a damaged one (or other JSON) is a one-line WorkdirError."""
  try:
    value = json.loads(epath.Path(path).read_text())
  except ValueError as e:
    raise WorkdirError(f'{path} is damaged ({what} is not valid JSON: {e}); restore it, or '
                       'delete it and use a new --workdir') from e
  if not isinstance(value, dict):
    raise WorkdirError(f'{path} is damaged ({what} is JSON but a {type(value).__name__}, '
                       'not an object); restore it, or delete it and use a new --workdir')
  return value


def check_workdir(config, workdir: str) -> None:
  """The workdir can be written, and a run already there has the same config.

  On an object store (gs://) there are no permission bits to ask and a probe object
  would change the workdir, so writability is not checked here: the first write (the
  run's config.json, after every check has passed) fails with the store's own error.
  """
  try:
    os.fspath(workdir).encode()
  except UnicodeEncodeError as e:  # TensorFlow (TensorBoard, TFDS) takes only text paths
    shown = os.fsencode(workdir).decode(errors='backslashreplace')
    raise WorkdirError(f'--workdir {shown} is not valid UTF-8 text; rename it') from e
  problem = paths.folder_problem(workdir)
  if problem:
    raise WorkdirError(f'--workdir {workdir} cannot be written: {problem}; fix it or choose '
                       'another --workdir')
  root = epath.Path(workdir)
  path = root / CONFIG_JSON
  if path.exists():
    differ = differing_keys(read_json(path, 'the run\'s config'), config.to_dict(),
                            RESUMABLE_KEYS)
    if differ:
      raise WorkdirError(f'workdir {workdir} belongs to a different config (differs in: '
                         f'{", ".join(differ)}); use a new --workdir')


def write_config(config, workdir: str) -> None:
  """Writes WORKDIR/config.json (process 0), atomically: other processes may read it."""
  if jax.process_index() == 0:
    paths.write_text_atomic(epath.Path(workdir) / CONFIG_JSON,
                            json.dumps(config.to_dict(), indent=2, sort_keys=True))
