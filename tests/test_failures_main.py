"""Hostile input to `python -m aikd_jax.main`: one `error:` line, its exit status, nothing touched.

Each row is (name, setup, exit status, text of the error line). `setup(tmp_path, data_dirs,
cleanup)` returns (the arguments after `-m aikd_jax.main`, the folder that must be left
exactly as it was: unchanged if it existed, still absent if it did not).
"""
import contextlib
import os
import subprocess
import sys

import pytest

from tests.runs import ROOT, cli_command
from tests.test_failures import listing, one_error_line


def _smoke(tmp_path, data_dirs, *flags, workdir=None):
  workdir = str(workdir or tmp_path / 'w')
  return cli_command(workdir, data_dirs, *flags)[0][3:], workdir


def _config_file(tmp_path, body: str):
  path = tmp_path / 'bad_config.py'
  path.write_text(body)
  return [f'--config={path}', f'--workdir={tmp_path / "w"}'], str(tmp_path / 'w')


def _workdir_with_config_json(tmp_path, data_dirs, text: str):
  workdir = tmp_path / 'w'
  workdir.mkdir()
  (workdir / 'config.json').write_text(text)
  return _smoke(tmp_path, data_dirs, workdir=workdir)


def _below_a_file(tmp_path, data_dirs, cleanup):
  del cleanup
  (tmp_path / 'f').mkdir()
  (tmp_path / 'f' / 'file').write_text('x')
  args, _ = _smoke(tmp_path, data_dirs, workdir=tmp_path / 'f' / 'file' / 'w')
  return args, str(tmp_path / 'f')


def _mounted(tmp_path, cleanup, size: str):
  """A tmpfs of `size` at tmp_path/small (a full disk), unmounted by `cleanup`."""
  small = tmp_path / 'small'
  small.mkdir()
  if subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(small)],
                    capture_output=True).returncode:
    pytest.skip('cannot mount a tmpfs here (needs root)')
  cleanup.callback(subprocess.run, ['umount', str(small)], check=True)
  return small


def _full_at_phase_start(tmp_path, data_dirs, cleanup):
  """Room for config.json but not for the phase's first files (TensorBoard, checkpoints)."""
  small = _mounted(tmp_path, cleanup, '8k')
  args, _ = _smoke(tmp_path, data_dirs, '--config.method=baseline', workdir=small / 'w')
  return args, data_dirs['manual_dir']


def _full_before_config(tmp_path, data_dirs, cleanup):
  small = _mounted(tmp_path, cleanup, '4k')
  (small / 'filler').write_bytes(b'x' * 4096)
  args, _ = _smoke(tmp_path, data_dirs, workdir=small / 'w')
  return args, str(small)  # no file left behind (not even an empty .lock)


# TensorFlow's C++ event writer prints its own failure to file descriptor 2 before our line.
_TF_WRITES_TO_FD_2 = {'disk_full_when_the_phase_starts'}
CASES = [
    ('positional_config_key', lambda t, d, c: _smoke(t, d, 'config.method=pskd'), 2,
     "unexpected argument 'config.method=pskd': every option is a flag"),
    ('unquoted_workdir_with_a_space', lambda t, d, c: _smoke(t, d, 'run'), 2,
     "unexpected argument 'run'"),
    ('get_config_raises', lambda t, d, c: _config_file(
        t, 'def get_config():\n  raise RuntimeError("no GPU here")\n'), 2,
     'bad_config.py line 2: RuntimeError: no GPU here'),
    ('get_config_divides_by_zero', lambda t, d, c: _config_file(
        t, 'def get_config():\n  return 1 / 0\n'), 2, 'line 2: ZeroDivisionError'),
    ('get_config_typo', lambda t, d, c: _config_file(
        t, 'def get_config():\n  return confg\n'), 2, "NameError: name 'confg' is not defined"),
    ('get_config_returns_no_config', lambda t, d, c: _config_file(
        t, 'def get_config():\n  return 5\n'), 2, 'get_config must return a ConfigDict, got int'),
    ('config_is_a_folder', lambda t, d, c: ([f'--config={t}', f'--workdir={t / "w"}'],
                                            str(t / 'w')), 2, 'Is a directory'),
    ('workdir_below_a_file', _below_a_file, 4, 'is a file, not a folder'),
    ('config_json_is_a_list', lambda t, d, c: _workdir_with_config_json(t, d, '[1, 2]'), 4,
     "config.json is damaged (the run's config is JSON but a list, not an object)"),
    ('config_json_is_null', lambda t, d, c: _workdir_with_config_json(t, d, 'null'), 4,
     'is JSON but a NoneType, not an object'),
    ('workdir_not_utf8', lambda t, d, c: _smoke(
        t, d, workdir=os.fsdecode(os.fsencode(str(t)) + b'/w\xff')), 4,
     r'w\xff is not valid UTF-8 text; rename it'),
    ('disk_full_when_the_phase_starts', _full_at_phase_start, 5,
     'no space left on the device holding'),
    ('disk_full_before_config_json', _full_before_config, 5,
     'no space left on the device holding'),
]


@pytest.mark.parametrize('name,setup,code,says', CASES, ids=[c[0] for c in CASES])
def test_hostile_input_is_one_line(tmp_path, data_dirs, name, setup, code, says):
  with contextlib.ExitStack() as cleanup:
    args, untouched = setup(tmp_path, data_dirs, cleanup)
    before = listing(untouched) if os.path.exists(untouched) else None
    env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1')
    proc = subprocess.run([sys.executable, '-m', 'aikd_jax.main', *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, errors='backslashreplace',
                          timeout=600)
    if name in _TF_WRITES_TO_FD_2:
      lines = [l for l in proc.stderr.splitlines() if l.strip()]
      assert proc.returncode == code and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
      assert [l for l in lines if l.startswith('error:')] == [lines[-1]] and says in lines[-1]
    else:
      assert says in one_error_line(proc, code)
    if before is None:
      assert not os.path.exists(untouched)
    else:
      assert listing(untouched) == before
