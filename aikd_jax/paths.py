"""Paths the program reads and writes: local folders or object stores (gs://...).

Every path goes through `etils.epath`, as in Orbax and TFDS: with TensorFlow installed
(our stack), epath reaches gs:// through `tf.io.gfile`, the client TFDS and the TensorBoard
writer use too. Local paths are made absolute; URLs (`gs://`, `s3://`, ...) are left alone.

Atomic writes (`write_bytes_atomic`): on a local file system the content goes to a
temporary name in the same folder, then `os.replace` renames it into place (atomic in
POSIX). On an object store a rename is a copy plus a delete, so there the content is
uploaded straight to its final name: an object becomes visible only when its upload
completes, whole (GCS's single-object writes are atomic and strongly consistent), so a
reader sees the old object, or no object, or the new one, never a part.
"""
import os

from etils import epath

PathLike = str | os.PathLike


def is_remote(path: PathLike) -> bool:
  """True for a URL (gs://, s3://, ...): an object store without POSIX semantics."""
  return '://' in os.fspath(path)


def resolve(path: PathLike) -> epath.Path:
  """An epath.Path: a local path made absolute (and ~ expanded), a URL unchanged."""
  text = os.fspath(path)
  if is_remote(text):
    return epath.Path(text)
  return epath.Path(os.path.abspath(os.path.expanduser(text)))


def absolute(path: PathLike) -> str:
  """`resolve` as a string: gs://BUCKET/... or /abs/local/path."""
  return os.fspath(resolve(path))


def join(path: PathLike, *parts: str) -> str:
  """A string path below `path` (works for gs:// as for local folders)."""
  return os.fspath(epath.Path(os.fspath(path)).joinpath(*parts))


def missing_bucket(path: PathLike) -> str | None:
  """For a URL whose bucket does not exist (or is not visible), that bucket; else None.

  Asked before creating folders on an object store: TF's `makedirs` below a missing
  bucket retries forever instead of failing.
  """
  text = os.fspath(path)
  if not is_remote(text):
    return None
  scheme, rest = text.split('://', 1)
  bucket = f'{scheme}://{rest.split("/", 1)[0]}'
  return None if epath.Path(bucket).exists() else bucket


def folder_problem(path: PathLike) -> str | None:
  """Why the folder `path` (existing or to be created) cannot be written, else None.

  Asked before writing: a missing bucket (gs://), a file in its place, or, for a local
  path, the nearest existing folder above it not writable (permissions, a read-only
  mount). Objects in a bucket have no permission bits: their first write says.
  """
  bucket = missing_bucket(path)
  if bucket:
    return f'the bucket {bucket} does not exist or these credentials cannot see it'
  folder = epath.Path(os.fspath(path))
  if folder.exists() and not folder.is_dir():
    return 'it is a file, not a folder'
  if is_remote(path):
    return None
  parent = os.fspath(path)
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    return f'{parent} is a file, not a folder'
  if not os.access(parent, os.W_OK | os.X_OK):
    return f'{parent} is not writable'
  return None


def write_bytes_atomic(path: PathLike, data: bytes) -> None:
  """Writes `data` to `path` all-or-nothing (see the module docstring for how)."""
  path = epath.Path(os.fspath(path))
  path.parent.mkdir(parents=True, exist_ok=True)
  if is_remote(path):
    path.write_bytes(data)  # one object upload: atomic on GCS
    return
  tmp = path.parent / f'.{path.name}.tmp.{os.getpid()}'
  try:
    with open(tmp, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:  # a full disk, an interrupt: no partial file is left behind
    tmp.unlink(missing_ok=True)
    raise


def write_text_atomic(path: PathLike, text: str) -> None:
  write_bytes_atomic(path, text.encode())
