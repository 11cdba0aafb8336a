"""A user's mistake or a machine's fault never spoils a workdir, and ends with one line.

Each case checks the one `error:` line, the exit status, that the workdir is unchanged
(or, for faults, that the run ends where an uninterrupted one ends), and that the
corrected command then works.
"""
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from aikd_jax import console, run, workdir_lock
from aikd_jax.errors import ConfigError, DataError, WorkdirError
from tests.runs import (ROOT, cli, comparable, params_of, read_json, smoke_config,
                         start_long_student)


def one_error_line(proc, code: int) -> str:
  """The single `error:` line, which is stderr's last line, of a run that exited `code`."""
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  errors = [l for l in lines if l.startswith('error:')]
  assert proc.returncode == code, proc.stderr[-3000:]
  assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  for noise in ('oneDNN', 'absl::InitializeLog', '/orbax/', 'dataset_info.py', 'feature.py'):
    assert noise not in proc.stderr, (noise, proc.stderr[-3000:])  # library lines: log.txt
  return errors[0]


def listing(folder) -> dict:
  """Every file below `folder` with its size and mtime (to prove nothing changed)."""
  out = {}
  for root, _, files in os.walk(folder):
    for name in files:
      path = os.path.join(root, name)
      st = os.stat(path)
      out[os.path.relpath(path, folder)] = (st.st_size, st.st_mtime_ns)
  return out


# -- bad input: one line, nothing written ------------------------------------------------
@pytest.mark.parametrize('overrides,error,says', [
    ({'optim.lr': -0.1}, ConfigError, 'optim.lr must be > 0'),
    ({'augment.mixup': 1.0, 'augment.cutmix': 1.0}, ConfigError, 'are both on'),
    ({'aikd.critic_steps': 0}, ConfigError, 'aikd.critic_steps must be > 0'),
    ({'batch_size': 512}, ConfigError, 'batch_size 512 exceeds the 96 training examples'),
    ({'augment.cutout': 40}, ConfigError, 'augment.cutout 40 is larger than the 28-px images'),
    ({'superior_init': '/nonexistent/model'}, ConfigError,
     'superior_init /nonexistent/model does not exist'),
    ({'data.name': 'cifar100', 'data.tfds_dir': '/nonexistent/tfds'}, DataError,
     'is not prepared'),
    ({'data.eval_subset': 1}, ConfigError, 'data.eval_subset must be >= 2'),
    ({'tfkd.temperature': float('inf')}, ConfigError, 'tfkd.temperature must be a finite'),
    ({'method': 'tffd', 'model.width': 1}, ConfigError,
     'tffd needs at least two stages, each with an even channel count; model.arch '
     'preact_resnet18 (model.width 1) has stages of [1, 2, 4, 8] channels'),
    ({'model.arch': 'densenet121'}, ConfigError,
     'cannot take the 28x28 images of fashion_mnist: its feature maps shrink to nothing'),
])
def test_bad_value_leaves_no_workdir(data_dirs, tmp_path, overrides, error, says):
  workdir = tmp_path / 'w'
  with pytest.raises(error, match=re.escape(says)) as e:
    run.run(smoke_config(data_dirs, **overrides), str(workdir))
  assert '\n' not in str(e.value)
  assert not workdir.exists()


@pytest.mark.parametrize('flag,says', [
    ('--config.log_every_steps=0', 'log_every_steps must be > 0'),
    ('--config.seed=-3', 'seed must be in [0, 2^31)'),
    ('--config.optim.lr=inf', 'optim.lr must be a finite number, got inf'),
    ('--config.aikd.gp_weight=nan', 'aikd.gp_weight must be a finite number, got nan'),
])
def test_cli_bad_value_is_one_line_and_exit_2(data_dirs, tmp_path, flag, says):
  assert says in one_error_line(cli(str(tmp_path / 'w'), data_dirs, flag), 2)
  assert not (tmp_path / 'w').exists()


def test_batch_that_devices_cannot_split(data_dirs, tmp_path):
  proc = cli(str(tmp_path / 'w'), data_dirs, '--config.batch_size=30', devices=4)
  line = one_error_line(proc, 2)
  assert 'batch_size 30 does not split over the 4 devices' in line
  assert not (tmp_path / 'w').exists()


def test_config_file_missing_or_broken(tmp_path):
  broken = tmp_path / 'broken.py'
  broken.write_text('def get_config(:\n')
  for path, says in ((tmp_path / 'missing.py', 'missing.py'), (broken, 'line 1')):
    proc = subprocess.run([sys.executable, '-m', 'aikd_jax.main', f'--config={path}',
                           f'--workdir={tmp_path / "w"}'], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert says in one_error_line(proc, 2)
  assert not (tmp_path / 'w').exists()


def test_workdir_problems(data_dirs, tmp_path, finished):
  a_file = tmp_path / 'file'
  a_file.write_text('x')
  assert 'is a file, not a folder' in one_error_line(cli(str(a_file), data_dirs), 4)
  assert a_file.read_text() == 'x'
  damaged = tmp_path / 'damaged'
  damaged.mkdir()
  (damaged / 'config.json').write_text('{"seed": ')
  before = listing(damaged)
  line = one_error_line(cli(str(damaged), data_dirs), 4)
  assert 'config.json is damaged' in line and listing(damaged) == before
  no_vars = tmp_path / 'model'
  no_vars.mkdir()
  shutil.copy(os.path.join(finished[0], 'superior', 'model', 'model.json'), no_vars)
  line = one_error_line(cli(str(tmp_path / 'w'), data_dirs, f'--config.superior_init={no_vars}'),
                        4)
  assert 'has model.json but no variables/' in line
  assert not (tmp_path / 'w').exists()


def test_damaged_superior_of_another_workdir_is_one_line_and_left_alone(finished, data_dirs,
                                                                        tmp_path):
  other = _copy_of(finished, tmp_path)
  with open(os.path.join(other, 'superior', 'results.json'), 'r+') as f:
    f.truncate(20)
  before = listing(other)
  with pytest.raises(WorkdirError, match='superior/results.json is damaged'):
    run.run(smoke_config(data_dirs, superior_workdir=other), str(tmp_path / 'w'))
  assert listing(other) == before and not (tmp_path / 'w').exists()


def test_read_only_workdir(data_dirs, tmp_path):
  mount = tmp_path / 'ro'
  mount.mkdir()
  if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', str(mount)],
                    capture_output=True).returncode:
    pytest.skip('cannot mount a read-only tmpfs here (needs root)')
  try:
    line = one_error_line(cli(str(mount / 'w'), data_dirs), 4)
    assert 'cannot be written' in line
  finally:
    subprocess.run(['umount', str(mount)], check=True)


def test_rejected_batch_size_then_corrected_rerun_works(data_dirs, tmp_path, finished):
  """The error's own advice, followed, just works: nothing was written the first time."""
  workdir = str(tmp_path / 'w')
  flags = [f'--config.superior_workdir={finished[0]}']
  one_error_line(cli(workdir, data_dirs, *flags, '--config.batch_size=512'), 2)
  proc = cli(workdir, data_dirs, *flags)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert os.path.exists(os.path.join(workdir, 'student', 'results.json'))


# -- damaged files of a workdir ----------------------------------------------------------
def _copy_of(finished, tmp_path):
  workdir = str(tmp_path / 'copy')
  shutil.copytree(finished[0], workdir)
  return workdir


def test_damaged_results_json_is_recomputed_not_retrained(finished, data_dirs, tmp_path):
  workdir = _copy_of(finished, tmp_path)
  path = os.path.join(workdir, 'superior', 'results.json')
  with open(path, 'r+') as f:
    f.truncate(20)
  student_before = listing(os.path.join(workdir, 'student'))
  checkpoints_before = listing(os.path.join(workdir, 'superior', 'checkpoints'))
  out = run.run(smoke_config(data_dirs), workdir)
  assert comparable(out['superior']) == comparable(finished[1]['superior'])
  # Not retrained: no new checkpoint, and the training time is the one saved with the last.
  assert listing(os.path.join(workdir, 'superior', 'checkpoints')) == checkpoints_before
  assert out['superior']['train_time_s'] == finished[1]['superior']['train_time_s']
  assert os.path.exists(path + '.damaged')
  assert listing(os.path.join(workdir, 'student')) == student_before


def _truncate_step(checkpoints: str, step: int) -> None:
  for root, _, files in os.walk(os.path.join(checkpoints, str(step))):
    for name in files:
      with open(os.path.join(root, name), 'r+b') as f:
        f.truncate(0)


@pytest.mark.slow
@pytest.mark.parametrize('stop_at', [None, 4], ids=['epoch_end', 'mid_epoch'])
def test_damaged_checkpoint_is_moved_aside_and_training_ends_as_uninterrupted(
    finished, data_dirs, tmp_path, stop_at):
  """The newest checkpoint is damaged (epoch end, or a mid-epoch SIGTERM one)."""
  config = smoke_config(data_dirs, superior_workdir=finished[0])
  workdir, student = str(tmp_path), str(tmp_path / 'student')
  if stop_at is None:  # finished, then results and export lost, then the last step damaged
    run.run(config, workdir)
    os.remove(os.path.join(student, 'results.json'))
    shutil.rmtree(os.path.join(student, 'model'))
    damaged = 6
  else:
    calls = []
    with pytest.raises(Exception, match='stopped on request'):
      run.run(config, workdir, stop_requested=lambda: calls.append(1) or len(calls) >= stop_at)
    damaged = stop_at
  _truncate_step(os.path.join(student, 'checkpoints'), damaged)
  resumed = run.run(config, workdir)
  assert os.listdir(os.path.join(student, 'checkpoints', 'damaged')) == [str(damaged)]
  assert comparable(resumed['student']) == comparable(finished[1]['student'])
  jax.tree.map(np.testing.assert_array_equal,
               params_of(os.path.join(finished[0], 'student')), params_of(student))


# -- the workdir lock -------------------------------------------------------------------
def test_lock_held_by_a_live_process_refuses_with_its_name(tmp_path):
  holder = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
  try:
    (tmp_path / '.lock').write_text(
        f'{{"host": "{socket.gethostname()}", "pid": {holder.pid}, "started": 0}}')
    with pytest.raises(WorkdirError, match=f'in use by pid {holder.pid} on '):
      workdir_lock.acquire(str(tmp_path))
  finally:
    holder.kill()
    holder.wait()
  path = workdir_lock.acquire(str(tmp_path))  # its holder is dead now: taken over
  assert read_json(path)['pid'] == os.getpid()


def test_lock_of_another_host_is_stale_only_without_heartbeat(tmp_path):
  lock = tmp_path / '.lock'
  lock.write_text('{"host": "elsewhere", "pid": 1, "started": 0}')
  with pytest.raises(WorkdirError, match='in use by pid 1 on elsewhere'):
    workdir_lock.acquire(str(tmp_path))
  old = os.path.getmtime(lock) - workdir_lock.STALE_S - 1
  os.utime(lock, (old, old))
  assert read_json(workdir_lock.acquire(str(tmp_path)))['host'] == socket.gethostname()


def test_lock_is_released_after_the_run(tmp_path):
  with workdir_lock.held(str(tmp_path)):
    assert (tmp_path / '.lock').exists()
    with pytest.raises(WorkdirError):
      workdir_lock.acquire(str(tmp_path))
  assert not (tmp_path / '.lock').exists()


def test_second_run_on_a_running_workdir_stops_at_once(finished, data_dirs, tmp_path):
  first = start_long_student(finished, data_dirs, tmp_path)
  try:
    before = listing(tmp_path / 'student' / 'checkpoints')
    lock, config = (tmp_path / '.lock').read_text(), listing(tmp_path)['config.json']
    line = one_error_line(cli(str(tmp_path), data_dirs,
                              f'--config.superior_workdir={finished[0]}',
                              '--config.num_epochs=200'), 4)
    assert f'is in use by pid {first.pid} on {socket.gethostname()}' in line
    assert (tmp_path / '.lock').read_text() == lock
    assert listing(tmp_path)['config.json'] == config
  finally:
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=300)
  assert first.returncode == 0
  assert set(before) <= set(listing(tmp_path / 'student' / 'checkpoints'))


# -- signals ----------------------------------------------------------------------------
def test_first_ctrl_c_saves_and_exits_zero(finished, data_dirs, tmp_path):
  proc = start_long_student(finished, data_dirs, tmp_path)
  proc.send_signal(signal.SIGINT)
  _, rest = proc.communicate(timeout=300)
  assert proc.returncode == 0, rest[-3000:]
  assert 'run the same command again to resume' in rest and 'KeyboardInterrupt' not in rest
  steps = os.listdir(tmp_path / 'student' / 'checkpoints')
  assert steps and not os.path.exists(tmp_path / 'student' / 'results.json')


def test_second_ctrl_c_exits_at_once(monkeypatch, capsys):
  handlers, stop = {}, []
  monkeypatch.setattr(signal, 'signal', lambda signum, handler: handlers.update({signum: handler}))
  monkeypatch.setattr(signal, 'set_wakeup_fd', lambda fd: -1)
  monkeypatch.setattr(os, '_exit', lambda code: (_ for _ in ()).throw(SystemExit(code)))
  console.install_stop_handlers(stop, 'stopping')
  handlers[signal.SIGINT](signal.SIGINT, None)
  assert stop == [signal.SIGINT]
  with pytest.raises(SystemExit) as e:
    handlers[signal.SIGINT](signal.SIGINT, None)
  assert e.value.code == 130
  assert capsys.readouterr().err.strip().splitlines()[-1] == (
      'error: interrupted again: stopped without saving')


# A process stuck as a save to unreachable storage would be: in a wait that never ends, in
# Python (a cleanup that waits for the save) or in C (a lock acquired by a native call).
_STUCK = {
    'python_cleanup': 'try:\n  time.sleep(3600)\nfinally:\n  threading.Event().wait()\n',
    # A default mutex locked twice: pthread_mutex_lock does not return on a signal.
    'native_call': ('import ctypes\nlibc, mutex = ctypes.CDLL(None), ctypes.create_string_buffer(64)'
                    '\nlibc.pthread_mutex_lock(mutex)\nlibc.pthread_mutex_lock(mutex)\n'),
}


@pytest.mark.parametrize('stuck', sorted(_STUCK))
def test_second_ctrl_c_exits_while_a_save_is_stuck(stuck):
  script = ('import threading, time\nfrom aikd_jax import console\n'
            "console.install_stop_handlers([], 'stopping')\nprint('ready', flush=True)\n"
            + _STUCK[stuck])
  proc = subprocess.Popen([sys.executable, '-c', script], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == 'ready'
  for _ in range(2):
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
  _, err = proc.communicate(timeout=10)
  assert proc.returncode == 130, err
  assert err.strip().splitlines()[-1] == 'error: interrupted again: stopped without saving'


def test_a_stuck_checkpoint_save_ends_with_one_line_after_the_timeout(tmp_path):
  script = ('import time\nimport orbax.checkpoint as ocp\nfrom aikd_jax import checkpointing\n'
            'ocp.CheckpointManager.save = lambda *a, **k: time.sleep(3600)\n'
            f'checkpointing.TrainCheckpointer({str(tmp_path)!r}).save(1, {{"w": 1.0}}, {{}})\n')
  env = dict(os.environ, AIKD_JAX_SAVE_TIMEOUT_S='2')
  start = time.monotonic()
  proc = subprocess.run([sys.executable, '-c', script], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=120)
  assert time.monotonic() - start < 60
  line = one_error_line(proc, WorkdirError.exit_code)
  assert f'a checkpoint save to {tmp_path} did not finish within 2 s' in line


# -- out of space -------------------------------------------------------------------------
@contextlib.contextmanager
def _tmpfs(path, size: str):
  path.mkdir()
  if subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(path)],
                    capture_output=True).returncode:
    pytest.skip('cannot mount a tmpfs here (needs root)')
  try:
    yield path
  finally:
    subprocess.run(['umount', str(path)], check=True)


@pytest.mark.slow
def test_out_of_space_is_one_line_and_resumes_once_space_is_freed(finished, data_dirs, tmp_path):
  with _tmpfs(tmp_path / 'small', '1200k') as small:
    workdir = small / 'w'
    flags = [f'--config.superior_workdir={finished[0]}']
    line = one_error_line(cli(str(workdir), data_dirs, *flags), 5)
    assert 'no space left on the device holding' in line and 'MB' in line
    subprocess.run(['mount', '-o', 'remount,size=64m', str(small)], check=True)
    proc = cli(str(workdir), data_dirs, *flags)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = read_json(workdir / 'student' / 'results.json')
  assert comparable(res) == comparable(finished[1]['student'])


# -- internal errors ----------------------------------------------------------------------
def test_internal_error_writes_its_traceback_to_the_workdir(tmp_path, capsys):
  try:
    raise KeyError('boom')
  except KeyError:
    with pytest.raises(SystemExit) as e:
      console.fail_internal(str(tmp_path))
  assert e.value.code == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('error: internal error (KeyError')
  assert str(tmp_path / 'error.log') in err[0]
  assert 'Traceback' in (tmp_path / 'error.log').read_text()
