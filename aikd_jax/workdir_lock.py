"""One run per workdir: `WORKDIR/.lock`, held by process 0 of the run that trains there.

The lock file holds the holder's host, pid and start time, and the holder touches it
every `HEARTBEAT_S` seconds. A second run stops at once with a line naming the holder.
A lock is stale, and is taken over, when its holder is a dead process on this host, or
its heartbeat is older than `STALE_S` (a killed run on another host). Taking over renames
the stale file first, which only one contender can do, then creates a fresh one with
O_EXCL, so two runs never both take it.

Written by hand: Orbax, CLU and TFDS offer no workdir lock, and `fcntl` locks do not
hold across the hosts of a shared file system.

On an object store (gs://...) there is no O_EXCL create, no pid to probe and epath
offers no generation-match create, so no lock is taken: a warning says so, and
protection against a second writer rests on running one job per workdir (docs/operations.md,
"GPU and TPU").
"""
import contextlib
import json
import os
import socket
import threading
import time

from absl import logging

from aikd_jax import paths
from aikd_jax.errors import WorkdirError

LOCK = '.lock'
HEARTBEAT_S = 60.0
STALE_S = 600.0


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _read(path: str) -> dict:
  try:
    with open(path) as f:
      holder = json.load(f)
  except (OSError, ValueError):
    return {}  # gone, unreadable or half-written: judged by its age alone
  return holder if isinstance(holder, dict) else {}


def _is_stale(path: str, holder: dict) -> bool:
  if holder.get('host') == socket.gethostname() and isinstance(holder.get('pid'), int):
    return not _alive(holder['pid'])
  try:
    return time.time() - os.path.getmtime(path) > STALE_S
  except FileNotFoundError:
    return True


def _describe(holder: dict) -> str:
  if not holder:
    return 'another run (its lock file is unreadable)'
  return (f'pid {holder.get("pid")} on {holder.get("host")}, started '
          f'{time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))}')


def _create(path: str) -> bool:
  """Creates the lock file with our identity; False if it exists."""
  try:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  except FileExistsError:
    return False
  try:
    with os.fdopen(fd, 'w') as f:
      json.dump({'host': socket.gethostname(), 'pid': os.getpid(), 'started': time.time()}, f)
  except OSError:  # a full disk: an empty lock would lock out the rerun for STALE_S
    os.remove(path)
    raise
  return True


class LockedError(WorkdirError):
  """The workdir is held by a live run."""


def holder(workdir: str) -> dict | None:
  """Who holds WORKDIR/.lock ({host, pid, started}, {} if unreadable), or None when no
  live run holds it. Reads only."""
  path = os.path.join(workdir, LOCK)
  if not os.path.exists(path):
    return None
  found = _read(path)
  return None if _is_stale(path, found) else found


def _locked(workdir: str, current: dict) -> LockedError:
  return LockedError(f'workdir {workdir} is in use by {_describe(current)}; wait for it, '
                     'stop it, or use another --workdir')


def check_free(workdir: str) -> None:
  """Raises LockedError, naming the holder, when a live run holds WORKDIR's lock."""
  current = holder(workdir)
  if current is not None:
    raise _locked(workdir, current)


def acquire(workdir: str) -> str:
  """Takes WORKDIR/.lock (creating WORKDIR); raises WorkdirError if a live run holds it."""
  path = os.path.join(workdir, LOCK)
  os.makedirs(workdir, exist_ok=True)
  for _ in range(3):
    if _create(path):
      return path
    try:
      inode = os.stat(path).st_ino
    except FileNotFoundError:
      continue  # released meanwhile
    current = _read(path)
    if not _is_stale(path, current):
      raise _locked(workdir, current)
    aside = f'{path}.stale.{os.getpid()}'
    with contextlib.suppress(FileNotFoundError):
      if os.stat(path).st_ino == inode:  # still the stale file, not a winner's fresh one
        os.replace(path, aside)
        os.remove(aside)
  raise WorkdirError(f'could not take the lock {path}: other runs keep starting there')


@contextlib.contextmanager
def held(workdir: str, enabled: bool = True):
  """Holds the workdir's lock (if `enabled`: process 0) for the body, with a heartbeat."""
  if not enabled:
    yield
    return
  if paths.is_remote(workdir):
    logging.warning('workdir %s is on an object store, where runs cannot be locked out: '
                    'start one run per workdir', workdir)
    yield
    return
  path = acquire(workdir)
  stop = threading.Event()

  def heartbeat():
    while not stop.wait(HEARTBEAT_S):
      with contextlib.suppress(OSError):
        os.utime(path)
  thread = threading.Thread(target=heartbeat, daemon=True, name='workdir-lock')
  thread.start()
  try:
    yield
  finally:
    stop.set()
    with contextlib.suppress(OSError):
      os.remove(path)
