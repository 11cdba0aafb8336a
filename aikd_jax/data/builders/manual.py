"""Shared parts of our manual-download TFDS builders (Tiny-ImageNet, MIT67, FGVC-Aircraft).

- `ManualBuilder`: the builders' common base. It checks the downloads, builds the
  DatasetInfo, warns when the class count or split sizes are not the official ones, and
  stores every listed image as a JPEG; each builder's module holds only what differs (its
  files and URLs, and how it parses its lists into `Example`s).
- `Download`: what the user must download, and the one-line error when it is missing.
- `open_source`: the downloaded data as an archive (zip, tar, tar.gz), read directly,
  or as the folder it extracts to; both read the same member paths. A zip is known by
  its name or signature, so a truncated one is reported as a truncated zip.
- Every failure while reading is a DataError of one line from `Source.bad`: the archive
  (and member), what is wrong, and the URL to download it again from.
- `rgb_jpeg`: checks an image and returns it as RGB JPEG bytes (the original bytes
  when they already are), optionally without its bottom rows.

The manual dir may be a local folder or an object store (gs://...): every file is reached
through `etils.epath`. A tar is read as one stream; a zip needs seeks, which GCS serves as
ranged reads.

`python -m aikd_jax.data.builders NAME --manual_dir=DIR` prepares one of them (`__main__.py`).
"""
import abc
from collections.abc import Callable, Iterable, Iterator, Sequence
import bz2
import collections
import concurrent.futures
import contextlib
import dataclasses
import gzip
import io
import lzma
import os
import tarfile
from typing import NamedTuple
import zipfile
import zlib

from absl import logging
from etils import epath
from PIL import Image
import tensorflow_datasets as tfds

from aikd_jax.errors import DataError

JPEG_QUALITY = 95  # when an image has to be re-encoded
_PREFETCH = 64  # images in flight in `parallel_map`


@dataclasses.dataclass(frozen=True)
class Download:
  """One file the user downloads by hand.

  Attributes:
    dataset: the dataset's display name.
    file_name: the file to put in the manual dir (the archive as downloaded).
    url: where to download it.
    roots: for an archive, the folders (relative to the archive's root) that may hold
      the dataset's files, in order of preference: inside the archive, and in the
      manual dir when the user extracted it there instead. Empty for a plain file.
  """
  dataset: str
  file_name: str
  url: str
  roots: tuple[str, ...] = ()

  def missing_message(self, manual_dir: str) -> str:
    """One line: what is missing, where to get it, where to put it."""
    return (f'{self.dataset}: {self.file_name} not found in {manual_dir}: download {self.url} '
            f'into that folder (keep the name {self.file_name}), or set '
            '--config.data.manual_dir (--manual_dir for the build command) to the folder '
            'that holds it')


def instructions(downloads: Sequence[Download], name: str, extra: str = '') -> str:
  """The builder's MANUAL_DOWNLOAD_INSTRUCTIONS: what to download, where, how to build."""
  lines = ['Download these files into the manual dir (by default '
           '<data_dir>/downloads/manual/, e.g. ~/tensorflow_datasets/downloads/manual/; '
           'or any folder passed as --manual_dir / --config.data.manual_dir):']
  lines += [f'  {d.file_name}: {d.url}' for d in downloads]
  if extra:
    lines.append(extra)
  lines.append('Then build it once (or let training prepare it on first use):')
  lines.append(f'  python -m aikd_jax.data.builders {name} --manual_dir=DIR '
               '[--data_dir=TFDS_DIR]')
  return '\n'.join(lines)


def check_files(manual_dir: str, downloads: Sequence[Download]) -> None:
  """Raises DataError naming the first download that is neither archive nor folder in it."""
  for d in downloads:
    if epath.Path(manual_dir, d.file_name).is_file() or _extracted(manual_dir, d):
      continue
    raise DataError(d.missing_message(manual_dir))


def _extracted(manual_dir: str, download: Download) -> str | None:
  """The folder of `download`'s files when the user extracted the archive, else None."""
  for root in download.roots:
    folder = epath.Path(manual_dir, *root.split('/'))
    if folder.is_dir():
      return os.fspath(folder)
  return None


class Source:
  """Files of one dataset, by path relative to the dataset's root folder ('a/b.jpg').

  Every failure is a DataError of one line that names the archive (or folder) and the
  member, says what is wrong and what to do (`bad`).
  """

  def __init__(self, path: str, download: Download):
    self.path = path
    self.download = download

  def read(self, path: str) -> bytes:
    raise NotImplementedError

  def names(self) -> list[str]:
    """All file paths (needed only where no list file says which files exist)."""
    raise NotImplementedError

  def read_many(self, paths: Iterable[str]) -> Iterator[tuple[str, bytes]]:
    """Yields (path, bytes) of every path in `paths`; DataError if any is missing."""
    for path in paths:
      yield path, self.read(path)

  def fix(self) -> str:
    return f'download {self.download.file_name} again from {self.download.url}'

  def bad(self, problem: str) -> DataError:
    """DataError: '<dataset>: <archive>: <problem>; download it again from <url>'."""
    return DataError(f'{self.download.dataset}: {self.path}: {problem}; {self.fix()}')

  def missing(self, paths: Sequence[str]) -> DataError:
    more = f' and {len(paths) - 1} more' if len(paths) > 1 else ''
    return self.bad(f'{paths[0]}{more} missing (the archive is truncated, incomplete or not '
                    'the official one)')

  def image(self, data: bytes, path: str, crop_bottom: int = 0):
    """`rgb_jpeg` of a member; an undecodable image is a DataError naming the member."""
    try:
      return rgb_jpeg(data, path, crop_bottom)
    except ValueError as e:
      raise self.bad(str(e)) from None


class FolderSource(Source):
  """An extracted archive: files under `root`."""

  def fix(self) -> str:
    return (f'extract {self.download.file_name} again (from {self.download.url}) or put the '
            'archive itself in the manual dir')

  def read(self, path: str) -> bytes:
    full = epath.Path(self.path, *path.split('/'))
    if not full.is_file():
      raise self.bad(f'{path} is missing (the extracted folder is incomplete)')
    return full.read_bytes()

  def names(self) -> list[str]:
    root = epath.Path(self.path)
    return sorted((folder / f).relative_to(root).as_posix()
                  for folder, _, files in root.walk() for f in files)


class ZipSource(Source):
  """A zip archive; paths are relative to the first of `prefixes` that it holds."""

  def __init__(self, path: str, download: Download, prefixes: Sequence[str]):
    super().__init__(path, download)
    try:
      # epath's open is a context manager on gs://; the zip reads until the build ends.
      self._file = contextlib.ExitStack()
      self._zip = zipfile.ZipFile(self._file.enter_context(epath.Path(path).open('rb')))
    except (zipfile.BadZipFile, OSError, EOFError) as e:
      raise self.bad(f'truncated or damaged zip ({e})') from None
    names = self._zip.namelist()
    self._prefix = next((p for p in prefixes if any(n.startswith(p) for n in names)), '')
    self._members = {n[len(self._prefix):]: n for n in names
                     if n.startswith(self._prefix) and not n.endswith('/')}

  def read(self, path: str) -> bytes:
    if path not in self._members:
      raise self.missing([self._prefix + path])
    try:
      return self._zip.read(self._members[path])
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
      raise self.bad(f'member {self._members[path]} is damaged ({e})') from None

  def names(self) -> list[str]:
    return sorted(self._members)


class TarSource(Source):
  """A tar archive (plain or compressed), read in one pass per call (no random access).

  Members are matched after removing the first of `prefixes` they start with.
  """

  def __init__(self, path: str, download: Download, prefixes: Sequence[str]):
    super().__init__(path, download)
    self._prefixes = tuple(prefixes)

  def _relative(self, name: str) -> str | None:
    if name.startswith('./'):
      name = name[2:]
    for prefix in self._prefixes:
      if name.startswith(prefix):
        return name[len(prefix):]
    return None

  def read(self, path: str) -> bytes:
    return dict(self.read_many([path]))[path]

  def names(self) -> list[str]:
    return sorted(rel for rel, _, _ in self._members())

  def read_many(self, paths: Iterable[str]) -> Iterator[tuple[str, bytes]]:
    """Yields the wanted members in archive order; stops once all are found."""
    wanted = set(paths)
    for rel, tar, member in self._members(lambda: bool(wanted)):
      if rel in wanted:
        wanted.discard(rel)
        yield rel, self._extract(tar, member)
    if wanted:
      raise self.missing(sorted(wanted))

  def _members(self, more=lambda: True):
    """Yields (relative path, tar, member) of the files under the prefixes."""
    seen = 0
    try:
      with epath.Path(self.path).open('rb') as f, tarfile.open(fileobj=f, mode='r|*') as tar:
        for member in tar:
          seen += 1
          if not more():
            break
          rel = self._relative(member.name)
          if rel is not None and member.isfile():
            yield rel, tar, member
    except tarfile.ReadError as e:
      if not seen:  # fails on the first header: some other file saved under this name
        raise self.bad(f'not a tar archive ({e}; an HTML error page?)') from None
      raise self.bad(f'truncated or damaged tar ({e})') from None
    except (EOFError, OSError, zlib.error, tarfile.TarError) as e:
      raise self.bad(f'truncated or damaged archive ({e})') from None

  def missing(self, paths: Sequence[str]) -> DataError:
    if _tar_truncated(self.path):  # a stream cut at a member boundary reads as complete
      others = ' and others' if len(paths) > 1 else ''
      return self.bad(f'truncated archive ({paths[0]}{others} never reached)')
    return super().missing(paths)

  def _extract(self, tar, member) -> bytes:
    try:
      return tar.extractfile(member).read()
    except (EOFError, OSError, zlib.error, tarfile.TarError) as e:
      raise self.bad(f'truncated or damaged archive at member {member.name} ({e})') from None


_COMPRESSED = ((b'\x1f\x8b', gzip.open), (b'BZh', bz2.open), (b'\xfd7zXZ', lzma.open))


def _tar_truncated(path: str) -> bool:
  """True when a tar ends early: a compressed stream without its end, or a plain tar
  without the two zero blocks that close it."""
  with epath.Path(path).open('rb') as f:
    head = f.read(6)
    opener = next((o for magic, o in _COMPRESSED if head.startswith(magic)), None)
    if opener is None:
      f.seek(0, os.SEEK_END)
      size = f.tell()  # TF's GFile.seek returns None
      f.seek(max(0, size - 1024))
      return size % 512 != 0 or any(f.read())
  try:
    with epath.Path(path).open('rb') as raw, opener(raw, 'rb') as f:
      while f.read(1 << 20):
        pass
  except (EOFError, OSError, lzma.LZMAError, zlib.error):
    return True
  return False


def is_zip(path: str) -> bool:
  """A zip by its name or signature; a truncated zip (no central directory) counts too."""
  with epath.Path(path).open('rb') as f:
    head = f.read(4)
  return path.lower().endswith('.zip') or head in (b'PK\x03\x04', b'PK\x05\x06')


def open_source(manual_dir: str, download: Download) -> Source:
  """The archive `download.file_name` in `manual_dir`, else the folder it extracted to.

  Paths are relative to the first of `download.roots` found (zip, folder) or that a
  member starts with (tar).
  """
  archive = os.fspath(epath.Path(manual_dir, download.file_name))
  prefixes = [root + '/' for root in download.roots]
  if epath.Path(archive).is_file():
    if is_zip(archive):
      return ZipSource(archive, download, prefixes)
    return TarSource(archive, download, prefixes)
  folder = _extracted(manual_dir, download)
  if folder is not None:
    return FolderSource(folder, download)
  raise DataError(download.missing_message(manual_dir))


class _FileSource(FolderSource):
  """Plain downloaded files in the manual dir: the fix is to download them again."""
  fix = Source.fix


def list_source(manual_dir: str, download: Download) -> Source:
  """A plain downloaded file (a list) in `manual_dir`, read as a Source."""
  return _FileSource(manual_dir, download)


def read_text(source: Source, path: str) -> list[str]:
  """Non-empty stripped lines of a text file of `source`; an empty file is a DataError."""
  return _lines(source, path, source.read(path))


def read_texts(source: Source, paths: Sequence[str]) -> dict[str, list[str]]:
  """Non-empty stripped lines of several text files, read in one pass (none may be empty)."""
  return {p: _lines(source, p, data) for p, data in source.read_many(paths)}


def _lines(source: Source, path: str, data: bytes) -> list[str]:
  try:
    text = data.decode('utf-8')
  except UnicodeDecodeError:
    raise source.bad(f'{path} is not a text file (not the official archive)') from None
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  if not lines:  # else a split without examples: TFDS's bare "No examples were yielded"
    raise source.bad(f'{path} is empty (a cut download, or not the official file)')
  return lines


def rgb_jpeg(data: bytes, name: str, crop_bottom: int = 0) -> tuple[bytes, tuple[int, int]]:
  """Decodes an image fully and returns (RGB JPEG bytes, (height, width)).

  The original bytes are kept when they already are an RGB JPEG and nothing is
  cropped; anything else (grey, CMYK, palette, PNG or GIF saved as .jpg) is
  converted to RGB and re-encoded at quality `JPEG_QUALITY`.

  Args:
    data: the file's bytes.
    name: the file's name, for errors.
    crop_bottom: rows to remove at the bottom (FGVC-Aircraft's copyright banner).
  """
  try:
    with Image.open(io.BytesIO(data)) as image:
      image.load()  # a truncated or corrupt file fails here, not during training
      if image.format == 'JPEG' and image.mode == 'RGB' and not crop_bottom:
        return data, (image.height, image.width)
      rgb = image.convert('RGB')
  except (OSError, ValueError) as e:
    raise ValueError(f'{name} is not a decodable image (truncated or damaged)') from e
  if crop_bottom:
    if rgb.height <= crop_bottom:
      raise ValueError(f'{name} has {rgb.height} rows, fewer than the {crop_bottom}-row banner')
    rgb = rgb.crop((0, 0, rgb.width, rgb.height - crop_bottom))
  out = io.BytesIO()
  rgb.save(out, format='JPEG', quality=JPEG_QUALITY)
  return out.getvalue(), (rgb.height, rgb.width)


def parallel_map(fn: Callable, items: Iterable, workers: int | None = None) -> Iterator:
  """`map(fn, items)` on a thread pool, in order, with a bounded number in flight.

  PIL decodes and encodes without the GIL, so threads speed up `rgb_jpeg`.
  """
  workers = workers or min(8, os.cpu_count() or 1)
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    pending = collections.deque()
    for item in items:
      pending.append(pool.submit(fn, item))
      if len(pending) >= _PREFETCH:
        yield pending.popleft().result()
    while pending:
      yield pending.popleft().result()


def stem(path: str) -> str:
  """The file name of `path` without folders and extension: 'train/a/x_0.JPEG' -> 'x_0'."""
  return path.rsplit('/', 1)[-1].rsplit('.', 1)[0]


class Example(NamedTuple):
  """One image of a split: its path in the `Source`, the example's key, its class name."""
  path: str
  key: str
  label: str


class ManualBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A TFDS builder of RGB JPEGs read from files the user downloaded by hand.

  A subclass (one module per dataset; TFDS names it after the class) sets
  MANUAL_DOWNLOAD_INSTRUCTIONS (`instructions`), DOWNLOADS (checked before preparing),
  NUM_CLASSES and SPLIT_SIZES (the official ones; others are warned about), DESCRIPTION,
  HOMEPAGE and IMAGE_SHAPE, and implements `_read_lists`; it overrides `_image` to check
  or crop the images.
  """
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  DOWNLOADS: tuple[Download, ...] = ()
  NUM_CLASSES: int = 0
  SPLIT_SIZES: dict[str, int] = {}
  # The warning on unusual sizes: '<dataset>: 5 <CLASSES> and split sizes {...};
  # <OFFICIAL> 67 and {...}'.
  CLASSES = 'classes'
  OFFICIAL = 'the official archive has'
  DESCRIPTION = ''
  HOMEPAGE = ''
  IMAGE_SHAPE: tuple[int | None, int | None, int] = (None, None, 3)

  @classmethod
  def check_manual_dir(cls, manual_dir: str) -> None:
    """Called by the pipeline before preparing: fails with one clear line if files are missing."""
    check_files(manual_dir, cls.DOWNLOADS)

  @abc.abstractmethod
  def _read_lists(self, manual_dir: str) -> tuple[Source, list[str], dict[str, list[Example]]]:
    """(the images' source, the class names in label order, each split's examples)."""

  def _image(self, source: Source, path: str, data: bytes) -> bytes:
    """The JPEG stored for member `path` (`Source.image`: RGB, re-encoded if needed)."""
    return source.image(data, path)[0]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.DESCRIPTION,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=self.IMAGE_SHAPE, encoding_format='jpeg'),
            'label': tfds.features.ClassLabel(),  # names are set when preparing
        }),
        supervised_keys=('image', 'label'),
        homepage=self.HOMEPAGE,
    )

  def _split_generators(self, dl_manager):
    manual_dir = str(dl_manager.manual_dir)
    self.check_manual_dir(manual_dir)
    source, names, splits = self._read_lists(manual_dir)
    self.info.features['label'].names = names
    sizes = {split: len(examples) for split, examples in splits.items()}
    if len(names) != self.NUM_CLASSES or sizes != self.SPLIT_SIZES:
      logging.warning('%s: %d %s and split sizes %s; %s %d and %s', self.DOWNLOADS[0].dataset,
                      len(names), self.CLASSES, sizes, self.OFFICIAL, self.NUM_CLASSES,
                      self.SPLIT_SIZES)
    return {split: self._generate_examples(source, examples)
            for split, examples in splits.items()}

  def _generate_examples(self, source: Source, examples: list[Example]):
    """Yields (key, {'image': JPEG bytes, 'label': class name}) of each example."""
    by_path = {e.path: e for e in examples}

    def encode(item):
      path, data = item
      example = by_path[path]
      return example.key, {'image': self._image(source, path, data), 'label': example.label}

    yield from parallel_map(encode, source.read_many([e.path for e in examples]))
