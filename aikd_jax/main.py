"""Entry point: `python -m aikd_jax.main --config=CONFIG.py[:ARG] --workdir=DIR`.

Parses flags and dispatches to `run.run`; nothing else. Every failure a user can fix ends
with one `error:` line on stderr and its exit status (docs/errors.md); an internal
error writes its traceback to WORKDIR/error.log and names it. SIGTERM and the first
Ctrl-C save a checkpoint and exit 0; a second Ctrl-C exits at once (status 130).
"""
import os
import sys

from absl import flags, logging
from ml_collections import config_flags

from aikd_jax import cli, console, distributed, paths, shared_workdir
from aikd_jax.errors import ConfigError, DistributedError, OutOfSpaceError, UserError
from aikd_jax.errors import is_out_of_space


def _define_flags(values: flags.FlagValues) -> None:
  config_flags.DEFINE_config_file('config', None, 'Config file (ml_collections).',
                                  flag_values=values, lock_config=True)
  define = lambda kind, name, default, text: kind(name, default, text, flag_values=values)
  define(flags.DEFINE_string, 'workdir', None, 'Directory for checkpoints, logs, results.')
  define(flags.DEFINE_bool, 'verbose', False, 'Also show library INFO lines on stderr '
         '(they always go to WORKDIR/log.txt).')
  define(flags.DEFINE_bool, 'jax_distributed', None, 'Call jax.distributed.initialize() '
         '(multi-host). Default: on when the environment names a coordinator (SLURM with '
         '>1 task, JAX_COORDINATOR_ADDRESS).')
  define(flags.DEFINE_string, 'coordinator', None,
         'host:port of process 0, for clusters JAX does not detect itself.')
  define(flags.DEFINE_integer, 'num_processes', None, 'With --coordinator.')
  define(flags.DEFINE_integer, 'process_id', None, 'With --coordinator.')
  define(flags.DEFINE_float, 'workdir_timeout', shared_workdir.TIMEOUT_S, 'Multi-process '
         'runs: seconds every process gets to read back a token process 0 wrote to the '
         'workdir (which must be shared).')
  define(flags.DEFINE_float, 'distributed_timeout', 300, 'Seconds to wait for every '
         'process to join a multi-process run before giving up with one line (exit status 7).')


def _wants_distributed(values: flags.FlagValues) -> bool:
  if values.jax_distributed is not None:
    return values.jax_distributed
  if values.coordinator:
    return True
  return (int(os.environ.get('SLURM_NTASKS', '1')) > 1
          or 'JAX_COORDINATOR_ADDRESS' in os.environ)


def _workdir(args: cli.Args) -> str:
  if not args.flags.workdir:
    return console.LOCAL_LOG_ROOT
  return paths.absolute(args.flags.workdir)  # gs://... stays as it is


def _main(args: cli.Args) -> None:
  values = args.flags
  raw_config = console.config_value(values['config'])
  if raw_config is None or not values.workdir:
    console.fail('both --config and --workdir are required', ConfigError.exit_code)
  workdir = _workdir(args)
  import jax  # pylint: disable=g-import-not-at-top
  if raw_config.fast_compile:
    jax.config.update('jax_disable_most_optimizations', True)
  # Before joining: once joined, JAX's C++ client may abort the process (a peer gone, a
  # duplicate --process_id) and its reason must not go to the hidden stderr.
  with console.native_stderr_hidden(values.verbose):
    console.hide_gpus_from_tf()
    from aikd_jax import run as run_lib  # pylint: disable=g-import-not-at-top
    from aikd_jax.train.loop import Preempted  # pylint: disable=g-import-not-at-top
  if _wants_distributed(values):
    try:
      distributed.initialize(values.coordinator, values.num_processes, values.process_id,
                             values.distributed_timeout)
    except DistributedError as e:
      console.fail(str(e), e.exit_code)

  stop = args.stop
  if jax.process_count() == 1:  # with several processes, JAX's preemption service does it
    console.install_stop_handlers(stop, 'stopping: saving a checkpoint at the next step')
  try:
    with distributed.peer_loss_ends_run():
      results = run_lib.run(raw_config, workdir, stop_requested=lambda: bool(stop),
                            shared_timeout_s=values.workdir_timeout)
  except Preempted as e:
    logging.info('%s', e)
    print(f'stopped: {e}; run the same command again to resume', file=sys.stderr)
    return
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    if is_out_of_space(e):  # e.g. config.json or the log, before a phase's own check
      raise OutOfSpaceError(f'no space left on the device holding {workdir}; free space and '
                            'run the same command again') from None
    raise
  if jax.process_index() == 0:
    print(run_lib.summary(results, raw_config, workdir), flush=True)


# Stop handlers are installed by _main: only for a single process, once JAX is up.
COMMAND = cli.Command('aikd_jax.main', __doc__, _define_flags, _main, log_dir=_workdir)


def run() -> None:
  """The `python -m aikd_jax.main` process."""
  cli.run(COMMAND)


if __name__ == '__main__':
  run()
