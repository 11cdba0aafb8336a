"""Entry point: `python -m aikd_jax.main --config=CONFIG.py[:ARG] --workdir=DIR`.

Parses flags and dispatches to `run.run`; nothing else. Bad input ends with one line on
stderr and exit status 2; SIGTERM saves a checkpoint and exits 0.
"""
import logging as py_logging
import os
import signal
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from aikd_jax import distributed
from aikd_jax.errors import DistributedError

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (ml_collections).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs, results.')
_DISTRIBUTED = flags.DEFINE_bool(
    'jax_distributed', None, 'Call jax.distributed.initialize() (multi-host). Default: on '
    'when the environment names a coordinator (SLURM with >1 task, JAX_COORDINATOR_ADDRESS).')
_COORDINATOR = flags.DEFINE_string(
    'coordinator', None, 'host:port of process 0, for clusters JAX does not detect itself.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'With --coordinator.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'With --coordinator.')
_DISTRIBUTED_TIMEOUT = flags.DEFINE_float(
    'distributed_timeout', 300, 'Seconds to wait for every process to join a multi-process '
    'run before giving up with one line (exit status 7).')


def _fail(message: str, code: int = 2):
  print(f'error: {message}', file=sys.stderr)
  sys.exit(code)


def _parse_flags(argv):
  """absl flag parsing, with config errors (e.g. an unknown key) turned into one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(str(e).splitlines()[-1] if str(e) else repr(e))
  except (AttributeError, KeyError, ValueError, TypeError, OSError) as e:
    message = ' '.join(str(e).replace('\\n', ' ').replace("'", '').split())
    _fail(f'bad --config: {message}')


def _quiet_library_logs() -> None:
  """Keeps stderr readable: drops Orbax's INFO chatter and CLU's echo of every scalar."""
  noisy = ('/orbax/', 'clu/metric_writers/logging_writer')
  logging.get_absl_handler().addFilter(
      lambda r: r.levelno >= py_logging.WARNING or not any(n in r.pathname for n in noisy))


def _wants_distributed() -> bool:
  if _DISTRIBUTED.value is not None:
    return _DISTRIBUTED.value
  if _COORDINATOR.value:
    return True
  return (int(os.environ.get('SLURM_NTASKS', '1')) > 1
          or 'JAX_COORDINATOR_ADDRESS' in os.environ)


def main(argv):
  del argv
  _quiet_library_logs()
  if _CONFIG.value is None or not _WORKDIR.value:
    _fail('both --config and --workdir are required')
  import jax  # pylint: disable=g-import-not-at-top
  if _wants_distributed():
    try:
      distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                             _DISTRIBUTED_TIMEOUT.value)
    except DistributedError as e:
      _fail(str(e), e.exit_code)
  if _CONFIG.value.fast_compile:
    jax.config.update('jax_disable_most_optimizations', True)
  from aikd_jax import run  # pylint: disable=g-import-not-at-top
  from aikd_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  from aikd_jax.train.loop import Preempted  # pylint: disable=g-import-not-at-top

  stop = []
  if jax.process_count() == 1:  # with several processes, JAX's preemption service does it
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
  workdir = os.path.abspath(_WORKDIR.value)
  config = _CONFIG.value
  try:
    with distributed.peer_loss_ends_run():
      results = run.run(config, workdir, stop_requested=lambda: bool(stop))
  except UserError as e:
    _fail(str(e), e.exit_code)
  except Preempted as e:
    logging.info('%s', e)
    print(f'stopped: {e}; run the same command again to resume', file=sys.stderr)
    return
  if jax.process_index() == 0:
    print(run.summary(results, config, workdir), flush=True)


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
