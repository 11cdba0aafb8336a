"""Times the jitted train step of `baseline` and `aikd` (or any methods) on synthetic data.

  python benchmarks/step_time.py --arch=preact_resnet18 --batch=128 --image_size=32

After warm-up (compilation plus `--warmup` steps), each method runs `--repeats` timed
steps; the table gives the median step time, images/s, XLA's FLOPs per step, and the
ratio to the first method. The AI-KD step is timed after epoch 0, so it includes the
previous-epoch student's forward pass, the superior's forward pass and the critic update.

`StepBench` (build, compile, time one method's step) is shared with
`benchmarks/device_suite.py` and `benchmarks/torch_peer.py`.
"""
import dataclasses
import os
import sys
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from aikd_jax import config as config_lib  # pylint: disable=g-import-not-at-top
from aikd_jax import methods, models, sharding, throughput  # pylint: disable=g-import-not-at-top
from aikd_jax.train import state as state_lib, steps  # pylint: disable=g-import-not-at-top
from configs import default  # pylint: disable=g-import-not-at-top

_STEPS_PER_EPOCH = 10  # the step counter starts here: after epoch 0


@dataclasses.dataclass(frozen=True)
class StepSpec:
  """One train step to time: a method on an architecture, batch, input size and dtype.

  `method` is a registered method name; 'aikd:table' is AI-KD's table mode.
  """
  arch: str
  method: str = 'baseline'
  batch: int = 128
  image_size: int = 32
  num_classes: int = 100
  width: int = 64
  dtype: str = 'float32'


class StepBench:
  """The jitted train step of `spec` on a synthetic batch, ready to compile and time."""

  def __init__(self, spec: StepSpec, mesh):
    self.spec, self.mesh = spec, mesh
    raw = default.get_config()
    raw.model.arch, raw.model.width, raw.dtype = spec.arch, spec.width, spec.dtype
    raw.method, _, previous = spec.method.partition(':')
    raw.aikd.previous = previous or 'snapshot'
    config = config_lib.parse(raw)
    self.method = methods.create(config)
    self.model = models.create(spec.arch, spec.num_classes, width=spec.width, dtype=spec.dtype)
    self.image_shape = (spec.image_size, spec.image_size, 3)
    self.repl = sharding.replicated(mesh)
    self._init_state = jax.jit(lambda k: state_lib.create_state(
        k, model=self.model, method=self.method, optim=config.optim,
        image_shape=self.image_shape, num_classes=spec.num_classes,
        num_train_examples=spec.batch, steps_per_epoch=_STEPS_PER_EPOCH),
                               out_shardings=self.repl)
    self.step = jax.jit(steps.make_train_step(
        model=self.model, method=self.method, augment=config.augment, seed=0,
        num_classes=spec.num_classes, steps_per_epoch=_STEPS_PER_EPOCH),
                        out_shardings=(self.repl, self.repl), donate_argnums=(0,))

  def _superior(self):
    if not self.method.needs_superior:
      return None
    variables = self.model.init(jax.random.key(1), jnp.zeros((1, *self.image_shape)),
                                train=False)
    return jax.device_put(dict(variables), self.repl)

  def arguments(self) -> tuple:
    """(state, batch, superior) on the devices; the step counter is past epoch 0."""
    state = self._init_state(jax.random.key(0))
    state = state.replace(student=state.student.replace(
        step=jnp.asarray(_STEPS_PER_EPOCH, jnp.int32)))
    return state, sharding.to_global(self._batch(), self.mesh), self._superior()

  def _batch(self) -> dict:
    """A synthetic host batch of the kind the method asks for (class pairs for CS-KD)."""
    rng = np.random.default_rng(0)
    n = self.spec.batch
    batch = {'image': rng.normal(size=(n, *self.image_shape)).astype(np.float32),
             'label': rng.integers(0, self.spec.num_classes, n).astype(np.int32),
             'id': np.arange(n, dtype=np.int32)}
    if self.method.batch == 'paired':
      batch.update(pair_image=batch['image'][::-1].copy(), pair_label=batch['label'],
                   pair_id=batch['id'][::-1].copy())
    return batch

  def abstract_arguments(self) -> tuple:
    """Shapes, dtypes and shardings of `arguments()`, allocating nothing on the devices."""
    state = jax.eval_shape(self._init_state, jax.random.key(0))
    state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self.repl),
                         state)
    data = sharding.batch_sharded(self.mesh)
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=data)
             for k, v in self._batch().items()}
    superior = None
    if self.method.needs_superior:
      superior = jax.eval_shape(lambda: dict(self.model.init(
          jax.random.key(1), jnp.zeros((1, *self.image_shape)), train=False)))
      superior = jax.tree.map(
          lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self.repl), superior)
    return state, batch, superior

  def compile(self):
    """The compiled step (from abstract arguments: safe to call from several threads)."""
    return self.step.lower(*self.abstract_arguments()).compile()

  def time(self, compiled, warmup: int, repeats: int) -> list[float]:
    """Seconds of each of `repeats` steps, after one plus `warmup` untimed steps."""
    state, batch, superior = self.arguments()
    times = []
    for i in range(1 + warmup + repeats):
      t0 = time.perf_counter()
      state, metrics = compiled(state, batch, superior)
      jax.block_until_ready((state, metrics))
      if i > warmup:
        times.append(time.perf_counter() - t0)
    return times


def measure(spec: StepSpec, mesh, warmup: int = 2, repeats: int = 7,
            compiled=None) -> dict:
  """{'step_s' (median), 'flops_per_step', 'compile_s'} of one method's train step."""
  bench = StepBench(spec, mesh)
  compile_s = None
  if compiled is None:
    t0 = time.perf_counter()
    compiled = bench.compile()
    compile_s = time.perf_counter() - t0
  times = bench.time(compiled, warmup, repeats)
  return {'step_s': float(np.median(times)), 'flops_per_step': throughput.step_flops(compiled),
          'compile_s': compile_s}


def device_line() -> str:
  return (f'{jax.device_count()} x {jax.devices()[0].device_kind} '
          f'({jax.default_backend()})')


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command line of this script (only when run as one: others import StepBench)."""
  flags.DEFINE_string('arch', 'preact_resnet18', 'Architecture.')
  flags.DEFINE_integer('batch', 128, 'Global batch size.')
  flags.DEFINE_integer('image_size', 32, 'Image height and width.')
  flags.DEFINE_integer('num_classes', 100, 'Number of classes.')
  flags.DEFINE_integer('width', 64, 'Base width (ResNets) or growth rate (DenseNets).')
  flags.DEFINE_string('dtype', 'float32', 'float32 or bfloat16.')
  flags.DEFINE_list('methods', ['baseline', 'aikd'],
                    "Methods to time; 'aikd:table' is AI-KD's table mode.")
  flags.DEFINE_integer('warmup', 2, 'Untimed steps after compilation.')
  flags.DEFINE_integer('repeats', 7, 'Timed steps; the median is reported.')


def main(argv):
  del argv
  mesh = sharding.make_mesh()
  f = FLAGS
  print(f'{f.arch}, {f.image_size} px, batch {f.batch}, {f.num_classes} classes, '
        f'width {f.width}, {f.dtype}, {device_line()}')
  print(f'{"method":18s}{"ms/step":>10s}{"images/s":>10s}{"GFLOP":>10s}{"ratio":>8s}')
  first = None
  for name in f.methods:
    spec = StepSpec(f.arch, name, f.batch, f.image_size, f.num_classes, f.width, f.dtype)
    m = measure(spec, mesh, f.warmup, f.repeats)
    t = m['step_s']
    first = first or t
    gflop = (m['flops_per_step'] or float('nan')) / 1e9
    print(f'{name:18s}{1e3 * t:10.1f}{f.batch / t:10.1f}{gflop:10.1f}{t / first:8.2f}',
          flush=True)


if __name__ == '__main__':
  define_flags()
  app.run(main)
