"""One benchmark run for a machine with an accelerator: train steps, input pipeline, MFU.

  benchmarks/device_suite.sh            # writes $OUT (default ./bench_out)
  python benchmarks/device_suite.py --out=DIR [--mode=full|reduced] [--budget_s=200]

`full` (the default on a GPU or TPU) times the train step of `baseline` and `aikd` for
every paper architecture at its paper batch (32 px: 128; 224 px: 32) in float32 and
bfloat16, then the same two steps with packed seeds (`aikd_jax/train/seeds.py`: S = 1, 2
and 3 seeds in one vmapped step, each with its own batch of 128) for PreAct ResNet-18 at
width 64 and 16 in float32, then the host input pipeline (`benchmarks/input_pipeline.py`).
`reduced` (the default on a CPU) times only a width-8 PreAct ResNet-18 at batch 16 in
float32, packed the same way, and skips the input pipeline. All steps are compiled first,
in `--compile_workers` threads, then timed one at a time with nothing else running; a
step not compiled or not started within `--budget_s` (packs: `--pack_budget_s`) is
recorded as skipped, so the run always ends with its files:

  results.json   every measurement (the step and pack rows carry
                 throughput.throughput_summary; a pack's global batch counts every seed)
  results.md     the step table, the packed-seeds table (speed-up: S unpacked steps' time
                 over one packed step), the input-pipeline table, and the projected wall
                 clock of the paper's 300-epoch runs from the measured step times
"""
import concurrent.futures
import json
import os
import subprocess
import sys
import time

from absl import app, flags
import jax
import numpy as np

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(BENCH_DIR))
sys.path.insert(0, BENCH_DIR)
from aikd_jax import sharding, throughput  # pylint: disable=g-import-not-at-top
from aikd_jax.data import datasets  # pylint: disable=g-import-not-at-top
from configs import common  # pylint: disable=g-import-not-at-top
import step_time  # pylint: disable=g-import-not-at-top

_OUT = flags.DEFINE_string('out', os.environ.get('OUT') or './bench_out', 'Output folder.')
_MODE = flags.DEFINE_enum('mode', 'auto', ['auto', 'full', 'reduced'],
                          'auto: reduced on a CPU, full on an accelerator.')
_BUDGET = flags.DEFINE_float('budget_s', 200.0,
                             'Seconds for the steps (60 % of it to compile); the pipeline '
                             'follows.')
_PACK_BUDGET = flags.DEFINE_float('pack_budget_s', 120.0,
                                  'Seconds for the packed-seeds rows (60 % of it to compile).')
_WORKERS = flags.DEFINE_integer('compile_workers', 4, 'Threads compiling steps ahead.')
_PIPELINE = flags.DEFINE_enum('input_pipeline', 'auto', ['auto', 'on', 'off'],
                              'auto: on in full mode, off in reduced mode.')
EPOCHS = 300
METHODS = ('baseline', 'aikd')
PACK_SEEDS = (1, 2, 3)


def step_specs(mode: str) -> list[step_time.StepSpec]:
  """The steps to time: the paper's grid (full), or one tiny model (reduced)."""
  if mode == 'reduced':
    return [step_time.StepSpec('preact_resnet18', m, batch=16, image_size=32, width=8)
            for m in METHODS]
  return [step_time.StepSpec(arch, m, batch=common.BATCH_SIZE[size], image_size=size,
                             num_classes=100 if size == 32 else 200,
                             width=common.WIDTH[arch], dtype=dtype)
          for size in (32, 224) for arch in common.ARCHS[size]
          for dtype in ('float32', 'bfloat16') for m in METHODS]


def pack_specs(mode: str) -> list[step_time.StepSpec]:
  """Packed seeds: PreAct ResNet-18 at the paper's batch per seed, width 64 and 16 (reduced:
  the reduced suite's width-8 model at batch 16), S = 1, 2, 3 seeds in one step."""
  batch, widths = (16, (8,)) if mode == 'reduced' else (common.BATCH_SIZE[32], (64, 16))
  return [step_time.StepSpec('preact_resnet18', m, batch=batch, image_size=32, width=w,
                             seeds=count)
          for w in widths for m in METHODS for count in PACK_SEEDS]


def spec_row(spec: step_time.StepSpec) -> dict:
  return {'arch': spec.arch, 'method': spec.method, 'dtype': spec.dtype,
          'image_size': spec.image_size, 'batch': spec.batch, 'width': spec.width,
          'num_classes': spec.num_classes, 'seeds': spec.seeds}


def compile_all(benches, workers: int, timeout_s: float) -> list:
  """Compiles every step in `workers` threads; a future per step, done or not after timeout."""
  pool = concurrent.futures.ThreadPoolExecutor(max(1, workers))
  futures = [pool.submit(b.compile) for b in benches]
  concurrent.futures.wait(futures, timeout=max(timeout_s, 0))
  pool.shutdown(wait=False, cancel_futures=True)
  return futures


def time_steps(specs, mesh, warmup: int, repeats: int, budget_s: float, workers: int,
               on_row=lambda rows: None) -> list[dict]:
  """Rows in the order of `specs`: all steps compile first (in threads), then each is timed
  alone. Compilation gets 60 % of `budget_s`; a step not compiled by then, or not started
  within the budget, is recorded as skipped."""
  start = time.perf_counter()
  benches = [step_time.StepBench(s, mesh) for s in specs]
  kind = jax.devices()[0].device_kind
  futures = compile_all(benches, workers, 0.6 * budget_s)
  compile_s = time.perf_counter() - start
  print(f'compiled {sum(f.done() for f in futures)} of {len(futures)} steps in '
        f'{compile_s:.0f} s', flush=True)
  rows = []
  for bench, future in zip(benches, futures):
    row = spec_row(bench.spec)
    if not future.done():
      rows.append(dict(row, status='skipped (compilation over budget)'))
    elif time.perf_counter() - start > budget_s:
      rows.append(dict(row, status='skipped (budget)'))
    else:
      rows.append(_time_one(bench, future, kind, warmup, repeats, row,
                            background=not all(f.done() for f in futures)))
    print(_step_line(rows[-1]), flush=True)
    on_row(rows)
  return rows


def _time_one(bench, future, kind, warmup, repeats, row, background: bool) -> dict:
  """One timed row; an error (out of memory, say) is recorded and the suite goes on."""
  try:
    compiled = future.result()
    step_s = float(np.median(bench.time(compiled, warmup, repeats)))
    images = bench.spec.batch * bench.spec.seeds  # a pack's step trains every seed's batch
    summary = throughput.throughput_summary(
        global_batch=images, step_time_s=step_s, num_devices=jax.device_count(),
        flops_per_step=throughput.step_flops(compiled),
        peak=throughput.device_peak_flops(kind, bench.spec.dtype))
    return dict(row, status='ok', step_ms=1e3 * step_s, images_per_s=images / step_s,
                compiling_in_background=background, **summary)
  except Exception as e:  # pylint: disable=broad-except
    return dict(row, status=f'error: {type(e).__name__}: {str(e)[:300]}')


def _step_line(r: dict) -> str:
  head = f'{r["arch"]:18s} w{r["width"]:<3d} x{r["seeds"]} {r["method"]:9s} {r["dtype"]:9s}'
  if r['status'] != 'ok':
    return f'{head} {r["status"]}'
  mfu = '' if r['mfu'] is None else f'  MFU {100 * r["mfu"]:.1f} %'
  return f'{head} {r["step_ms"]:9.1f} ms/step {r["images_per_s"]:9.1f} images/s{mfu}'


PIPELINE_ARGS = ('--num_images=2048,256', '--min_seconds=2', '--batches=4')


def input_pipeline_rows(out_dir: str, timeout_s: float,
                        args=PIPELINE_ARGS) -> list[dict] | str:
  """Rows of benchmarks/input_pipeline.py (its own process), or why there are none."""
  path = os.path.join(out_dir, 'input_pipeline.json')
  cmd = [sys.executable, os.path.join(BENCH_DIR, 'input_pipeline.py'), f'--json_out={path}',
         *args]
  env = dict(os.environ, JAX_PLATFORMS='cpu')  # this process holds the accelerator
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(timeout_s, 1),
                          env=env)
  except subprocess.TimeoutExpired:
    return f'skipped: over its {timeout_s:.0f} s'
  if proc.returncode != 0:
    return 'failed: ' + (proc.stderr.strip().splitlines() or ['no output'])[-1]
  with open(path) as f:
    return json.load(f)


def paired(rows: list[dict]) -> dict:
  """(arch, dtype) -> {method: row} of the measured steps."""
  out = {}
  for r in rows:
    if r['status'] == 'ok':
      out.setdefault((r['arch'], r['dtype']), {})[r['method']] = r
  return out


def projection(rows: list[dict]) -> list[dict]:
  """Hours of the paper's runs (superior = baseline, student = aikd, 300 epochs each).

  Train steps only: steps per epoch = train examples // measured batch (the paper's batch
  in full mode); evaluation, input stalls, compilation and checkpoints are left out.
  """
  size_of = {a: s for s, archs in common.ARCHS.items() for a in archs}
  out = []
  for (arch, dtype), by_method in paired(rows).items():
    if set(METHODS) - set(by_method):
      continue
    size = size_of[arch]
    for name in common.SIZE_32 if size == 32 else common.SIZE_224:
      spe = datasets.get(name).train_examples // by_method['baseline']['batch']
      hours = {m: EPOCHS * spe * by_method[m]['step_ms'] / 3.6e6 for m in METHODS}
      out.append({'dataset': name, 'arch': arch, 'dtype': dtype, 'epochs': EPOCHS,
                  'steps_per_epoch': spe, 'batch': by_method['baseline']['batch'],
                  'superior_h': hours['baseline'], 'student_h': hours['aikd'],
                  'total_h': hours['baseline'] + hours['aikd']})
  return out


def pack_gains(rows: list[dict]) -> list[dict]:
  """The pack rows with images/s per seed and the speed-up over their unpacked (S = 1) row
  (`step_time.pack_columns`; None without a measured S = 1 row)."""
  cell = lambda r: (r['arch'], r['width'], r['method'], r['dtype'], r['batch'])
  solo_s = {cell(r): r['step_ms'] / 1e3 for r in rows if r['status'] == 'ok' and r['seeds'] == 1}
  out = []
  for r in rows:
    if r['status'] == 'ok':
      solo = solo_s.get(cell(r))
      gains = step_time.pack_columns(r['seeds'], r['batch'], r['step_ms'] / 1e3, solo or np.nan)
      r = dict(r, images_per_s_per_seed=gains['images_per_s_per_seed'],
               speedup=gains['speedup'] if solo else None)
    out.append(r)
  return out


def _fmt(x, spec='.1f', scale=1.0):
  return 'n/a' if x is None else format(x * scale, spec)


def markdown(result: dict) -> str:
  """The step table, the input-pipeline table and the projection, labelled with the device."""
  d = result['device']
  label = (f'{d["count"]} x {d["kind"]} ({d["backend"]}), jax {result["jax_version"]}, '
           f'{result["mode"]} suite')
  lines = [f'# Device suite: {label}', '', '## Train step', '',
           '| arch | input, batch | dtype | baseline ms/step | aikd ms/step | aikd / baseline '
           '| aikd images/s/device | aikd GFLOP/step | aikd MFU % |', '|---' * 9 + '|']
  for (arch, dtype), by in paired(result['steps']).items():
    b, a = by.get('baseline'), by.get('aikd')
    any_row = a or b
    lines.append(
        f'| `{arch}` | {any_row["image_size"]} px, {any_row["batch"]} | {dtype} '
        f'| {_fmt(b and b["step_ms"])} | {_fmt(a and a["step_ms"])} '
        f'| {_fmt(a and b and a["step_ms"] / b["step_ms"], ".2f")} '
        f'| {_fmt(a and a["images_per_s_per_device"])} '
        f'| {_fmt(a and a["flops_per_step"], ".1f", 1e-9)} | {_fmt(a and a["mfu"], ".1f", 100)} |')
  missing = [r for r in result['steps'] if r['status'] != 'ok']
  for r in missing:
    lines.append(f'\n`{r["arch"]}` {r["method"]} {r["dtype"]}: {r["status"]}')
  lines += ['', '## Packed seeds', '',
            'S seeds of one cell in one vmapped step, each with its own batch; speed-up = '
            'S x (ms/step at S = 1) / (ms/step at S): the time of S unpacked steps over one '
            'packed step (above 1, packing pays).', '',
            '| arch | width | input, batch per seed | dtype | method | seeds | ms/step '
            '| images/s | images/s per seed | speed-up |', '|---' * 10 + '|']
  packs = result.get('packs', [])
  lines += [f'| `{r["arch"]}` | {r["width"]} | {r["image_size"]} px, {r["batch"]} | {r["dtype"]} '
            f'| {r["method"]} | {r["seeds"]} | {r["step_ms"]:.1f} | {r["images_per_s"]:.1f} '
            f'| {r["images_per_s_per_seed"]:.1f} | {_fmt(r["speedup"], ".2f")} |'
            for r in packs if r['status'] == 'ok']
  lines += [f'\n`{r["arch"]}` width {r["width"]} {r["method"]} x{r["seeds"]} seeds: '
            f'{r["status"]}' for r in packs if r['status'] != 'ok']
  lines += ['', '## Input pipeline', '']
  pipe = result['input_pipeline']
  if isinstance(pipe, str):
    lines.append(pipe)
  else:
    lines += ['| data | mode | tf.data threads | images/s |', '|---|---|---|---|']
    lines += [f'| {p["px"]} px | {p["mode"]} | {p["threads"]} | {p["images_per_s"]:,.0f} |'
              for p in pipe]
  lines += ['', f'## Projected wall clock of the paper\'s runs ({EPOCHS} epochs per phase)', '',
            f'From the step times above, measured on {label}: train steps only '
            '(no evaluation, input stalls, compilation or checkpoints).', '',
            '| dataset | arch | dtype | batch | steps/epoch | superior h | student h | total h |',
            '|---' * 8 + '|']
  lines += [f'| {p["dataset"]} | `{p["arch"]}` | {p["dtype"]} | {p["batch"]} '
            f'| {p["steps_per_epoch"]:,} | {p["superior_h"]:.1f} | {p["student_h"]:.1f} '
            f'| {p["total_h"]:.1f} |' for p in result['projection']]
  return '\n'.join(lines) + '\n'


def write(out_dir: str, result: dict) -> None:
  os.makedirs(out_dir, exist_ok=True)
  result = dict(result, projection=projection(result['steps']),
                packs=pack_gains(result.get('packs', [])))
  for name, text in (('results.json', json.dumps(result, indent=2)),
                     ('results.md', markdown(result))):
    tmp = os.path.join(out_dir, name + '.tmp')
    with open(tmp, 'w') as f:
      f.write(text)
    os.replace(tmp, os.path.join(out_dir, name))


def main(argv):
  del argv
  start = time.perf_counter()
  backend = jax.default_backend()
  mode = _MODE.value if _MODE.value != 'auto' else ('reduced' if backend == 'cpu' else 'full')
  kind = jax.devices()[0].device_kind
  result = {'mode': mode, 'jax_version': jax.__version__,
            'device': {'kind': kind, 'count': jax.device_count(), 'backend': backend,
                       'peak_flops': {dt: throughput.device_peak_flops(kind, dt)
                                      for dt in ('float32', 'bfloat16')}},
            'steps': [], 'packs': [], 'input_pipeline': 'not run yet'}
  print(f'device suite ({mode}): {step_time.device_line()}', flush=True)
  warmup, repeats = (1, 2) if mode == 'reduced' else (3, 10)
  mesh = sharding.make_mesh()
  result['steps'] = time_steps(
      step_specs(mode), mesh, warmup, repeats, _BUDGET.value,
      _WORKERS.value, on_row=lambda rows: write(_OUT.value, dict(result, steps=rows)))
  result['packs'] = time_steps(
      pack_specs(mode), mesh, warmup, repeats, _PACK_BUDGET.value,
      _WORKERS.value, on_row=lambda rows: write(_OUT.value, dict(result, packs=rows)))
  pipeline_on = _PIPELINE.value == 'on' or (_PIPELINE.value == 'auto' and mode == 'full')
  result['input_pipeline'] = (input_pipeline_rows(_OUT.value, timeout_s=120) if pipeline_on
                              else 'skipped (reduced suite)')
  result['elapsed_s'] = time.perf_counter() - start
  write(_OUT.value, result)
  print(f'wrote {_OUT.value}/results.json and results.md in {result["elapsed_s"]:.0f} s')


if __name__ == '__main__':
  app.run(main)
