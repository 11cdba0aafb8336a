"""Times the jitted train step of `baseline` and `aikd` (or any methods) on synthetic data.

  python benchmarks/step_time.py --arch=preact_resnet18 --batch=128 --image_size=32
  python benchmarks/step_time.py --pack_seeds=1,2,3 [--pack_widths=64,16]

After warm-up (compilation plus `--warmup` steps), each method runs `--repeats` timed
steps; the table gives the median step time, images/s, XLA's FLOPs per step, and the
ratio to the first method. The AI-KD step is timed after epoch 0, so it includes the
previous-epoch student's forward pass, the superior's forward pass and the critic update.

With `--pack_seeds`, each method at each of `--pack_widths` is timed with S seeds packed
into one vmapped step (`aikd_jax/train/seeds.py`: state, batch and superior carry a
leading seed axis, each seed its own), for each S (S = 1, the unpacked step, is always
timed as the reference). The table gives total images/s (S x batch / step time), images/s
per seed (batch / step time) and the speed-up: the time of S unpacked steps over one
packed step (S x time at S = 1 / time at S); above 1, packing pays.

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
from aikd_jax.train import seeds as seeds_lib  # pylint: disable=g-import-not-at-top
from aikd_jax.train import state as state_lib, steps  # pylint: disable=g-import-not-at-top
from configs import default  # pylint: disable=g-import-not-at-top

_STEPS_PER_EPOCH = 10  # the step counter starts here: after epoch 0


@dataclasses.dataclass(frozen=True)
class StepSpec:
  """One train step to time: a method on an architecture, batch, input size and dtype.

  `method` is a registered method name; 'aikd:table' is AI-KD's table mode. `seeds` is
  the pack size S: seeds 0 .. S-1 in one vmapped step, each with its own batch of `batch`
  images (1: the plain unpacked step).
  """
  arch: str
  method: str = 'baseline'
  batch: int = 128
  image_size: int = 32
  num_classes: int = 100
  width: int = 64
  dtype: str = 'float32'
  seeds: int = 1


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
    self.pack = seeds_lib.of(range(spec.seeds))
    self.augment = config.augment
    init = lambda key, pretrained: state_lib.create_state(
        key, model=self.model, method=self.method, optim=config.optim,
        image_shape=self.image_shape, num_classes=spec.num_classes,
        num_train_examples=spec.batch, steps_per_epoch=_STEPS_PER_EPOCH)
    self._init_state = jax.jit(lambda: self.pack.init(init, None), out_shardings=self.repl)
    self._init_superior = jax.jit(lambda: self.pack.init(self._one_superior, None),
                                  out_shardings=self.repl)
    self.step = jax.jit(self.pack.step(self.make_step), out_shardings=(self.repl, self.repl),
                        donate_argnums=(0,))

  def make_step(self, seed):
    """The unpacked step of one seed (the pack vmaps it over its seeds)."""
    return steps.make_train_step(
        model=self.model, method=self.method, augment=self.augment, seed=seed,
        num_classes=self.spec.num_classes, steps_per_epoch=_STEPS_PER_EPOCH)

  def _one_superior(self, key, _):
    """A random superior of one seed (its own key, apart from the student's)."""
    return dict(self.model.init(jax.random.fold_in(key, 1), jnp.zeros((1, *self.image_shape)),
                                train=False))

  def arguments(self) -> tuple:
    """(state, batch, superior) on the devices; the step counter is past epoch 0."""
    state = self._init_state()
    state = state.replace(student=state.student.replace(
        step=jnp.full_like(state.student.step, _STEPS_PER_EPOCH)))
    superior = self._init_superior() if self.method.needs_superior else None
    return state, sharding.to_global(self._batch(), self.mesh, self.pack.batch_spec), superior

  def _batch(self) -> dict:
    """Synthetic host batches of the kind the method asks for (class pairs for CS-KD), one
    per seed of the pack, stacked on a leading seed axis (none for one seed)."""
    return self.pack.stack([self._seed_batch(s) for s in self.pack.seeds])

  def _seed_batch(self, seed: int) -> dict:
    rng = np.random.default_rng(seed)
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
    on = lambda where: lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=where)
    state = jax.tree.map(on(self.repl), jax.eval_shape(self._init_state))
    data = jax.sharding.NamedSharding(self.mesh, self.pack.batch_spec)
    batch = jax.tree.map(on(data), self._batch())
    superior = None
    if self.method.needs_superior:
      superior = jax.tree.map(on(self.repl), jax.eval_shape(self._init_superior))
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


def pack_columns(seeds: int, batch: int, step_s: float, solo_step_s: float) -> dict:
  """Throughput of a pack of `seeds` seeds, each with `batch` images, from its step time
  and the unpacked (one-seed) step's.

  'speedup' is the time of S unpacked steps over one packed step (above 1: packing pays).
  """
  return {'images_per_s': seeds * batch / step_s, 'images_per_s_per_seed': batch / step_s,
          'speedup': seeds * solo_step_s / step_s}


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
  flags.DEFINE_list('pack_seeds', None,
                    'Pack sizes S to time, e.g. 1,2,3: S seeds in one vmapped step (S = 1 is '
                    'always timed, as the reference); --width gives way to --pack_widths.')
  flags.DEFINE_list('pack_widths', ['64', '16'], 'Widths of the --pack_seeds rows.')
  flags.register_validator('pack_seeds', lambda v: v is None or all(
      x.isdigit() and int(x) >= 1 for x in v), 'pack sizes are integers from 1')
  flags.register_validator('pack_widths', lambda v: all(x.isdigit() and int(x) >= 1 for x in v),
                           'widths are integers from 1')


def pack_table(mesh) -> None:
  """Prints one row per width, method and pack size S (--pack_seeds)."""
  f = FLAGS
  sizes = sorted({1, *map(int, f.pack_seeds)})
  print(f'{f.arch}, {f.image_size} px, batch {f.batch} per seed, {f.num_classes} classes, '
        f'{f.dtype}, {device_line()}')
  print('speed-up = S x (ms/step at S = 1) / (ms/step at S): S unpacked steps over one '
        'packed step')
  print(f'{"width":>5s}  {"method":12s}{"seeds":>6s}{"ms/step":>10s}{"images/s":>10s}'
        f'{"images/s/seed":>15s}{"GFLOP":>10s}{"speed-up":>10s}')
  for width in map(int, f.pack_widths):
    for name in f.methods:
      solo_s = None
      for count in sizes:
        spec = StepSpec(f.arch, name, f.batch, f.image_size, f.num_classes, width, f.dtype,
                        seeds=count)
        m = measure(spec, mesh, f.warmup, f.repeats)
        solo_s = solo_s or m['step_s']
        c = pack_columns(count, f.batch, m['step_s'], solo_s)
        gflop = (m['flops_per_step'] or float('nan')) / 1e9
        print(f'{width:5d}  {name:12s}{count:6d}{1e3 * m["step_s"]:10.1f}'
              f'{c["images_per_s"]:10.1f}{c["images_per_s_per_seed"]:15.1f}{gflop:10.1f}'
              f'{c["speedup"]:10.2f}', flush=True)


def main(argv):
  del argv
  mesh = sharding.make_mesh()
  f = FLAGS
  if f.pack_seeds:
    pack_table(mesh)
    return
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
