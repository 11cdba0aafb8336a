"""User-facing errors: `main` prints their message as one line and exits non-zero."""


class UserError(Exception):
  """Bad input that the user can fix (config, dataset, workdir, superior)."""


class NonFiniteLossError(UserError):
  """A loss term became NaN or Inf during training."""
