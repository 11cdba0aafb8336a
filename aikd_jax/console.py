"""What the user sees: one `error:` line per failure, library chatter kept off stderr.

stderr carries our progress lines, warnings and, last, the one error line. Library INFO and WARNING
lines (Orbax, TFDS, CLU's scalar echo, XLA) go only to WORKDIR/log.txt unless --verbose.
With a workdir on an object store (gs://), which cannot append to a file, the log and
error.log are written locally instead, under `LOCAL_LOG_ROOT` (a line says where).
"""
import contextlib
import datetime
import logging as py_logging
import os
import signal
import sys
import tempfile
import threading
import traceback

from absl import flags, logging

from aikd_jax import paths
from aikd_jax.errors import INTERNAL_ERROR, ConfigError

LOG_FILE = 'log.txt'
ERROR_LOG = 'error.log'
LOCAL_LOG_ROOT = os.path.join(tempfile.gettempdir(), 'aikd_jax_logs')
# INFO lines from these paths stay on stderr: our own, and CLU's progress/ETA reports.
_SHOWN = ('/aikd_jax/', 'clu/periodic_actions')
_EXITING = threading.Lock()


def one_line(text: str) -> str:
  return ' '.join(str(text).replace('\\n', ' ').split())


def duration(seconds: float) -> str:
  """'1:02:03' (h:mm:ss), for progress lines and ETAs."""
  return str(datetime.timedelta(seconds=round(seconds)))


def user_stderr():
  """The user's stderr, also from a thread other than the main one (see quiet_libraries)."""
  return getattr(sys.stderr, 'user_stream', sys.stderr)


def fail(message: str, code: int):
  """Prints `error: message` as the last line on stderr and exits with `code`."""
  sys.stdout.flush()
  print(f'error: {one_line(message)}', file=user_stderr(), flush=True)
  sys.exit(code)


def exit_now(message: str, code: int) -> None:
  """Prints `error: message` and ends the process at once, from any thread, skipping
  cleanup that could hang (a save stuck on unreachable storage)."""
  with _EXITING:  # one line, even when two threads get here together
    stderr = user_stderr()
    stderr.write(f'error: {one_line(message)}\n')
    stderr.flush()
    os._exit(code)  # pylint: disable=protected-access


@contextlib.contextmanager
def deadline(seconds: float, message: str, code: int):
  """Ends the process with `exit_now(message, code)` if the body runs longer than `seconds`."""
  timer = threading.Timer(seconds, exit_now, [message, code])
  timer.daemon = True
  timer.start()
  try:
    yield
  finally:
    timer.cancel()


def exit_after_failure(code) -> None:
  """Ends the process at once after a failure (non-zero `code`), else returns.

  Library threads (Orbax's async writers, asyncio loops) can print tracebacks while the
  interpreter shuts down after an error; our `error:` line must stay the last line.
  """
  jax = sys.modules.get('jax')
  # (is_initialized, not process_count: that would start JAX's backends just to exit)
  if jax is not None and jax.distributed.is_initialized():
    return  # process 0 hosts JAX's coordination service: its peers need a clean shutdown
  if isinstance(code, int) and code != 0:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # pylint: disable=protected-access


def local_log_dir(workdir: str) -> str:
  """Where the logs of a workdir on an object store go: LOCAL_LOG_ROOT/<bucket_path>."""
  name = ''.join(c if c.isalnum() or c in '-_.' else '_' for c in os.fspath(workdir))
  return os.path.join(LOCAL_LOG_ROOT, name.strip('_'))


def _log_dir(workdir: str) -> str:
  return local_log_dir(workdir) if paths.is_remote(workdir) else os.fspath(workdir)


def fail_internal(workdir: str):
  """An unexpected error: its traceback goes to WORKDIR/error.log, one line to stderr.

  For a workdir on an object store, error.log goes to `local_log_dir(workdir)`.
  """
  exc = sys.exc_info()[1]
  text = traceback.format_exc()
  directory = _log_dir(workdir)
  if directory != os.fspath(workdir):
    os.makedirs(directory, exist_ok=True)
  if os.path.isdir(directory) and os.access(directory, os.W_OK):
    path = os.path.join(directory, ERROR_LOG)
    with open(path, 'a') as f:
      f.write(text)
  else:
    fd, path = tempfile.mkstemp(prefix='aikd_jax_error_', suffix='.log')
    with os.fdopen(fd, 'w') as f:
      f.write(text)
  fail(f'internal error ({type(exc).__name__}: {str(exc)[:200]}); the traceback is in {path}. '
       'Please report it with that file', INTERNAL_ERROR)


def reject_positional(argv) -> None:
  """Fails (exit 2) on words after the program name that are not flags.

  absl hands them to main, which would otherwise ignore them: `config.method=pskd`
  without its `--`, or the second word of an unquoted path with a space.
  """
  extra = list(argv[1:])
  if extra:
    fail(f'unexpected argument {extra[0]!r}: every option is a flag (--help lists them); '
         'quote a path that has spaces', ConfigError.exit_code)


def _where_raised(error: BaseException) -> str:
  """'FILE line N: ' of the innermost frame outside the installed libraries, else ''."""
  ours = os.path.dirname(os.path.abspath(__file__))
  frames = [f for f in traceback.extract_tb(error.__traceback__)
            if 'site-packages' not in f.filename and not f.filename.startswith(('<', ours))]
  return f'{frames[-1].filename} line {frames[-1].lineno}: ' if frames else ''


def _bad_config(error: BaseException):
  lines = [l.strip() for l in str(error).splitlines() if l.strip()]
  text = lines[-1] if lines else ''
  fail(f'--config failed to load: {_where_raised(error)}{type(error).__name__}'
       f'{": " + text if text else ""}', ConfigError.exit_code)


def parse_flags(argv, flag_values=flags.FLAGS, known_only=False):
  """absl flag parsing; a bad flag or config file (missing, syntax error, a get_config
  that raises anything) is one line."""
  try:
    return flag_values(argv, known_only=known_only)
  except flags.Error as e:
    lines = [l for l in str(e).splitlines() if l.strip()]
    fail(f'bad flag: {lines[-1] if lines else repr(e)}', ConfigError.exit_code)
  except SyntaxError as e:
    fail(f'--config {e.filename} line {e.lineno}: {e.msg}', ConfigError.exit_code)
  except Exception as e:  # pylint: disable=broad-except  (the user's get_config runs here)
    _bad_config(e)


def config_value(holder):
  """The loaded `--config`; config_flags reports a file that failed to load only now."""
  try:
    value = holder.value
    if hasattr(value, 'get'):
      value.get('seed')  # touches the lazily failing object
  except Exception as e:  # pylint: disable=broad-except
    _bad_config(e)
  if value is not None and not hasattr(value, 'get'):
    fail(f'--config: get_config must return a ConfigDict, got {type(value).__name__}',
         ConfigError.exit_code)
  return value


def quiet_libraries(verbose: bool) -> None:
  """Keeps library log lines (and TF's C++ logs) off stderr unless `verbose`.

  They still reach WORKDIR/log.txt; what matters to the user is our own `error:` line.
  """
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  if verbose:
    return
  py_logging.raiseExceptions = False  # a full disk must not print logging's own tracebacks
  logging.get_absl_handler().addFilter(
      lambda r: not getattr(r, 'library', False) and any(s in r.pathname for s in _SHOWN))
  sys.stderr = _OtherThreadsToLog(sys.stderr)


def hide_gpus_from_tf() -> None:
  """Makes TensorFlow (the input pipeline, TFDS) CPU-only: JAX owns the accelerators.

  A command's start-up calls it before TF runs anything; TF's devices are fixed after that.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top (commands without TF skip it)
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError as e:  # TF already initialised its devices
    logging.warning('Could not hide GPUs from TensorFlow: %s', e)


def log_to_workdir(workdir: str, process_index: int) -> None:
  """Every log line (library INFO included) also goes to WORKDIR/log.txt (log.K.txt).

  An object store cannot append, so for gs://... the file is `local_log_dir(workdir)`/
  log.txt on this host, and a line on stderr says so.
  """
  name = LOG_FILE if process_index == 0 else f'log.{process_index}.txt'
  directory = _log_dir(workdir)
  if directory != os.fspath(workdir):
    os.makedirs(directory, exist_ok=True)
    logging.info('the workdir %s is an object store: this host\'s log is %s', workdir,
                 os.path.join(directory, name))
  handler = py_logging.FileHandler(os.path.join(directory, name))
  handler.setFormatter(py_logging.Formatter('%(asctime)s %(levelname)s %(name)s: %(message)s'))
  py_logging.getLogger().addHandler(handler)


@contextlib.contextmanager
def native_stderr_hidden(verbose: bool):
  """Hides what C++ libraries print on file descriptor 2 (TF's start-up banner) in the body.

  TF logs before absl's C++ logging is initialised, which no environment variable turns
  off. What was hidden is shown after all if the body fails.
  """
  if verbose:
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as hidden:
    os.dup2(hidden.fileno(), 2)
    try:
      yield
    except BaseException:
      os.dup2(saved, 2)
      hidden.seek(0)
      sys.stderr.write(hidden.read().decode(errors='replace'))
      raise
    finally:
      os.dup2(saved, 2)
      os.close(saved)


INTERRUPTED_AGAIN = 'interrupted again: stopped without saving'


def install_stop_handlers(stop: list, stopping_message: str) -> None:
  """SIGTERM and the first Ctrl-C append to `stop` (the caller saves and stops); a second
  Ctrl-C exits at once with status 130, also while a save is stuck.

  Python runs signal handlers in the main thread between bytecodes, so a main thread
  blocked inside a C++ call (a save to unreachable storage) would never see the second
  Ctrl-C: a thread also watches the signal wake-up fd, which the C-level handler writes.
  """
  def on_signal(signum, frame):
    del frame
    if signum == signal.SIGINT and stop:
      exit_now(INTERRUPTED_AGAIN, 130)  # no cleanup: it may be what is stuck
    stop.append(signum)
    if signum == signal.SIGINT:
      print(f'{stopping_message} (Ctrl-C again to quit now)', file=sys.stderr, flush=True)
  signal.signal(signal.SIGTERM, on_signal)
  signal.signal(signal.SIGINT, on_signal)
  read_end, write_end = os.pipe()
  os.set_blocking(write_end, False)
  signal.set_wakeup_fd(write_end)

  def watch():
    interrupts = 0
    while True:
      interrupts += os.read(read_end, 64).count(signal.SIGINT)
      if interrupts >= 2:
        exit_now(INTERRUPTED_AGAIN, 130)
  threading.Thread(target=watch, name='second-ctrl-c', daemon=True).start()



class _OtherThreadsToLog:
  """sys.stderr for the user: the main thread's text passes; other threads' goes to the log.

  TensorStore's C++ threads print Python tracebacks (callbacks into Orbax's closed asyncio
  loop after a failed save) straight to sys.stderr, past logging and sys.excepthook; they
  would bury the one `error:` line. They are kept, whole lines at a time, in log.txt.
  """

  def __init__(self, stream):
    self._stream = self.user_stream = stream
    self._pending = threading.local()

  def write(self, text: str) -> int:
    if threading.current_thread() is threading.main_thread():
      return self._stream.write(text)
    pending = getattr(self._pending, 'text', '') + text
    *lines, self._pending.text = pending.split('\n')
    for line in lines:
      py_logging.getLogger('aikd_jax.library').warning('%s', line, extra={'library': True})
    return len(text)

  def flush(self) -> None:
    self._stream.flush()

  def __getattr__(self, name):
    return getattr(self._stream, name)
