"""Multi-process runs refuse a workdir that is not shared by every process."""
import socket
import subprocess
import time

import pytest

from aikd_jax import shared_workdir
from aikd_jax.errors import WorkdirError
from tests.runs import ROOT, cli_command


class _FakeKeyValueStore:
  """The two methods of JAX's distributed client the check uses, for one process."""

  def __init__(self, values=None):
    self.values = dict(values or {})

  def key_value_set(self, key, value, allow_overwrite=False):
    del allow_overwrite
    self.values[key] = value

  def blocking_key_value_get(self, key, timeout_in_ms):
    del timeout_in_ms
    if key not in self.values:
      raise RuntimeError(f'DEADLINE_EXCEEDED: {key}')
    return self.values[key]


def test_one_process_checks_nothing(tmp_path):
  shared_workdir.check(str(tmp_path / 'nowhere'), 0.1)  # process_count() == 1


def test_process_zero_passes_when_everyone_read_the_token(tmp_path):
  store = _FakeKeyValueStore({'aikd_jax/workdir_seen/1': '1'})
  shared_workdir.check(str(tmp_path), 1, store, process_index=0, process_count=2)
  assert not (tmp_path / shared_workdir.TOKEN).exists()  # cleaned up


def test_a_process_with_another_folder_fails_within_the_timeout(tmp_path):
  store = _FakeKeyValueStore({'aikd_jax/workdir_token': 'abc', 'aikd_jax/workdir_seen/0': '1'})
  start = time.monotonic()
  with pytest.raises(WorkdirError, match='must be storage every host reaches') as e:
    shared_workdir.check(str(tmp_path), 1.0, store, process_index=1, process_count=2)
  assert time.monotonic() - start < 5
  assert str(tmp_path) in str(e.value) and 'process(es) 1 ' in str(e.value)


def test_two_processes_with_two_local_workdirs_stop_with_one_line(data_dirs, tmp_path):
  """Two local processes (jax.distributed), each given its own folder: exit 4, one line."""
  with socket.socket() as sock:
    sock.bind(('localhost', 0))
    port = sock.getsockname()[1]
  procs = []
  for i in range(2):
    args, env = cli_command(str(tmp_path / f'host{i}'), data_dirs, '--config.method=baseline',
                            f'--coordinator=localhost:{port}', '--num_processes=2',
                            f'--process_id={i}', '--workdir_timeout=3')
    procs.append(subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True))
  outs = [p.communicate(timeout=300) for p in procs]
  for i, (p, (_, err)) in enumerate(zip(procs, outs)):
    assert p.returncode == WorkdirError.exit_code, err[-3000:]
    lines = [l for l in err.splitlines() if l.startswith('error:')]
    assert len(lines) == 1 and 'Traceback' not in err, err[-3000:]
    assert f'--workdir {tmp_path / f"host{i}"} is not shared' in lines[0], lines[0]
    assert 'must be storage every host reaches' in lines[0] and 'within 3 s' in lines[0]
    assert not (tmp_path / f'host{i}' / 'config.json').exists()
