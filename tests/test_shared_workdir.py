"""Multi-process runs refuse a workdir that is not shared by every process, and processes
that were given different configs."""
import os
import socket
import subprocess
import threading
import time

import pytest

from aikd_jax import distributed, shared_workdir
from aikd_jax.errors import ConfigError, WorkdirError
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


def _two_processes(data_dirs, workdirs, flags) -> list[str]:
  """Runs the smoke config as two local processes (jax.distributed); process i gets
  workdirs[i] and flags[i]. Checks that each exits with one error line; returns them."""
  with socket.socket() as sock:
    sock.bind(('localhost', 0))
    port = sock.getsockname()[1]
  procs = []
  for i in range(2):
    args, env = cli_command(str(workdirs[i]), data_dirs, '--config.method=baseline',
                            f'--coordinator=localhost:{port}', '--num_processes=2',
                            f'--process_id={i}', '--workdir_timeout=3', *flags[i])
    procs.append(subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True))
  lines = []
  for p in procs:
    _, err = p.communicate(timeout=300)
    errors = [l for l in err.splitlines() if l.startswith('error:')]
    assert len(errors) == 1 and 'Traceback' not in err, err[-3000:]
    lines.append((p.returncode, errors[0]))
  return lines


def test_two_processes_with_two_local_workdirs_stop_with_one_line(data_dirs, tmp_path):
  """Two local processes, each given its own folder: exit 4, one line."""
  outs = _two_processes(data_dirs, [tmp_path / 'host0', tmp_path / 'host1'], [[], []])
  for i, (code, line) in enumerate(outs):
    assert code == WorkdirError.exit_code, line
    assert f'--workdir {tmp_path / f"host{i}"} is not shared' in line, line
    assert 'must be storage every host reaches' in line and 'within 3 s' in line
    assert not (tmp_path / f'host{i}' / 'config.json').exists()


# -- every process runs the config of process 0 -------------------------------------------
class _SharedStore(_FakeKeyValueStore):
  """One store for processes run as threads: a get waits (up to 10 s) for its key."""

  def __init__(self):
    super().__init__()
    self._changed = threading.Condition()

  def key_value_set(self, key, value, allow_overwrite=False):
    with self._changed:
      super().key_value_set(key, value, allow_overwrite)
      self._changed.notify_all()

  def blocking_key_value_get(self, key, timeout_in_ms):
    with self._changed:
      self._changed.wait_for(lambda: key in self.values, timeout=10)
      return super().blocking_key_value_get(key, timeout_in_ms)


def _run_processes(configs: list[dict], ignore=frozenset()) -> list[str | None]:
  """check_same_config on each config as one process (a thread); each one's error or None."""
  store, errors = _SharedStore(), [None] * len(configs)

  def process(i):
    try:
      distributed.check_same_config(configs[i], ignore, client=store, process_index=i,
                                    process_count=len(configs))
    except ConfigError as e:
      errors[i] = str(e)
  threads = [threading.Thread(target=process, args=(i,)) for i in range(len(configs))]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  return errors


def _config(**overrides):
  config = {'seed': 0, 'optim': {'lr': 0.1, 'lr_milestones': [3, 5]}, 'data': {'tfds_dir': '/a'}}
  for key, value in overrides.items():
    group, leaf = key.split('.') if '.' in key else (None, key)
    (config[group] if group else config)[leaf] = value
  return config


def test_processes_with_the_same_config_pass():
  assert _run_processes([_config(), _config(), _config()]) == [None] * 3
  # A key that may differ between hosts (a local data folder) is not compared.
  assert _run_processes([_config(), _config(**{'data.tfds_dir': '/b'})],
                        {'data.tfds_dir'}) == [None, None]


@pytest.mark.parametrize('overrides,says', [
    ({'optim.lr': 0.05}, 'process(es) 2 differ from process 0; process 2 in optim.lr 0.1 vs 0.05'),
    ({'seed': 1}, 'process 2 in seed 0 vs 1'),
    ({'optim.lr_milestones': [3, 6]}, 'optim.lr_milestones [3, 5] vs [3, 6]'),
    ({'data.tfds_dir': '/b'}, 'data.tfds_dir'),  # compared unless ignored
])
def test_a_process_with_another_config_stops_every_process(overrides, says):
  """Three processes as threads; the third was given another value."""
  errors = _run_processes([_config(), _config(), _config(**overrides)])
  assert errors[0] == errors[1] == errors[2] and says in errors[0], errors
  assert '\n' not in errors[0] and 'Start every process with the same --config' in errors[0]


def test_two_processes_given_different_learning_rates_stop_before_writing(data_dirs, tmp_path):
  outs = _two_processes(data_dirs, [tmp_path, tmp_path], [[], ['--config.optim.lr=0.05']])
  for code, line in outs:
    assert code == ConfigError.exit_code, line
    assert 'process 1 in optim.lr 0.1 vs 0.05' in line, line
  assert not os.listdir(tmp_path)
