"""A sweep's plan on SLURM: job arrays whose task ids are the plan's cell indices.

`submit` writes DIR/slurm/cell.sbatch (one script for every cell: it runs
`python -m aikd_jax.sweep --workdir=DIR --cell`, which reads SLURM_ARRAY_TASK_ID) and calls
`sbatch --parsable` for
  - one array of the cells that can start now: superiors, students that need none, and
    students whose superior is already done;
  - one array per superior submitted or queued, of its students, each array depending on
    that superior's own task (`--dependency=afterok:<job>_<cell> --kill-on-invalid-dep=yes`),
    so a failed superior cancels its students and no one else's.
Every task gets `--signal=B:TERM@120` and `--requeue`: a preempted cell saves and resumes
when SLURM requeues it. Done cells, and cells already queued or running in SLURM, are not
submitted again, so the same command resubmits what is left. Job ids go to
DIR/slurm/jobs.json. We call SLURM's own commands; nothing here schedules.
"""
import dataclasses
import datetime
import json
import os
import shlex
import shutil
import subprocess
import sys

from aikd_jax import paths, plan as plan_lib
from aikd_jax.errors import ConfigError

SLURM_DIR = 'slurm'
SCRIPT = 'cell.sbatch'
JOBS_JSON = 'jobs.json'
ACTIVE = ('PENDING', 'RUNNING', 'CONFIGURING', 'COMPLETING', 'REQUEUED', 'RESIZING',
          'SUSPENDED', 'REQUEUE_HOLD', 'REQUEUE_FED', 'SIGNALING', 'STAGE_OUT')


@dataclasses.dataclass(frozen=True)
class Options:
  """`--slurm.*`: what every cell's job asks for (empty: the cluster's default)."""
  partition: str = ''
  account: str = ''
  time: str = ''  # e.g. '2-00:00:00'
  gpus: int = 0  # per cell
  cpus: int = 0  # per cell
  mem: str = ''  # e.g. '32G'
  throttle: int = 0  # at most this many tasks of each array at once (%N)
  extra: tuple = ()  # more #SBATCH options, e.g. ('--qos=high', '--constraint=a100')

  @classmethod
  def from_config(cls, c) -> 'Options':
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(c) - fields)
    if unknown:
      raise ConfigError(f'unknown option --slurm.{unknown[0]}; known: '
                        f'{", ".join(sorted(fields))}')
    extra = c.get('extra') or ()
    extra = tuple(e.strip() for e in (extra.split(';') if isinstance(extra, str) else extra)
                  if e.strip())
    options = cls(**{**dict(c), 'extra': extra})
    for name in ('gpus', 'cpus', 'throttle'):
      if not isinstance(getattr(options, name), int) or getattr(options, name) < 0:
        raise ConfigError(f'--slurm.{name} must be an integer >= 0')
    for line in extra:
      if not line.startswith('--') or '\n' in line:
        raise ConfigError(f'--slurm.extra {line!r}: give sbatch options such as --qos=high')
    return options


def script(workdir: str, options: Options, python: str = sys.executable,
           cwd: str | None = None) -> str:
  """The batch script of every cell; `exec` makes Python the batch shell, so the
  B:TERM signal reaches it."""
  lines = ['#!/bin/bash',
           f'#SBATCH --job-name=aikd-{os.path.basename(workdir.rstrip("/"))}',
           f'#SBATCH --output={os.path.join(workdir, SLURM_DIR, "logs", "%A_%a.out")}',
           '#SBATCH --open-mode=append',
           f'#SBATCH --chdir={cwd or os.getcwd()}',
           '#SBATCH --ntasks=1',
           '#SBATCH --signal=B:TERM@120',
           '#SBATCH --requeue']
  for flag, value in (('partition', options.partition), ('account', options.account),
                      ('time', options.time), ('cpus-per-task', options.cpus),
                      ('mem', options.mem)):
    if value:
      lines.append(f'#SBATCH --{flag}={value}')
  if options.gpus:
    lines.append(f'#SBATCH --gres=gpu:{options.gpus}')
  lines += [f'#SBATCH {e}' for e in options.extra]
  package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  lines += ['# One cell of the plan in DIR/sweep.json: the cell index is SLURM_ARRAY_TASK_ID.',
            'set -euo pipefail',
            f'export PYTHONPATH={shlex.quote(package_root)}${{PYTHONPATH:+:$PYTHONPATH}}',
            f'exec {shlex.quote(python)} -m aikd_jax.sweep '
            f'--workdir={shlex.quote(workdir)} --cell']
  return '\n'.join(lines) + '\n'


def _array(indices, throttle: int) -> str:
  return ','.join(str(i) for i in sorted(indices)) + (f'%{throttle}' if throttle else '')


def arrays(plan: plan_lib.Plan, todo: list, queued: dict) -> list[tuple[list, str | None]]:
  """(cell indices, dependency) per sbatch call, for the cells in `todo`.

  `queued` maps the index of a cell already in SLURM's queue to its array job id. A
  dependency names the superior's job as '{job}' (submitted in this call's first array)
  or by its queued id.
  """
  now, after = [], {}
  for cell in todo:
    sup = cell.depends_on
    if sup is None or plan_lib.unit_finished(plan, plan.cell(sup)) is not None:
      now.append(cell.index)
    else:
      after.setdefault(sup, []).append(cell.index)
  calls = [(now, None)] if now else []
  for sup, students in sorted(after.items()):
    job = queued.get(sup, '{job}' if sup in now else None)
    if job is None:  # its superior is neither done, nor queued, nor submitted now
      raise ConfigError(f'cell {students[0]} needs cell {sup}, which is not in this plan\'s '
                        'submission; submit the whole plan')
    calls.append((students, f'afterok:{job}_{sup}'))
  return calls


def _sbatch(args: list[str]) -> str:
  try:
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
  except OSError as e:
    raise ConfigError(f'--submit=slurm: cannot run sbatch ({e})') from None
  if out.returncode:
    lines = [l for l in (out.stderr or out.stdout).splitlines() if l.strip()]
    raise ConfigError(f'sbatch refused the job: {lines[-1] if lines else out.returncode}')
  return out.stdout.strip().split(';')[0]


# Terminal SLURM states of a task that did not finish its cell.
FAILED = ('FAILED', 'CANCELLED', 'TIMEOUT', 'OUT_OF_MEMORY', 'NODE_FAIL', 'PREEMPTED',
          'BOOT_FAIL', 'DEADLINE')


def _tasks(job: str) -> list[int]:
  """The array task ids of a JobID as squeue/sacct print it: '12_3', '12_[4-6,9%2]'."""
  tasks = job.partition('_')[2].strip('[]').split('%')[0]
  out = []
  for part in tasks.split(',') if tasks else ():
    first, _, last = part.partition('-')
    if first.isdigit() and (not last or last.isdigit()):
      out += range(int(first), int(last or first) + 1)
  return out


def _states(args: list[str]) -> dict:
  """{task id: state} from a SLURM command printing 'JobID|State' lines; {} on failure."""
  if shutil.which(args[0]) is None:
    return {}
  try:
    out = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
  except (OSError, subprocess.TimeoutExpired):
    return {}
  states = {}
  for line in out.stdout.splitlines() if out.returncode == 0 else ():
    job, _, state = line.partition('|')
    for task in _tasks(job.strip()):
      states[task] = state.split()[0] if state.strip() else ''
  return states


def queue_states(job_ids) -> dict:
  """{cell index: SLURM state} of the tasks of these array jobs still in SLURM's queue
  (`squeue`); {} without SLURM."""
  if not job_ids:
    return {}
  return _states(['squeue', '-h', '-r', '-o', '%i|%T', '-j', ','.join(job_ids)])


def accounting_states(job_ids) -> dict:
  """{cell index: state} from `sacct`, where SLURM's accounting is configured; else {}."""
  if not job_ids:
    return {}
  return _states(['sacct', '-n', '-P', '-X', '-o', 'JobID,State', '-j', ','.join(job_ids)])


def read_jobs(workdir: str) -> list[dict]:
  path = os.path.join(workdir, SLURM_DIR, JOBS_JSON)
  try:
    with open(path) as f:
      jobs = json.load(f)
  except (OSError, ValueError):
    return []
  return jobs if isinstance(jobs, list) else []


def job_ids(workdir: str) -> list[str]:
  return [str(j['job_id']) for j in read_jobs(workdir) if isinstance(j, dict)
          and j.get('job_id')]


def submit(plan: plan_lib.Plan, todo: list, options: Options, dry_run: bool, log) -> list:
  """Submits the cells in `todo` (cells already queued are left out); returns the
  submissions [{job_id, cells, dependency}]. With `dry_run`, prints and writes nothing."""
  if not dry_run and shutil.which('sbatch') is None:
    raise ConfigError('--submit=slurm needs SLURM\'s sbatch on PATH (run it on a login node)')
  folder = os.path.join(plan.workdir, SLURM_DIR)
  queued = queue_states(job_ids(plan.workdir)) if not dry_run else {}
  queued_jobs = _queued_jobs(plan.workdir, queued)
  skipped = [c.index for c in todo if c.index in queued_jobs]
  todo = [c for c in todo if c.index not in queued_jobs]
  if skipped:
    log(f'sweep: cells {_array(skipped, 0)} are still queued or running in SLURM: not '
        'submitted again')
  if not todo:
    log('sweep: nothing to submit: every cell is done, queued or running')
    return []
  path = os.path.join(folder, SCRIPT)
  text = script(plan.workdir, options)
  calls = arrays(plan, todo, queued_jobs)
  if dry_run:
    log(f'# {path}\n{text}')
  else:
    os.makedirs(os.path.join(folder, 'logs'), exist_ok=True)
    paths.write_text_atomic(path, text)
  submitted, first = [], None
  for cells, dependency in calls:
    args = ['sbatch', '--parsable', f'--array={_array(cells, options.throttle)}']
    if dependency:
      args += [f'--dependency={dependency.replace("{job}", first or "<job>")}',
               '--kill-on-invalid-dep=yes']
    args.append(path)
    if dry_run:
      log(' '.join(shlex.quote(a) for a in args))
      continue
    job = _sbatch(args)
    first = first or (job if dependency is None else None)
    submitted.append({'job_id': job, 'cells': sorted(cells), 'dependency': args[3]
                      if dependency else None,
                      'submitted': datetime.datetime.now().isoformat(timespec='seconds')})
    log(f'sweep: submitted cells {_array(cells, 0)} as SLURM job {job}'
        + (f' ({args[3]})' if dependency else ''))
    _write_jobs(plan.workdir, read_jobs(plan.workdir) + [submitted[-1]])
  return submitted


def _queued_jobs(workdir: str, states: dict) -> dict:
  """{cell index: its array job id} of the cells still active in SLURM's queue."""
  active = {i for i, s in states.items() if s in ACTIVE}
  jobs = {}
  for job in read_jobs(workdir):
    for index in job.get('cells', ()):
      if index in active:
        jobs[index] = str(job['job_id'])
  return jobs


def _write_jobs(workdir: str, jobs: list) -> None:
  paths.write_text_atomic(os.path.join(workdir, SLURM_DIR, JOBS_JSON),
                          json.dumps(jobs, indent=2))
