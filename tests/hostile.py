"""The row runner of the hostile-input tables (tests/test_failures_builders.py,
tests/test_failures_import_torch.py).

A row sets up its input, runs one command, and names a folder that must be left byte for
byte as it was. `run_row` does the common part; each table checks its command's error
line and anything particular to it.
"""
import contextlib
import dataclasses
import os
import subprocess
import time
from typing import Any, Callable

import pytest


def snapshot(folder) -> dict:
  """{relative path: bytes} of every file under `folder`."""
  out = {}
  for root, _, files in os.walk(folder):
    for name in files:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, folder)] = f.read()
  return out


def mount_tmpfs(tmp_path, cleanup: contextlib.ExitStack, options: str):
  """A tmpfs mounted with `options` at tmp_path/disk, unmounted by `cleanup`; skips the test
  where mounting needs root."""
  disk = tmp_path / 'disk'
  disk.mkdir()
  if subprocess.run(['mount', '-t', 'tmpfs', '-o', options, 'tmpfs', str(disk)],
                    capture_output=True).returncode:
    pytest.skip('cannot mount a tmpfs here (needs root)')
  cleanup.callback(subprocess.run, ['umount', str(disk)], check=True)
  return disk


@dataclasses.dataclass(frozen=True)
class Row:
  """One row, run: what its setup returned, and how the command ended."""
  args: tuple  # setup's values before the folder, as passed to the command
  untouched: Any  # the folder that must be left as it was
  before: dict  # its snapshot before the command
  status: int
  err: str  # the command's stderr
  seconds: float

  def after(self) -> dict:
    return snapshot(self.untouched)


@contextlib.contextmanager
def run_row(tmp_path, setup: Callable, command: Callable):
  """Sets up one row and runs its command; yields the `Row` before the row's cleanup runs
  (a tmpfs it mounted is still there to check).

  Args:
    tmp_path: the test's folder.
    setup: `setup(tmp_path, cleanup)` returns (*args, the folder to leave untouched);
      `cleanup` is an ExitStack for what it must undo (mounts, the current folder).
    command: `command(*args)` runs the command and returns (exit status, stderr).
  """
  with contextlib.ExitStack() as cleanup:
    *args, untouched = setup(tmp_path, cleanup)
    before = snapshot(untouched)
    start = time.monotonic()
    status, err = command(*args)
    yield Row(tuple(args), untouched, before, status, err, time.monotonic() - start)


def last_error_line(err: str) -> str:
  """The one `error:` line of `err`, which must come last (lines before it, such as TFDS's
  progress bars, are allowed) and no traceback."""
  lines = [l for l in err.replace('\r', '\n').splitlines() if l.strip()]
  assert [l for l in lines if 'error:' in l] == [lines[-1]], err
  assert lines[-1].lstrip().startswith('error: '), err
  assert 'Traceback' not in err, err
  return lines[-1]
