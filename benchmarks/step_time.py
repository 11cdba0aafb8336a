"""Times the jitted train step of `baseline` and `aikd` (or any methods) on synthetic data.

  python benchmarks/step_time.py --arch=preact_resnet18 --batch=128 --image_size=32

After warm-up (compilation plus `--warmup` steps), each method runs `--repeats` timed
steps; the table gives the median step time, images/s, and the ratio to the first
method. The AI-KD step is timed after epoch 0, so it includes the previous-epoch
student's forward pass, the superior's forward pass and the critic update.
"""
import os
import sys
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from aikd_jax import config as config_lib  # pylint: disable=g-import-not-at-top
from aikd_jax import methods, models, sharding  # pylint: disable=g-import-not-at-top
from aikd_jax.train import state as state_lib, steps  # pylint: disable=g-import-not-at-top
from configs import default  # pylint: disable=g-import-not-at-top

_ARCH = flags.DEFINE_string('arch', 'preact_resnet18', 'Architecture.')
_BATCH = flags.DEFINE_integer('batch', 128, 'Global batch size.')
_SIZE = flags.DEFINE_integer('image_size', 32, 'Image height and width.')
_CLASSES = flags.DEFINE_integer('num_classes', 100, 'Number of classes.')
_WIDTH = flags.DEFINE_integer('width', 64, 'Base width of the model.')
_DTYPE = flags.DEFINE_string('dtype', 'float32', 'float32 or bfloat16.')
_METHODS = flags.DEFINE_list('methods', ['baseline', 'aikd'],
                             "Methods to time; 'aikd:table' is AI-KD's table mode.")
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed steps after compilation.')
_REPEATS = flags.DEFINE_integer('repeats', 7, 'Timed steps; the median is reported.')


def _batch(method, image_shape, mesh) -> dict:
  """A synthetic global batch of the kind `method` asks for (class pairs for CS-KD)."""
  rng = np.random.default_rng(0)
  n = _BATCH.value
  batch = {'image': rng.normal(size=(n, *image_shape)).astype(np.float32),
           'label': rng.integers(0, _CLASSES.value, n).astype(np.int32),
           'id': np.arange(n, dtype=np.int32)}
  if method.batch == 'paired':
    batch.update(pair_image=batch['image'][::-1].copy(), pair_label=batch['label'],
                 pair_id=batch['id'][::-1].copy())
  return sharding.to_global(batch, mesh)


def time_method(name: str, raw_config, mesh) -> float:
  """Median seconds per step of method `name` (after epoch 0: every term is active)."""
  raw_config.method = name
  config = config_lib.parse(raw_config)
  method = methods.create(config)
  model = models.create(config.model.arch, _CLASSES.value, width=_WIDTH.value,
                        dtype=_DTYPE.value)
  spe = 10
  image_shape = (_SIZE.value, _SIZE.value, 3)
  repl = sharding.replicated(mesh)
  state = jax.jit(lambda k: state_lib.create_state(
      k, model=model, method=method, optim=config.optim, image_shape=image_shape,
      num_classes=_CLASSES.value, num_train_examples=_BATCH.value, steps_per_epoch=spe),
                  out_shardings=repl)(jax.random.key(0))
  state = state.replace(student=state.student.replace(step=jnp.asarray(spe, jnp.int32)))
  superior = None
  if method.needs_superior:
    superior = jax.device_put(dict(model.init(jax.random.key(1), jnp.zeros((1, *image_shape)),
                                              train=False)), repl)
  step = jax.jit(steps.make_train_step(
      model=model, method=method, augment=config.augment, seed=0,
      num_classes=_CLASSES.value, steps_per_epoch=spe,
      lr_schedule=state_lib.learning_rate_schedule(config.optim, spe)),
                 out_shardings=(repl, repl), donate_argnums=(0,))
  batch = _batch(method, image_shape, mesh)
  times = []
  for i in range(1 + _WARMUP.value + _REPEATS.value):
    t0 = time.perf_counter()
    state, metrics = step(state, batch, superior)
    jax.block_until_ready((state, metrics))
    if i > _WARMUP.value:
      times.append(time.perf_counter() - t0)
  return float(np.median(times))


def main(argv):
  del argv
  config = default.get_config()
  config.model.arch = _ARCH.value
  config.dtype = _DTYPE.value
  config.model.width = _WIDTH.value
  mesh = sharding.make_mesh()
  print(f'{_ARCH.value}, {_SIZE.value} px, batch {_BATCH.value}, {_CLASSES.value} classes, '
        f'width {_WIDTH.value}, {_DTYPE.value}, {jax.device_count()} x '
        f'{jax.devices()[0].device_kind} ({jax.default_backend()})')
  print(f'{"method":18s}{"ms/step":>10s}{"images/s":>10s}{"ratio":>8s}')
  first = None
  for spec in _METHODS.value:
    name, _, previous = spec.partition(':')  # 'aikd:table' times AI-KD's table mode
    config.aikd.previous = previous or 'snapshot'
    t = time_method(name, config, mesh)
    first = first or t
    print(f'{spec:18s}{1e3 * t:10.1f}{_BATCH.value / t:10.1f}{t / first:8.2f}', flush=True)


if __name__ == '__main__':
  app.run(main)
