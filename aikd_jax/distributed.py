"""Multi-process start-up and peer-loss detection around `jax.distributed`.

`initialize(coordinator, num_processes, process_id, timeout_s)`:
- refuses a second process with the same --process_id on this host (a lock file) and,
  for process 0, a coordinator port that is already taken (DistributedError, one line);
- calls `jax.distributed.initialize` under a start-up watchdog: when not every process
  has joined within `timeout_s`, this process prints one line (the coordinator, the
  usual causes) and exits with DistributedError's status (7). JAX's own deadline is set
  later than ours, so its abort with a C++ stack dump is never what the user sees;
- starts a peer watchdog: each process bumps a counter in JAX's key-value store every
  `HEARTBEAT_S`; a peer whose counter stands still for `peer_timeout_s` ends this
  process with one line and exit status 7 (JAX's own heartbeat timeout is set longer,
  so JAX does not abort first). A process that exits normally marks itself done.
  `peer_loss_ends_run()` wraps the training: a collective that fails because its peer
  died waits for the watchdog's verdict instead of printing a traceback.

What cannot be caught (JAX 0.10.2): when process 0, which hosts JAX's coordination
service, dies, JAX's C++ client in every other process aborts at once (SIGABRT, exit
134, a stack dump); a duplicate --process_id on another host makes JAX abort every
process the same way. launch/README.md ("When a host dies") says so.
"""
import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import socket
import tempfile
import threading
import time

from aikd_jax import console
from aikd_jax.errors import ConfigError, DistributedError

HEARTBEAT_S = 1.0  # how often each process bumps its counter
# A peer silent this long is taken as lost (AIKD_JAX_PEER_TIMEOUT_S overrides it: tests).
PEER_TIMEOUT_S = float(os.environ.get('AIKD_JAX_PEER_TIMEOUT_S', '30'))
_JAX_GRACE_S = 60  # JAX's own deadlines are ours plus this
_KEY = 'aikd_jax/alive/'
_DONE = 'aikd_jax/done/'
_CONFIG_KEY = 'aikd_jax/config'
_DIGEST_KEY = 'aikd_jax/config_digest'
_DIFFER_KEY = 'aikd_jax/config_differs/'
_WAIT_FOR_PEERS_MS = 3600 * 1000  # peers may still be preparing; the peer watchdog bounds it
_CAUSES = ('a process not started or crashed at start-up, a --num_processes that differs '
           'between processes, a duplicate --process_id, or the coordinator port blocked '
           'by a firewall')

_lock_files = []  # open lock files: held for the life of the process
_watchdog = None  # the PeerWatchdog of this process, once started


def _exit_with(message: str) -> None:
  """Prints `error: message` and ends the process at once (from any thread)."""
  console.exit_now(message, DistributedError.exit_code)


def _claim_process_id(coordinator: str, process_id: int) -> None:
  """Raises DistributedError when another process on this host has the same id."""
  name = f'aikd_jax-{coordinator.replace(":", "_").replace("/", "_")}-{process_id}.lock'
  path = os.path.join(tempfile.gettempdir(), name)
  f = open(path, 'a')  # pylint: disable=consider-using-with (held until exit)
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    f.close()
    raise DistributedError(
        f'another process on this host already runs as --process_id={process_id} for '
        f'coordinator {coordinator}: give each process its own --process_id '
        f'(0 to --num_processes - 1)') from None
  _lock_files.append(f)


def _check_port_free(coordinator: str) -> None:
  """Process 0: raises DistributedError when the coordinator port is already in use."""
  port = coordinator.rsplit(':', 1)[1]
  if not port.isdigit():
    raise DistributedError(f'--coordinator={coordinator} needs a numeric port: HOST:PORT')
  try:
    s = socket.socket(socket.AF_INET6)  # dual stack: JAX's service binds [::]:PORT
  except OSError:
    s = socket.socket(socket.AF_INET)  # no IPv6 on this host
  with s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore TIME_WAIT leftovers
    try:
      s.bind(('', int(port)))
    except OSError as e:
      raise DistributedError(
          f'coordinator port {port} is already in use on this host ({e.strerror}): another '
          f'process 0 (a duplicate --process_id=0) or another program holds it; stop it or '
          f'pick another port in --coordinator') from None


def _startup_message(coordinator, num_processes, process_id, timeout_s) -> str:
  who = f'{num_processes} processes' if num_processes else 'the processes'
  me = f' (this is process {process_id})' if process_id is not None else ''
  return (f'not all {who} joined within {timeout_s:g} s at coordinator '
          f'{coordinator or "(from the environment)"}{me}; usual causes: {_CAUSES}. '
          'Start every process with the same command and a distinct --process_id, or raise '
          '--distributed_timeout')


def initialize(coordinator: str | None, num_processes: int | None, process_id: int | None,
               timeout_s: float, peer_timeout_s: float = PEER_TIMEOUT_S) -> None:
  """`jax.distributed.initialize` that fails with one line (see the module docstring)."""
  global _watchdog
  import jax  # pylint: disable=g-import-not-at-top
  if timeout_s <= 0:
    raise DistributedError(f'--distributed_timeout must be positive, got {timeout_s:g}')
  if coordinator and num_processes is not None and process_id is not None:
    if not 0 <= process_id < num_processes:
      raise DistributedError(f'--process_id={process_id} is outside 0..{num_processes - 1} '
                             f'(--num_processes={num_processes})')
    if ':' not in coordinator:
      raise DistributedError(f'--coordinator={coordinator} needs a port: HOST:PORT')
    _claim_process_id(coordinator, process_id)
    if process_id == 0:
      _check_port_free(coordinator)
  message = _startup_message(coordinator, num_processes, process_id, timeout_s)
  try:
    with console.deadline(timeout_s, message, DistributedError.exit_code):
      jax.distributed.initialize(
          coordinator_address=coordinator, num_processes=num_processes, process_id=process_id,
          initialization_timeout=int(timeout_s) + _JAX_GRACE_S,
          heartbeat_timeout_seconds=int(peer_timeout_s) + _JAX_GRACE_S)
  except (ValueError, TypeError, RuntimeError) as e:
    raise DistributedError(f'cannot start the multi-process run: '
                           f'{str(e).splitlines()[0] if str(e) else type(e).__name__}') from None
  if jax.process_count() > 1:
    _watchdog = PeerWatchdog(peer_timeout_s)
    _watchdog.start()


@contextlib.contextmanager
def peer_loss_ends_run():
  """Around the training: a runtime error caused by a lost peer ends with one line.

  A collective whose peer died fails at once (e.g. gloo's "Connection reset by peer"),
  before the watchdog can tell which peer is gone. On such an error this waits up to the
  watchdog's bound for its verdict (it then ends the process with its one line, exit 7)
  and re-raises the error when every peer is still alive.
  """
  try:
    yield
  except Exception as e:  # pylint: disable=broad-except
    import jax  # pylint: disable=g-import-not-at-top
    if _watchdog is not None and isinstance(e, jax.errors.JaxRuntimeError):
      _watchdog.wait_for_verdict()
    raise


def check_same_config(config: dict, ignore=frozenset(), client=None,
                      process_index: int | None = None,
                      process_count: int | None = None) -> None:
  """Raises ConfigError on every process unless all resolved the same `config`.

  Process 0 publishes its config (flattened keys, minus `ignore`) and its digest in JAX's
  key-value store; every process compares its own digest, publishes the keys that differ
  (none: ''), and reads every verdict, so all stop together with the same line instead
  of training different runs under process 0's name, or hanging at a collective.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from aikd_jax import preflight  # pylint: disable=g-import-not-at-top
  count = jax.process_count() if process_count is None else process_count
  if count <= 1:
    return
  me = jax.process_index() if process_index is None else process_index
  client = client or kv_client()
  mine = {k: v for k, v in preflight.flatten(config).items() if k not in ignore}
  text = json.dumps(mine, sort_keys=True)
  if me == 0:
    client.key_value_set(_CONFIG_KEY, text, allow_overwrite=True)
    client.key_value_set(_DIGEST_KEY, _digest(text), allow_overwrite=True)
    differ = []
  elif client.blocking_key_value_get(_DIGEST_KEY, _WAIT_FOR_PEERS_MS) == _digest(text):
    differ = []
  else:
    theirs = json.loads(client.blocking_key_value_get(_CONFIG_KEY, _WAIT_FOR_PEERS_MS))
    differ = [f'{k} {theirs.get(k)!r} vs {mine.get(k)!r}'
              for k in preflight.differing_keys(theirs, mine)]
  client.key_value_set(f'{_DIFFER_KEY}{me}', '; '.join(differ), allow_overwrite=True)
  verdicts = {p: client.blocking_key_value_get(f'{_DIFFER_KEY}{p}', _WAIT_FOR_PEERS_MS)
              for p in range(count)}
  bad = {p: v for p, v in verdicts.items() if v}
  if bad:
    first = min(bad)
    raise ConfigError(
        f'the {count} processes of this run were given different configs: process(es) '
        f'{", ".join(map(str, sorted(bad)))} differ from process 0; process {first} in '
        f'{bad[first]} (process 0\'s value vs its own). Start every process with the same '
        '--config file and flags')


def _digest(text: str) -> str:
  return hashlib.sha256(text.encode()).hexdigest()


def kv_client():
  """JAX's key-value store client of this process (after jax.distributed.initialize).

  The one private JAX use of the package, kept here: JAX 0.10 exposes the coordination
  service's key-value store only as `jax._src.distributed.global_state.client` (the
  public `jax.distributed` has initialize/shutdown only; Orbax and
  jax.experimental.multihost_utils reach it the same way, privately).
  """
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
  return jax_distributed.global_state.client


class PeerWatchdog:
  """A daemon thread that ends this process with one line when a peer goes silent."""

  def __init__(self, peer_timeout_s: float, client=None, process_id: int | None = None,
               num_processes: int | None = None):
    import jax  # pylint: disable=g-import-not-at-top
    self._timeout = peer_timeout_s
    self._client = client or kv_client()
    self._me = jax.process_index() if process_id is None else process_id
    self._n = jax.process_count() if num_processes is None else num_processes
    self._stop = threading.Event()
    self._count = 0
    now = time.monotonic()
    self._seen = {p: (None, now) for p in range(self._n) if p != self._me}

  def start(self) -> None:
    self._beat()
    atexit.register(self.stop)  # runs before JAX's own atexit shutdown (registered earlier)
    threading.Thread(target=self._run, name='aikd-peer-watchdog', daemon=True).start()

  def stop(self) -> None:
    """Marks this process done (a normal exit) and stops watching."""
    self._stop.set()
    try:
      self._client.key_value_set(f'{_DONE}{self._me}', '1', allow_overwrite=True)
    except Exception:  # pylint: disable=broad-except (the service may be gone already)
      pass

  def wait_for_verdict(self) -> None:
    """Returns after the peer timeout unless the watchdog ends the process first."""
    time.sleep(self._timeout + 3 * HEARTBEAT_S)

  def _beat(self) -> None:
    self._count += 1
    self._client.key_value_set(f'{_KEY}{self._me}', str(self._count), allow_overwrite=True)

  def _run(self) -> None:
    last_ok = time.monotonic()
    while not self._stop.wait(HEARTBEAT_S):
      try:
        self._beat()
        values = dict(self._client.key_value_dir_get(_KEY))
        done = dict(self._client.key_value_dir_get(_DONE))
        last_ok = time.monotonic()
      except Exception:  # pylint: disable=broad-except (the coordinator is unreachable)
        if self._stop.is_set():
          return
        if time.monotonic() - last_ok > self._timeout:
          _exit_with(self._coordinator_lost_message())
        continue
      lost = self.check(values, done, time.monotonic())
      if lost is not None and not self._stop.is_set():
        _exit_with(self._peer_lost_message(lost))

  def check(self, values: dict, done: dict, now: float) -> int | None:
    """Updates what was seen; returns a peer silent for longer than the timeout, or None."""
    for peer in list(self._seen):
      if f'{_DONE}{peer}' in done:
        del self._seen[peer]  # finished normally
        continue
      value = values.get(f'{_KEY}{peer}')
      old, since = self._seen[peer]
      if value != old:
        self._seen[peer] = (value, now)
      elif now - since > self._timeout:
        return peer
    return None

  def _peer_lost_message(self, peer: int) -> str:
    return (f'process {peer} of {self._n} stopped responding for {self._timeout:g} s '
            f'(killed, crashed, or its host lost); process {self._me} stops too. Run the '
            'same command on every host again: it resumes from the last checkpoint')

  def _coordinator_lost_message(self) -> str:
    return (f'lost contact with the coordinator (process 0) for {self._timeout:g} s; '
            f'process {self._me} stops too. Run the same command on every host again: it '
            'resumes from the last checkpoint')
