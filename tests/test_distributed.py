"""Multi-process start-up and peer loss: one line, exit status 7, bounded time, resume.

The slow tests launch `python -m aikd_jax.main` twice on this machine (one CPU device
each), as tests/test_train.py's two-process test does.
"""
import os
import socket
import subprocess
import sys
import time

import pytest

from aikd_jax import distributed
from aikd_jax.errors import DistributedError
from tests.runs import ROOT, cli_command



def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(('localhost', 0))
    return sock.getsockname()[1]


PEER_TIMEOUT_S = 10.0  # the survivors' bound in these tests (default 30 s)


def _command(workdir, data_dirs, port, process_id, *flags, num_processes=2):
  args, env = cli_command(workdir, data_dirs, f'--coordinator=localhost:{port}',
                          f'--num_processes={num_processes}', f'--process_id={process_id}',
                          *flags)
  env['AIKD_JAX_PEER_TIMEOUT_S'] = str(PEER_TIMEOUT_S)
  return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _one_error_line(stderr: str) -> str:
  lines = [l for l in stderr.splitlines() if l.startswith('error:')]
  assert len(lines) == 1, stderr[-3000:]
  assert 'Traceback' not in stderr and 'Check failure' not in stderr, stderr[-3000:]
  return lines[0]


def _steps(workdir, phase='superior') -> list[int]:
  folder = os.path.join(workdir, phase, 'checkpoints')
  if not os.path.isdir(folder):
    return []
  return sorted(int(n) for n in os.listdir(folder) if n.isdigit())


def _wait_for(predicate, timeout_s, procs):
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    if predicate():
      return
    for p in procs:
      if p.poll() is not None:
        raise AssertionError(f'a process ended early ({p.returncode}): '
                             f'{p.communicate()[1][-3000:]}')
    time.sleep(0.2)
  raise AssertionError('timed out')


# --- Fast: the checks before JAX starts, and the watchdog's bookkeeping -----------------

def test_duplicate_process_id_on_this_host_is_refused():
  coordinator = f'localhost:{_free_port()}'
  distributed._claim_process_id(coordinator, 1)  # pylint: disable=protected-access
  code = ('import sys; from aikd_jax import distributed\n'
          'try:\n'
          f'  distributed._claim_process_id({coordinator!r}, 1)\n'
          'except Exception as e:\n'
          '  print(type(e).__name__, e); sys.exit(9)')
  proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True,
                        text=True, timeout=60)
  assert proc.returncode == 9, proc.stderr
  assert proc.stdout.startswith('DistributedError another process on this host already '
                                'runs as --process_id=1')


def test_coordinator_port_in_use_is_refused():
  with socket.socket() as sock:
    sock.bind(('', 0))
    sock.listen()
    port = sock.getsockname()[1]
    with pytest.raises(DistributedError, match=rf'coordinator port {port} is already in use'):
      distributed._check_port_free(f'localhost:{port}')  # pylint: disable=protected-access


def test_bad_process_id_and_timeout_are_one_line():
  with pytest.raises(DistributedError, match=r'--process_id=2 is outside 0\.\.1'):
    distributed.initialize('localhost:1', 2, 2, 10)
  with pytest.raises(DistributedError, match='--distributed_timeout must be positive'):
    distributed.initialize('localhost:1', 2, 0, 0)


class _FakeClient:
  def __init__(self):
    self.store = {}

  def key_value_set(self, key, value, allow_overwrite=False):
    del allow_overwrite
    self.store[key] = value


def test_watchdog_flags_a_silent_peer_and_ignores_a_finished_one():
  dog = distributed.PeerWatchdog(10, client=_FakeClient(), process_id=0, num_processes=3)
  alive = {'aikd_jax/alive/1': '1', 'aikd_jax/alive/2': '1'}
  assert dog.check(alive, {}, now=time.monotonic() + 1) is None
  t = time.monotonic() + 5
  assert dog.check({'aikd_jax/alive/1': '2', 'aikd_jax/alive/2': '1'},
                   {'aikd_jax/done/2': '1'}, now=t) is None
  assert dog.check({'aikd_jax/alive/1': '2'}, {'aikd_jax/done/2': '1'}, now=t + 9) is None
  assert dog.check({'aikd_jax/alive/1': '2'}, {'aikd_jax/done/2': '1'}, now=t + 11) == 1


# --- Slow: two real processes ------------------------------------------------------------

@pytest.mark.slow
def test_missing_peer_ends_with_one_line_within_the_timeout(data_dirs, tmp_path):
  start = time.monotonic()
  proc = _command(tmp_path, data_dirs, _free_port(), 0, '--distributed_timeout=5')
  _, err = proc.communicate(timeout=120)
  elapsed = time.monotonic() - start
  assert proc.returncode == DistributedError.exit_code, err[-3000:]
  line = _one_error_line(err)
  assert 'not all 2 processes joined within 5 s at coordinator localhost:' in line
  assert 'duplicate --process_id' in line and '--num_processes' in line
  assert elapsed < 60, elapsed
  assert not os.path.exists(tmp_path / 'superior')


@pytest.mark.slow
def test_duplicate_process_zero_is_refused_at_start(data_dirs, tmp_path):
  port = _free_port()
  first = _command(tmp_path / 'a', data_dirs, port, 0, '--distributed_timeout=30')
  try:
    time.sleep(8)  # the first one holds the id and the port
    second = _command(tmp_path / 'b', data_dirs, port, 0, '--distributed_timeout=30')
    _, err = second.communicate(timeout=60)
    assert second.returncode == DistributedError.exit_code, err[-3000:]
    assert 'already runs as --process_id=0' in _one_error_line(err)
  finally:
    first.kill()
    first.communicate()


@pytest.mark.slow
def test_killed_peer_ends_survivor_then_restart_resumes(data_dirs, tmp_path):
  port = _free_port()
  flags = ['--config.num_epochs=30']
  procs = [_command(tmp_path, data_dirs, port, i, *flags) for i in range(2)]
  try:
    _wait_for(lambda: _steps(tmp_path), 120, procs)
    procs[1].kill()
    killed_at = time.monotonic()
    _, err = procs[0].communicate(timeout=PEER_TIMEOUT_S + 60)
    elapsed = time.monotonic() - killed_at
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert procs[0].returncode == DistributedError.exit_code, err[-3000:]
  line = _one_error_line(err)
  assert 'process 1 of 2 stopped responding' in line and 'resumes' in line
  assert elapsed < PEER_TIMEOUT_S + 15, elapsed
  before = _steps(tmp_path)
  # The same command again resumes from the newest checkpoint.
  procs = [_command(tmp_path, data_dirs, port, i, *flags)
           for i in range(2)]
  try:
    _wait_for(lambda: any(s > before[-1] for s in _steps(tmp_path)), 120, procs)
  finally:
    for p in procs:
      p.kill()
    _, err = procs[0].communicate()
    procs[1].communicate()
  assert min(_steps(tmp_path)) >= before[-1]  # nothing started again from step 0
  spe = 3  # 96 examples, batch 32
  resumed_at = f'superior: resumed at epoch {before[-1] // spe}, step {before[-1] % spe} '
  assert resumed_at in err, err[-3000:]
