"""User-facing errors: `main` prints their message as one line and exits with their code.

Every failure a user can cause or fix is one of these classes; each has its own exit
status (docs/errors.md). Anything else is an internal error: its traceback goes to
`WORKDIR/error.log` and stderr gets one line naming that file (exit 1).
"""

import errno

INTERNAL_ERROR = 1  # a bug: traceback in WORKDIR/error.log
# A sweep cell (`sweep --cell`) stopped by a signal before it finished: it saved a
# checkpoint; running it again resumes. Not 0, so a scheduler does not count it as done.
CELL_STOPPED = 75


class UserError(Exception):
  """Bad input that the user can fix. Subclasses say which kind (and the exit status)."""
  exit_code = 2


class ConfigError(UserError):
  """A config value, flag or combination that cannot work (also unknown names)."""
  exit_code = 2


class DataError(UserError):
  """A dataset that is missing, unprepared or damaged (archives, images, lists)."""
  exit_code = 3


class WorkdirError(UserError):
  """The workdir (or a path read from): not writable, another config's, locked, damaged."""
  exit_code = 4


class OutOfSpaceError(UserError):
  """The disk (or quota) holding the workdir is full."""
  exit_code = 5


class NonFiniteLossError(UserError):
  """A loss term became NaN or Inf during training."""
  exit_code = 6


class DistributedError(UserError):
  """A multi-process run whose processes cannot start together or lost a peer."""
  exit_code = 7



class SuperiorNotReadyError(UserError):
  """A sweep's student cell whose superior cell has not finished (it trains none itself)."""
  exit_code = 8


def is_out_of_space(error: BaseException | None) -> bool:
  """True if `error`, or an error it was raised from, is 'No space left on device'.

  Matched by text too: TensorStore (under Orbax) and TensorFlow raise ValueError or their
  own types with the OS message instead of an OSError.
  """
  while error is not None:
    if getattr(error, 'errno', None) == errno.ENOSPC or 'No space left' in str(error):
      return True
    error = error.__cause__ or error.__context__
  return False
