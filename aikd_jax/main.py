"""Entry point: `python -m aikd_jax.main --config=CONFIG.py[:ARG] --workdir=DIR`.

Parses flags and dispatches to `run.run`; nothing else. Every failure a user can fix ends
with one `error:` line on stderr and its exit status (docs/errors.md); an internal
error writes its traceback to WORKDIR/error.log and names it. SIGTERM and the first
Ctrl-C save a checkpoint and exit 0; a second Ctrl-C exits at once (status 130).
"""
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from aikd_jax import console, distributed, paths, shared_workdir
from aikd_jax.errors import ConfigError, DistributedError, OutOfSpaceError, UserError
from aikd_jax.errors import is_out_of_space

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (ml_collections).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs, results.')
_VERBOSE = flags.DEFINE_bool('verbose', False, 'Also show library INFO lines on stderr '
                             '(they always go to WORKDIR/log.txt).')
_DISTRIBUTED = flags.DEFINE_bool(
    'jax_distributed', None, 'Call jax.distributed.initialize() (multi-host). Default: on '
    'when the environment names a coordinator (SLURM with >1 task, JAX_COORDINATOR_ADDRESS).')
_COORDINATOR = flags.DEFINE_string(
    'coordinator', None, 'host:port of process 0, for clusters JAX does not detect itself.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'With --coordinator.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'With --coordinator.')
_WORKDIR_TIMEOUT = flags.DEFINE_float(
    'workdir_timeout', shared_workdir.TIMEOUT_S, 'Multi-process runs: seconds every process '
    'gets to read back a token process 0 wrote to the workdir (which must be shared).')
_DISTRIBUTED_TIMEOUT = flags.DEFINE_float(
    'distributed_timeout', 300, 'Seconds to wait for every process to join a multi-process '
    'run before giving up with one line (exit status 7).')


def _wants_distributed() -> bool:
  if _DISTRIBUTED.value is not None:
    return _DISTRIBUTED.value
  if _COORDINATOR.value:
    return True
  return (int(os.environ.get('SLURM_NTASKS', '1')) > 1
          or 'JAX_COORDINATOR_ADDRESS' in os.environ)


def main(argv):
  console.reject_positional(argv)
  console.quiet_libraries(verbose=_VERBOSE.value)
  raw_config = console.config_value(_CONFIG)
  if raw_config is None or not _WORKDIR.value:
    console.fail('both --config and --workdir are required', ConfigError.exit_code)
  workdir = paths.absolute(_WORKDIR.value)  # gs://... stays as it is
  import jax  # pylint: disable=g-import-not-at-top
  if raw_config.fast_compile:
    jax.config.update('jax_disable_most_optimizations', True)
  # Before joining: once joined, JAX's C++ client may abort the process (a peer gone, a
  # duplicate --process_id) and its reason must not go to the hidden stderr.
  with console.native_stderr_hidden(_VERBOSE.value):
    console.hide_gpus_from_tf()
    from aikd_jax import run  # pylint: disable=g-import-not-at-top
    from aikd_jax.train.loop import Preempted  # pylint: disable=g-import-not-at-top
  if _wants_distributed():
    try:
      distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                             _DISTRIBUTED_TIMEOUT.value)
    except DistributedError as e:
      console.fail(str(e), e.exit_code)

  stop = []
  if jax.process_count() == 1:  # with several processes, JAX's preemption service does it
    console.install_stop_handlers(stop, 'stopping: saving a checkpoint at the next step')
  try:
    with distributed.peer_loss_ends_run():
      results = run.run(raw_config, workdir, stop_requested=lambda: bool(stop),
                        shared_timeout_s=_WORKDIR_TIMEOUT.value)
  except UserError as e:
    console.fail(str(e), e.exit_code)
  except Preempted as e:
    logging.info('%s', e)
    print(f'stopped: {e}; run the same command again to resume', file=sys.stderr)
    return
  except Exception as e:  # pylint: disable=broad-except
    if is_out_of_space(e):  # e.g. config.json or the log, before a phase's own check
      console.fail(f'no space left on the device holding {workdir}; free space and run the '
                   'same command again', OutOfSpaceError.exit_code)
    console.fail_internal(workdir)
  if jax.process_index() == 0:
    print(run.summary(results, raw_config, workdir), flush=True)


def cli() -> None:
  """The `aikd-train` command (`python -m aikd_jax.main`): flags from sys.argv."""
  console.like_python_m(__name__)
  try:
    app.run(main, flags_parser=console.parse_flags)
  except SystemExit as e:
    console.exit_after_failure(e.code)
    raise


if __name__ == '__main__':
  cli()
