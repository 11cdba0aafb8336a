"""A real one-node SLURM cluster for the tests, from Debian's slurm-wlm and munge packages.

`SlurmCluster(root)` starts munged, slurmctld and slurmd as the current user (root in CI)
without systemd: a munge key, sockets, state, spool and logs under `root`, ports of its
own, `select/cons_tres` on this machine's CPUs. Jobs that end are logged by
`jobcomp/filetxt` (sacct needs slurmdbd, which a one-node test does without). `env` is
what a client needs (SLURM_CONF); `close()` shuts every daemon down.
"""
import os
import shutil
import socket
import subprocess
import time

DAEMONS = ('munged', 'slurmctld', 'slurmd', 'sbatch', 'squeue', 'scontrol', 'scancel')


def missing() -> str | None:
  """Why no cluster can be started here (a program not installed), else None."""
  for name in DAEMONS:
    if shutil.which(name) is None and not os.path.exists(f'/usr/sbin/{name}'):
      return f'{name} is not installed (apt-get install slurm-wlm munge)'
  if os.geteuid() != 0:
    return 'the one-node SLURM test cluster runs its daemons as root'
  return None


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _program(name: str) -> str:
  return shutil.which(name) or f'/usr/sbin/{name}'


class SlurmCluster:
  """One controller and one compute node on this machine."""

  def __init__(self, root: str, start_timeout_s: float = 60):
    self.root = root
    for sub in ('munge', 'state', 'spool', 'log'):
      os.makedirs(os.path.join(root, sub), mode=0o700, exist_ok=True)
    self.jobcomp = os.path.join(root, 'jobcomp.txt')
    self.conf = os.path.join(root, 'slurm.conf')
    self.env = dict(os.environ, SLURM_CONF=self.conf)
    self._munge_socket = os.path.join(root, 'munge', 'munge.socket')
    self._start_munge()
    with open(self.conf, 'w') as f:
      f.write(self._config())
    for daemon in ('slurmctld', 'slurmd'):
      subprocess.run([_program(daemon), '-f', self.conf] + (['-c'] if daemon == 'slurmctld'
                                                             else []),
                     env=self.env, check=True, capture_output=True, timeout=30)
    self._wait_idle(start_timeout_s)

  def _start_munge(self) -> None:
    key = os.path.join(self.root, 'munge', 'munge.key')
    with open(key, 'wb') as f:
      f.write(os.urandom(1024))
    os.chmod(key, 0o400)
    subprocess.run([_program('munged'), '--force', f'--socket={self._munge_socket}',
                    f'--key-file={key}', f'--pid-file={self.root}/munge/munged.pid',
                    f'--log-file={self.root}/munge/munged.log',
                    f'--seed-file={self.root}/munge/seed'], check=True, capture_output=True,
                   timeout=30)

  def _config(self) -> str:
    host, root = socket.gethostname(), self.root
    return f"""ClusterName=aikdtest
SlurmctldHost={host}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
AuthInfo=socket={self._munge_socket}
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
JobCompType=jobcomp/filetxt
JobCompLoc={self.jobcomp}
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
MinJobAge=600
KillWait=30
NodeName={host} CPUs={os.cpu_count()} State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""

  def _wait_idle(self, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
      out = self.run('sinfo', '-h', '-o', '%t', check=False)
      if out.stdout.strip() in ('idle', 'mix', 'alloc'):
        return
      time.sleep(0.5)
    logs = os.path.join(self.root, 'log')
    raise RuntimeError(f'the SLURM test cluster did not come up within {timeout_s} s '
                       f'(logs in {logs})')

  def run(self, *args, check=True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), env=self.env, capture_output=True, text=True,
                          check=check, timeout=60)

  def wait(self, job_ids, timeout_s: float = 600) -> None:
    """Waits until none of these jobs is in the queue any more."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
      out = self.run('squeue', '-h', '-o', '%i', '-j', ','.join(job_ids), check=False)
      if not out.stdout.strip():
        return
      time.sleep(1)
    raise TimeoutError(f'SLURM jobs {job_ids} still queued after {timeout_s} s:\n'
                       + self.run('squeue', check=False).stdout)

  def completed(self) -> list[dict]:
    """The job completion log: one dict of its key=value fields per job that ended."""
    if not os.path.exists(self.jobcomp):
      return []
    with open(self.jobcomp) as f:
      return [dict(field.split('=', 1) for field in line.split() if '=' in field)
              for line in f if line.strip()]

  def close(self) -> None:
    self.run('scontrol', 'shutdown', check=False)
    subprocess.run([_program('munged'), '--stop', f'--socket={self._munge_socket}'],
                   capture_output=True, check=False, timeout=30)
    time.sleep(1)
