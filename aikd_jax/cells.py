"""Running one cell of a sweep's plan in this process, and recording how it went.

Every executor ends here: the in-process sweep calls `execute` for each cell, and a
scheduler's task (`python -m aikd_jax.sweep --workdir=DIR --cell=K`) calls it for one.
A finished cell returns its results at once; a partial one resumes (run.run does that); a
student whose superior cell has not finished raises SuperiorNotReadyError and trains
nothing. Each execution writes <cell workdir>/cell.json: its state (running, done,
stopped, failed), exit status, message, error log, host, pid and scheduler job id.
"""
import contextlib
import json
import logging as py_logging
import os
import socket
import time
import traceback

from aikd_jax import console, paths, plan as plan_lib, workdir_lock
from aikd_jax.errors import INTERNAL_ERROR, SuperiorNotReadyError, UserError

# Scheduler variables a cell records (SLURM job arrays; Kubernetes Indexed Jobs).
_JOB_VARIABLES = ('SLURM_JOB_ID', 'SLURM_ARRAY_JOB_ID', 'SLURM_ARRAY_TASK_ID',
                  'SLURM_RESTART_COUNT', 'JOB_COMPLETION_INDEX', 'HOSTNAME')


class CellFailed(Exception):
  """A cell that failed; the message is one line, `error_log` names a traceback file."""

  def __init__(self, message: str, exit_code: int, error_log: str | None = None):
    super().__init__(message)
    self.exit_code, self.error_log = exit_code, error_log


def _write_record(cell: plan_lib.Cell, **fields) -> None:
  path = os.path.join(cell.workdir, plan_lib.CELL_JSON)
  data = {'index': cell.index, 'cell': cell.name, 'host': socket.gethostname(),
          'pid': os.getpid(), 'job': {k: os.environ[k] for k in _JOB_VARIABLES
                                      if k in os.environ}, **fields}
  with contextlib.suppress(OSError):  # a record must never fail the run it describes
    paths.write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True))


@contextlib.contextmanager
def _own_log_handlers():
  """Closes the log handlers a cell adds (run.run logs to its WORKDIR/log.txt)."""
  root = py_logging.getLogger()
  before = list(root.handlers)
  try:
    yield
  finally:
    for handler in [h for h in root.handlers if h not in before]:
      root.removeHandler(handler)
      handler.close()


def check_superior(plan: plan_lib.Plan, cell: plan_lib.Cell) -> None:
  """A student needs its superior cell finished; raises SuperiorNotReadyError if not."""
  if cell.depends_on is None:
    return
  superior = plan.cell(cell.depends_on)
  if plan_lib.finished(superior) is None:
    raise SuperiorNotReadyError(
        f'cell {cell.index} ({cell.name}) needs its superior, cell {superior.index} '
        f'({superior.name}), which is {plan_lib.state(superior)}; run that cell first')


def _train(plan: plan_lib.Plan, cell: plan_lib.Cell, stop_requested) -> dict:
  from aikd_jax import run  # pylint: disable=g-import-not-at-top
  config = plan_lib.cell_config(plan, cell)
  with _own_log_handlers():
    if cell.pack:
      members = plan_lib.members(plan, cell)
      return run.run_pack([plan_lib.cell_config(plan, m) for m in members],
                          [m.workdir for m in members], cell.pack_dir,
                          superior_only=cell.is_superior, stop_requested=stop_requested)[0]
    if cell.is_superior:
      return run.run_superior_only(config, cell.workdir, stop_requested)
    return run.run(config, cell.workdir, stop_requested)['student']


def _internal_error_log(cell: plan_lib.Cell, plan: plan_lib.Plan) -> str:
  folder = cell.workdir if os.path.isdir(cell.workdir) else plan.workdir
  path = os.path.join(folder, console.ERROR_LOG)
  with open(path, 'a') as f:
    f.write(traceback.format_exc())
  return path


def execute(plan: plan_lib.Plan, cell: plan_lib.Cell, stop_requested=lambda: False) -> dict:
  """Trains (or resumes, or skips) one cell, or the whole pack of a packed cell; returns
  the cell's results.json.

  Raises loop.Preempted when stopped (a checkpoint is saved), SuperiorNotReadyError or a
  workdir_lock.LockedError without touching the cell, and CellFailed for anything else.
  """
  from aikd_jax.train.loop import Preempted  # pylint: disable=g-import-not-at-top
  members = plan_lib.members(plan, cell)
  done = plan_lib.unit_finished(plan, cell)
  if done is not None:
    return plan_lib.finished(cell)
  for member in members:
    check_superior(plan, member)
    workdir_lock.check_free(member.workdir)
  start = time.time()
  record = lambda **fields: [_write_record(m, started=start, **fields) for m in members]
  record(state='running')
  try:
    results = _train(plan, plan_lib.units(plan, [cell])[0], stop_requested)
  except Preempted as e:
    record(state='stopped', ended=time.time(), message=console.one_line(e))
    raise
  except workdir_lock.LockedError:
    raise  # another execution started meanwhile: its record stands
  except UserError as e:
    record(state='failed', ended=time.time(), exit_code=e.exit_code,
           message=console.one_line(e))
    raise CellFailed(console.one_line(e), e.exit_code) from e
  except Exception as e:  # pylint: disable=broad-except
    log = _internal_error_log(cell, plan)
    message = console.one_line(f'internal error ({type(e).__name__}: {str(e)[:200]}); '
                               f'traceback in {log}')
    record(state='failed', ended=time.time(), exit_code=INTERNAL_ERROR, message=message,
           error_log=log)
    raise CellFailed(message, INTERNAL_ERROR, log) from e
  record(state='done', ended=time.time(), exit_code=0)
  return plan_lib.finished(cell) if cell.pack else results
