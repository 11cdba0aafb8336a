"""Multi-process runs need one workdir that every host reaches (gs://..., a shared FS).

`check(workdir, timeout_s)`: process 0 writes a token object (a fresh random value) into
the workdir and publishes the value in JAX's key-value store; every process then reads
the token back from *its* workdir, for up to `timeout_s` seconds, and publishes whether
it found that value. When one did not, every process stops with one line naming the
workdir (WorkdirError, exit 4) instead of hanging or diverging at the first collective
checkpoint save, which is what a host-local workdir would otherwise do.
"""
import time
import uuid

from absl import logging
from etils import epath
import jax

from aikd_jax.errors import WorkdirError

TIMEOUT_S = 60.0  # NFS attribute caches may hide a new file for up to about a minute
TOKEN = '.shared_workdir_check'
_WAIT_FOR_PEERS_S = 3600  # peers may still be preparing data; the peer watchdog bounds it
_NONCE_KEY = 'aikd_jax/workdir_token'
_SEEN_KEY = 'aikd_jax/workdir_seen/'
_POLL_S = 0.5


def _client():
  from aikd_jax import distributed  # pylint: disable=g-import-not-at-top
  return distributed.kv_client()


def _reads_back(token: epath.Path, value: str, timeout_s: float) -> bool:
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      if token.read_text() == value:
        return True
    except (OSError, ValueError):  # not there (yet)
      pass
    except Exception as e:  # pylint: disable=broad-except (e.g. a tf.errors.OpError)
      logging.info('shared-workdir check: reading %s failed: %s', token, e)
    if time.monotonic() >= deadline:
      return False
    time.sleep(_POLL_S)


def check(workdir: str, timeout_s: float = TIMEOUT_S, client=None, process_index=None,
          process_count=None) -> None:
  """Raises WorkdirError unless every process reads what process 0 wrote to `workdir`."""
  count = jax.process_count() if process_count is None else process_count
  if count <= 1:
    return
  me = jax.process_index() if process_index is None else process_index
  client = client or _client()
  token = epath.Path(workdir) / TOKEN
  if me == 0:
    value = uuid.uuid4().hex
    token.write_text(value)
    client.key_value_set(_NONCE_KEY, value, allow_overwrite=True)
  else:
    value = client.blocking_key_value_get(_NONCE_KEY, _WAIT_FOR_PEERS_S * 1000)
  seen = _reads_back(token, value, timeout_s)
  client.key_value_set(f'{_SEEN_KEY}{me}', '1' if seen else '0', allow_overwrite=True)
  missing = []
  for p in range(count):
    try:
      if client.blocking_key_value_get(f'{_SEEN_KEY}{p}', _WAIT_FOR_PEERS_S * 1000) != '1':
        missing.append(p)
    except Exception:  # pylint: disable=broad-except (a peer that never answered)
      missing.append(p)
  if me == 0:
    try:
      token.unlink(missing_ok=True)
    except OSError:
      pass
  if missing:
    who = ', '.join(str(p) for p in missing)
    raise WorkdirError(
        f'--workdir {workdir} is not shared by the {count} processes: process(es) {who} '
        f'did not see the token process 0 wrote there within {timeout_s:g} s. The workdir '
        'must be storage every host reaches (gs://BUCKET/..., or a shared file system), '
        'with the same path on every host')
