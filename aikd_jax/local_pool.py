"""A sweep's plan on one machine: up to N cells at once, one subprocess each.

Each cell runs as `python -m aikd_jax.sweep --workdir=DIR --cell=K` with its own GPU
(CUDA_VISIBLE_DEVICES) on a machine with GPUs, or as its own CPU process on one without.
A student starts once its superior cell is done; the students of a failed superior fail
without running. SIGTERM or Ctrl-C is passed on to every running cell, which saves a
checkpoint and stops; the same command resumes. Each cell's output goes to
DIR/logs/cell<K>.log. This is a process pool, not a scheduler: for a cluster use SLURM.
"""
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time

from aikd_jax import console, plan as plan_lib
from aikd_jax.errors import ConfigError

POLL_S = 0.5


def visible_gpus() -> list[str]:
  """The GPUs this machine shows: CUDA_VISIBLE_DEVICES if set, else `nvidia-smi -L`."""
  given = os.environ.get('CUDA_VISIBLE_DEVICES')
  if given is not None:
    return [g for g in given.split(',') if g.strip()]
  if shutil.which('nvidia-smi') is None:
    return []
  out = subprocess.run(['nvidia-smi', '-L'], capture_output=True, text=True, check=False)
  return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith('GPU')]


def slots(parallel: int, gpus: list[str]) -> list[str | None]:
  """One entry per concurrent cell: the GPU it gets, or None (a CPU process)."""
  if parallel < 1:
    raise ConfigError(f'--parallel must be >= 1, got {parallel}')
  if gpus and parallel > len(gpus):
    raise ConfigError(f'--parallel={parallel} but this machine shows {len(gpus)} GPUs '
                      f'({",".join(gpus)}); one cell per GPU: use --parallel={len(gpus)}')
  return list(gpus[:parallel]) if gpus else [None] * parallel


@dataclasses.dataclass
class _Running:
  cell: plan_lib.Cell
  slot: int
  proc: subprocess.Popen
  started: float


class Pool:
  """Runs the unfinished cells of `plan` on `devices` (from `slots`); see the module doc."""

  def __init__(self, plan: plan_lib.Plan, devices: list, stop_requested, log,
               python: str = sys.executable):
    self.plan, self.devices, self.stop_requested, self.log = plan, devices, stop_requested, log
    self.python = python
    self.failed, self.done, self.durations = {}, set(), []
    self.running: list[_Running] = []
    self.stopped, self.total = False, 0

  def run(self, cells: list) -> None:
    pending = [c for c in cells if plan_lib.unit_finished(self.plan, c) is None]
    self.done = {c.index for c in cells if c not in pending}
    self.total = len(pending)
    self.log(f'sweep: {len(cells)} cells, {len(self.done)} done already; running '
             f'{len(pending)} on {len(self.devices)} slots '
             f'({", ".join("GPU " + d for d in self.devices if d) or "CPU processes"})')
    while pending or self.running:
      if self.stop_requested() and not self.stopped:
        self._stop_all()
      self._reap()
      if not self.stopped:
        pending = self._start_ready(pending)
        if pending and not self.running and not self._startable(pending):
          for cell in pending:  # the superiors they wait for are not in this pool
            self.failed[cell.index] = f'its superior (cell {cell.depends_on}) is not done'
          pending = []
      elif not self.running:
        break
      time.sleep(POLL_S)

  def _startable(self, pending) -> bool:
    return any(c.depends_on is None or c.depends_on in self.done for c in pending)

  def _start_ready(self, pending: list) -> list:
    left = []
    for cell in pending:
      sup = cell.depends_on
      if sup is not None and sup in self.failed:
        self.failed[cell.index] = f'its superior (cell {sup}) failed'
        self.log(f'sweep: cell {cell.index} {cell.name} skipped: its superior failed')
        continue
      free = sorted(set(range(len(self.devices))) - {r.slot for r in self.running})
      if free and (sup is None or sup in self.done):
        self._start(cell, free[0])
      else:
        left.append(cell)
    return left

  def _start(self, cell, slot: int) -> None:
    env = dict(os.environ)
    if self.devices[slot] is not None:
      env['CUDA_VISIBLE_DEVICES'] = self.devices[slot]
    log_dir = os.path.join(self.plan.workdir, 'logs')
    os.makedirs(log_dir, exist_ok=True)
    with open(os.path.join(log_dir, f'cell{cell.index}.log'), 'ab') as out:
      proc = subprocess.Popen(
          [self.python, '-m', 'aikd_jax.sweep', f'--workdir={self.plan.workdir}',
           f'--cell={cell.index}'], env=env, stdout=out, stderr=subprocess.STDOUT,
          start_new_session=True)  # our signal handler, not the terminal, stops it
    self.running.append(_Running(cell, slot, proc, time.monotonic()))
    where = f'GPU {self.devices[slot]}' if self.devices[slot] is not None else f'slot {slot}'
    self.log(f'sweep: start cell {cell.index} {cell.name} on {where} ({self._progress()})')

  def _progress(self) -> str:
    finished = len(self.durations) + len(self.failed)
    left = self.total - finished - len(self.running)
    eta = '?'
    if self.durations:
      mean = sum(self.durations) / len(self.durations)
      eta = console.duration(mean * (left + len(self.running)) / len(self.devices))
    return (f'{len(self.durations)} done, {len(self.failed)} failed, {len(self.running)} '
            f'running, {max(left, 0)} waiting, ETA {eta}')

  def _reap(self) -> None:
    for r in list(self.running):
      code = r.proc.poll()
      if code is None:
        continue
      self.running.remove(r)
      took = time.monotonic() - r.started
      if code == 0:
        self.done.add(r.cell.index)
        self.durations.append(took)
        self.log(f'sweep: done cell {r.cell.index} {r.cell.name} in {console.duration(took)} '
                 f'({self._progress()})')
      elif self.stopped:
        self.log(f'sweep: stopped cell {r.cell.index} {r.cell.name} (exit {code})')
      else:
        message = plan_lib.record(r.cell).get('message') or f'exit status {code}'
        log = os.path.join(self.plan.workdir, 'logs', f'cell{r.cell.index}.log')
        self.failed[r.cell.index] = f'{message} (log: {log})'
        self.log(f'sweep: cell {r.cell.index} {r.cell.name} failed: {message} (log: {log})')

  def _stop_all(self) -> None:
    self.stopped = True
    for r in self.running:
      r.proc.send_signal(signal.SIGTERM)
    self.log(f'sweep: stopping {len(self.running)} running cells: each saves a checkpoint')
