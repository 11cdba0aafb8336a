"""The one start-up of the five commands (main, sweep, report, data.builders, tools.import_torch).

A command is a `Command`: its absl flags (spelt with underscores; an old hyphenated spelling
stays as an alias), the positional words it takes, and its body. `main(command, argv)`
parses, runs the body and turns a failure into one `error:` line and its exit status
(docs/errors.md): a `UserError` by its kind, anything else as an internal error whose
traceback goes to a log file (exit 1). It returns the status, so tests call it in-process.
`run(command)` is the process entry point: absl's app, library logs kept off stderr, the stop
handlers where the command has them, and an exit after a failure that nothing prints past.

Each parse defines the command's flags on a fresh FlagValues, never on absl's global FLAGS
at import: the commands' modules import side by side and a second parse starts from the
defaults. absl's own flags (--flagfile, logging's --v) stay on the global FLAGS.
"""
from collections.abc import Callable
import dataclasses
import os
import sys
import types

from absl import app, flags

from aikd_jax import console
from aikd_jax.errors import ConfigError, UserError

_HELP = ('-h', '--help', '--helpshort', '--helpfull')


@dataclasses.dataclass(frozen=True)
class Args:
  """What the body gets: the parsed flags (`args.flags.out`), the positional words and the
  stop requests (signals, appended by the stop handlers under `run`)."""
  flags: flags.FlagValues
  words: list
  stop: list

  def options(self, *names: str) -> types.SimpleNamespace:
    """The values of the flags `names`, as attributes."""
    return types.SimpleNamespace(**{name: self.flags[name].value for name in names})


@dataclasses.dataclass(frozen=True)
class Command:
  """One command line: `python -m {prog} ...`."""
  prog: str
  doc: str  # the module's docstring, printed by --help above the flags
  define_flags: Callable[[flags.FlagValues], None]
  body: Callable[[Args], int | None]  # returns the exit status (None: 0)
  words: str = ''  # positional words: '' none, 'NAME' exactly one, 'DIR...' one or more
  log_dir: Callable[[Args], str] = lambda args: console.LOCAL_LOG_ROOT  # error.log's folder
  stop_message: str = ''  # with `run`, SIGTERM and Ctrl-C append to args.stop and say this
  rewrite_argv: Callable[[list], list] = lambda argv: argv  # before parsing (sweep's --sweep)


def _usage(command: Command, flag_values: flags.FlagValues) -> str:
  return f'{command.doc.strip()}\n\nflags of python -m {command.prog}:\n' + '\n'.join(
      flag_values.get_help(include_special_flags=False).splitlines()[1:])


def parse(command: Command, argv: list) -> Args:
  """The command's flags (a bad one is one `error:` line, exit 2), then absl's own; --help
  prints the usage and exits 0."""
  argv = command.rewrite_argv(list(argv))
  flag_values = flags.FlagValues()
  command.define_flags(flag_values)
  if any(a in _HELP for a in argv[1:]):
    print(_usage(command, flag_values))
    sys.exit(0)
  # config_flags reads a --config's overrides (--config.optim.lr) from sys.argv while it
  # parses: the argv parsed here stands there meanwhile, so `main(command, argv)` takes
  # overrides in-process too.
  saved, sys.argv = sys.argv, argv
  try:
    rest = console.parse_flags(argv, flag_values, known_only=True)
  finally:
    sys.argv = saved
  words = console.parse_flags(rest)[1:]  # absl's own flags; an unknown flag fails here
  if not command.words:
    console.reject_positional(argv[:1] + words)
  elif len(words) != 1 and not command.words.endswith('...'):
    console.fail(f'expected one {command.words}, got {len(words)} words (see python -m '
                 f'{command.prog} --help)', ConfigError.exit_code)
  elif not words:
    console.fail(f'expected at least one {command.words.rstrip(".")} (see python -m '
                 f'{command.prog} --help)',
                 ConfigError.exit_code)
  return Args(flag_values, words, [])


def _execute(command: Command, args: Args) -> int:
  try:
    return command.body(args) or 0
  except UserError as e:
    console.fail(str(e), e.exit_code)
  except Exception:  # pylint: disable=broad-except  (a bug: its traceback goes to a log)
    console.fail_internal(command.log_dir(args))


def main(command: Command, argv: list) -> int:
  """Runs `command` on `argv` (without the program's name) in this process; returns the
  exit status. What `run` adds for a process (quiet logs, signal handlers) is left out."""
  try:
    return _execute(command, parse(command, [command.prog, *argv]))
  except SystemExit as e:
    return e.code


def _in_process(command: Command, args: Args) -> int:
  console.quiet_libraries(verbose='verbose' in args.flags and args.flags.verbose)
  if command.stop_message:
    console.install_stop_handlers(args.stop, command.stop_message)
  return _execute(command, args)


def _working_directory_first() -> None:
  """An installed console script (aikd-train) imports like `python -m`: the working directory
  first on sys.path, so a config file imports its siblings (`from configs import default`)."""
  if not {'', os.getcwd()} & set(sys.path[:1]):
    sys.path.insert(0, os.getcwd())


def run(command: Command) -> None:
  """The process: parses sys.argv, runs the command and exits with its status."""
  _working_directory_first()
  try:
    app.run(lambda args: sys.exit(_in_process(command, args)),
            flags_parser=lambda argv: parse(command, argv))
  except SystemExit as e:
    console.exit_after_failure(e.code)
    raise
