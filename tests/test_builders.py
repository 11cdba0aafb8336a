"""Our manual-download TFDS builders, on tiny fake archives in the original layouts.

Also checks that every row of the dataset registry agrees with its builder.
Nothing is downloaded.
"""
import inspect
import io
import os
import tarfile
import zipfile

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from aikd_jax.data import builders
from aikd_jax.data import datasets
from aikd_jax.data.builders import fashion_mnist_local
from aikd_jax.data.builders import fgvc_aircraft
from aikd_jax.data.builders import __main__ as prepare_command
from aikd_jax.data.builders import mit67
from aikd_jax.data.builders import tiny_imagenet
from aikd_jax.errors import DataError, UserError

_BUILDER_MODULES = {'tiny_imagenet': tiny_imagenet, 'mit67': mit67,
                    'fgvc_aircraft': fgvc_aircraft}


def _image_bytes(array: np.ndarray, fmt: str = 'JPEG', mode: str | None = None) -> bytes:
  """Encodes a uint8 [H,W,3] array; `mode` converts first (e.g. 'L', 'CMYK')."""
  image = Image.fromarray(array)
  if mode == 'P':  # an exact palette, no dithering
    image = image.convert('P', palette=Image.Palette.ADAPTIVE)
  elif mode:
    image = image.convert(mode)
  out = io.BytesIO()
  image.save(out, format=fmt, **({'quality': 95} if fmt == 'JPEG' else {}))
  return out.getvalue()


def _flat(value: int, h: int, w: int) -> np.ndarray:
  return np.full((h, w, 3), value, np.uint8)


def _add_tar(tar: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def _prepare(name: str, manual_dir, data_dir):
  builder = tfds.builder(name, data_dir=str(data_dir))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  return tfds.builder(name, data_dir=str(data_dir))  # reloaded from the prepared files


def _examples(builder, split: str) -> list[tuple[np.ndarray, int]]:
  """[(image, label)] of a prepared split, in file order."""
  ds = builder.as_dataset(split=split, shuffle_files=False)
  return [(ex['image'], int(ex['label'])) for ex in tfds.as_numpy(ds)]


# --- Tiny-ImageNet ---------------------------------------------------------------------

_WNIDS = ('n03000000', 'n01000000', 'n02000000')  # wnids.txt order is not sorted


def write_tiny_imagenet_zip(folder) -> dict:
  """A 3-class tiny-imagenet-200.zip: 2 train images per class, 4 val, 1 unlabelled test.

  Each image is flat, with value 40 * (sorted class index) + 10 * image index + 5
  (train) or 200 + val index (val); one train image per class is grey.
  Returns {split: sorted list of (value, label)}.
  """
  root = 'tiny-imagenet-200/'
  expected = {'train': [], 'validation': []}
  with zipfile.ZipFile(os.path.join(folder, tiny_imagenet.DOWNLOAD.file_name), 'w') as z:
    z.writestr(root + 'wnids.txt', '\n'.join(_WNIDS) + '\n')
    z.writestr(root + 'words.txt', ''.join(f'{w}\tthing {w}\n' for w in _WNIDS))
    for label, wnid in enumerate(sorted(_WNIDS)):
      z.writestr(f'{root}train/{wnid}/{wnid}_boxes.txt', '')
      for i in range(2):
        value = 40 * label + 10 * i + 5
        data = _image_bytes(_flat(value, 64, 64), mode='L' if i == 1 else None)
        z.writestr(f'{root}train/{wnid}/images/{wnid}_{i}.JPEG', data)
        expected['train'].append((value, label))
    annotations = []
    for i in range(4):
      label = i % 3
      z.writestr(f'{root}val/images/val_{i}.JPEG', _image_bytes(_flat(200 + i, 64, 64)))
      annotations.append(f'val_{i}.JPEG\t{sorted(_WNIDS)[label]}\t0\t0\t63\t63\n')
      expected['validation'].append((200 + i, label))
    z.writestr(root + 'val/val_annotations.txt', ''.join(annotations))
    z.writestr(root + 'test/images/test_0.JPEG', _image_bytes(_flat(0, 64, 64)))
  return {k: sorted(v) for k, v in expected.items()}


@pytest.mark.parametrize('extracted', [False, True], ids=['zip', 'folder'])
def test_tiny_imagenet(tmp_path, extracted):
  manual_dir = tmp_path / 'manual'
  manual_dir.mkdir()
  expected = write_tiny_imagenet_zip(manual_dir)
  if extracted:
    archive = manual_dir / tiny_imagenet.DOWNLOAD.file_name
    with zipfile.ZipFile(archive) as z:
      z.extractall(manual_dir)
    archive.unlink()
  builder = _prepare('tiny_imagenet', manual_dir, tmp_path / 'tfds')
  assert builder.info.features['label'].names == sorted(_WNIDS)
  assert {s: i.num_examples for s, i in builder.info.splits.items()} == {
      'train': 6, 'validation': 4}
  for split, want in expected.items():
    got = []
    for image, label in _examples(builder, split):
      assert image.shape == (64, 64, 3) and image.dtype == np.uint8
      assert image.max() - image.min() <= 2  # flat, and grey became RGB
      got.append((round(float(image.mean())), label))
    assert sorted(got) == want


# --- MIT67 -----------------------------------------------------------------------------

_SCENES = ('kitchen', 'bar', 'bowling')


def write_mit67_files(folder, extracted: bool = False) -> dict:
  """indoorCVPR_09.tar (or its extracted Images/) with 3 classes x 4 images, plus the lists.

  Per class: images 0-1 train, 2 test, 3 in no list. Image 1 is a PNG named .jpg in
  class 0, a CMYK JPEG in class 1, a GIF named .jpg in class 2. Values as for Tiny.
  Returns {split: sorted list of (value, label, (h, w))}.
  """
  files, expected = {}, {'train': [], 'test': []}
  lists = {'train': [], 'test': []}
  for label, scene in enumerate(sorted(_SCENES)):
    for i in range(4):
      value, h, w = 40 * label + 10 * i + 5, 30 + 2 * i, 40 + label
      image = _flat(value, h, w)
      fmt, mode = 'JPEG', None
      if i == 1:
        fmt, mode = [('PNG', None), ('JPEG', 'CMYK'), ('GIF', 'P')][label]
      path = f'{scene}/int{i}.jpg'
      files[f'Images/{path}'] = _image_bytes(image, fmt, mode)
      if i < 3:
        split = 'train' if i < 2 else 'test'
        lists[split].append(path)
        expected[split].append((value, label, (h, w)))
  for split, download in mit67.LISTS.items():
    with open(os.path.join(folder, download.file_name), 'w') as f:
      f.write(''.join(p + '\r\n' for p in lists[split]))  # the originals end lines in CRLF
  if extracted:
    for name, data in files.items():
      os.makedirs(os.path.join(folder, os.path.dirname(name)), exist_ok=True)
      with open(os.path.join(folder, name), 'wb') as f:
        f.write(data)
  else:
    with tarfile.open(os.path.join(folder, mit67.ARCHIVE.file_name), 'w') as tar:
      for name, data in files.items():
        _add_tar(tar, name, data)
  return {k: sorted(v) for k, v in expected.items()}


@pytest.mark.parametrize('extracted', [False, True], ids=['tar', 'folder'])
def test_mit67(tmp_path, extracted):
  manual_dir = tmp_path / 'manual'
  manual_dir.mkdir()
  expected = write_mit67_files(manual_dir, extracted)
  builder = _prepare('mit67', manual_dir, tmp_path / 'tfds')
  assert builder.info.features['label'].names == sorted(_SCENES)
  assert {s: i.num_examples for s, i in builder.info.splits.items()} == {'train': 6, 'test': 3}
  for split, want in expected.items():
    got = []
    for image, label in _examples(builder, split):
      assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
      assert image.max() - image.min() <= 4
      got.append((round(float(image.mean()) / 5) * 5, label, image.shape[:2]))
    assert sorted(got) == want


# --- FGVC-Aircraft ---------------------------------------------------------------------

_VARIANTS = ('A300B4', 'Boeing 717', 'F/A-18')  # names may hold spaces and slashes


def write_fgvc_archive(folder) -> dict:
  """fgvc-aircraft-2013b.tar.gz: 3 variants x 3 images (2 trainval, 1 test), lists last.

  Images are flat (value as for Tiny) above a white 20-row banner.
  Returns {split: sorted list of (value, label, (h, w) after cropping)}.
  """
  root = 'fgvc-aircraft-2013b/data/'
  expected = {'trainval': [], 'test': []}
  lists = {'trainval': [], 'test': []}
  with tarfile.open(os.path.join(folder, fgvc_aircraft.DOWNLOAD.file_name), 'w:gz') as tar:
    for label, variant in enumerate(_VARIANTS):
      for i in range(3):
        # h on an 8-row JPEG block edge: no ringing from the banner above the crop line.
        value, h, w = 40 * label + 10 * i + 5, 48 + 8 * i, 60
        image = _flat(value, h + fgvc_aircraft.BANNER_ROWS, w)
        image[h:] = 255
        image_id = f'{1000000 + 10 * label + i:07d}'
        _add_tar(tar, f'{root}images/{image_id}.jpg', _image_bytes(image))
        split = 'trainval' if i < 2 else 'test'
        lists[split].append(f'{image_id} {variant}\n')
        expected[split].append((value, label, (h, w)))
    _add_tar(tar, root + 'variants.txt', '\n'.join(_VARIANTS).encode() + b'\n')
    for split, name in fgvc_aircraft.LISTS.items():
      _add_tar(tar, root + name, ''.join(lists[split]).encode())
  return {k: sorted(v) for k, v in expected.items()}


def test_fgvc_aircraft_crops_banner(tmp_path):
  manual_dir = tmp_path / 'manual'
  manual_dir.mkdir()
  expected = write_fgvc_archive(manual_dir)
  builder = _prepare('fgvc_aircraft', manual_dir, tmp_path / 'tfds')
  assert builder.info.features['label'].names == list(_VARIANTS)
  assert {s: i.num_examples for s, i in builder.info.splits.items()} == {
      'trainval': 6, 'test': 3}
  for split, want in expected.items():
    got = []
    for image, label in _examples(builder, split):
      assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
      assert image.max() - image.min() <= 4, 'banner rows left in the image'
      got.append((round(float(image.mean()) / 5) * 5, label, image.shape[:2]))
    assert sorted(got) == want


# --- Missing files ---------------------------------------------------------------------

@pytest.mark.parametrize('name', sorted(_BUILDER_MODULES))
def test_missing_archive_says_what_to_download(tmp_path, name):
  module = _BUILDER_MODULES[name]
  cls = tfds.builder_cls(name)
  (tmp_path / 'other.txt').write_text('not the archive')  # TFDS rejects an empty manual dir
  archive = (module.ARCHIVE if name == 'mit67' else module.DOWNLOAD)
  for step in (lambda: cls.check_manual_dir(str(tmp_path)),
               lambda: _prepare(name, tmp_path, tmp_path / 'tfds')):
    with pytest.raises(UserError) as e:
      step()
    message = str(e.value)
    assert archive.file_name in message and archive.url in message
    assert str(tmp_path) in message and '\n' not in message
  assert archive.file_name in cls.MANUAL_DOWNLOAD_INSTRUCTIONS
  assert archive.url in cls.MANUAL_DOWNLOAD_INSTRUCTIONS
  assert f'python -m aikd_jax.data.builders {name}' in cls.MANUAL_DOWNLOAD_INSTRUCTIONS


def test_pipeline_reports_missing_archive(tmp_path):
  from aikd_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from configs import common  # pylint: disable=g-import-not-at-top
  c = common.make('fgvc_aircraft', 'resnet18')
  c.data.tfds_dir, c.data.manual_dir = str(tmp_path / 'tfds'), str(tmp_path)
  with pytest.raises(UserError, match=r'fgvc-aircraft-2013b.tar.gz not found in .*: download '
                     r'https://www.robots.ox.ac.uk/\S+ into that folder'):
    pipeline.Pipeline(c)


def test_pipeline_reports_damaged_archive_in_one_line(tmp_path):
  from aikd_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from configs import common  # pylint: disable=g-import-not-at-top
  write_tiny_imagenet_zip(tmp_path)
  _truncate(tmp_path / tiny_imagenet.DOWNLOAD.file_name)
  c = common.make('tiny_imagenet', 'preact_resnet18')
  c.data.tfds_dir, c.data.manual_dir = str(tmp_path / 'tfds'), str(tmp_path)
  with pytest.raises(DataError, match=r'tiny-imagenet-200.zip: truncated or damaged zip .*; '
                     r'download tiny-imagenet-200.zip again from http://cs231n') as e:
    pipeline.Pipeline(c)
  assert '\n' not in str(e.value)


def test_mit67_missing_list(tmp_path):
  write_mit67_files(tmp_path)
  os.remove(tmp_path / 'TestImages.txt')
  with pytest.raises(UserError, match='TestImages.txt.*web.mit.edu'):
    mit67.Mit67.check_manual_dir(str(tmp_path))


def test_command_line_reports_missing_archive(tmp_path, capsys):
  status = prepare_command.main(['tiny_imagenet', f'--manual_dir={tmp_path}',
                                 f'--data_dir={tmp_path}'])
  assert status == DataError.exit_code
  err = capsys.readouterr().err
  assert err.startswith('error: ') and err.count('\n') == 1
  assert 'tiny-imagenet-200.zip not found' in err


# --- Damaged downloads: one line naming the archive or member, and the fix ---------------

def _prepare_fails(name, manual_dir, data_dir) -> str:
  """Prepares `name`, expecting a DataError; returns its one line."""
  before = {p: p.read_bytes() for p in manual_dir.rglob('*') if p.is_file()}
  with pytest.raises(DataError) as e:
    _prepare(name, manual_dir, data_dir)
  message = str(e.value)
  assert '\n' not in message, message
  assert {p: p.read_bytes() for p in manual_dir.rglob('*') if p.is_file()} == before
  return message


def _truncate(path, keep: float = 0.5) -> None:
  data = path.read_bytes()
  path.write_bytes(data[:int(len(data) * keep)])


def test_truncated_zip_is_reported_as_a_truncated_zip(tmp_path):
  manual_dir = tmp_path / 'manual'
  manual_dir.mkdir()
  write_tiny_imagenet_zip(manual_dir)
  archive = manual_dir / tiny_imagenet.DOWNLOAD.file_name
  _truncate(archive)
  message = _prepare_fails('tiny_imagenet', manual_dir, tmp_path / 'tfds')
  assert f'{archive}: truncated or damaged zip' in message
  assert f'download tiny-imagenet-200.zip again from {tiny_imagenet.DOWNLOAD.url}' in message
  archive.unlink()
  write_tiny_imagenet_zip(manual_dir)  # the corrected rerun
  builder = _prepare('tiny_imagenet', manual_dir, tmp_path / 'tfds')
  assert builder.info.splits['train'].num_examples == 6


def test_zip_without_train_or_with_other_content(tmp_path):
  manual_dir = tmp_path / 'manual'
  manual_dir.mkdir()
  archive = manual_dir / tiny_imagenet.DOWNLOAD.file_name
  write_tiny_imagenet_zip(manual_dir)
  with zipfile.ZipFile(archive) as z:
    kept = {n: z.read(n) for n in z.namelist() if '/train/' not in n}
  with zipfile.ZipFile(archive, 'w') as z:
    for n, data in kept.items():
      z.writestr(n, data)
  message = _prepare_fails('tiny_imagenet', manual_dir, tmp_path / 'tfds')
  assert f'{archive}: no train/<wnid>/images/*.JPEG' in message
  assert 'not the official archive' in message and tiny_imagenet.DOWNLOAD.url in message
  with zipfile.ZipFile(archive, 'w') as z:
    z.writestr('holiday/photo.txt', 'not tiny-imagenet')
  message = _prepare_fails('tiny_imagenet', manual_dir, tmp_path / 'tfds')
  assert f'{archive}: wnids.txt missing (the archive is truncated, incomplete or not the ' \
      'official one)' in message


def test_truncated_tar_gz(tmp_path):
  manual_dir = tmp_path / 'manual'
  manual_dir.mkdir()
  write_fgvc_archive(manual_dir)
  archive = manual_dir / fgvc_aircraft.DOWNLOAD.file_name
  _truncate(archive, 0.6)
  message = _prepare_fails('fgvc_aircraft', manual_dir, tmp_path / 'tfds')
  assert f'{archive}: truncated archive' in message
  assert fgvc_aircraft.DOWNLOAD.url in message


def test_truncated_plain_tar(tmp_path):
  manual_dir = tmp_path / 'manual'
  manual_dir.mkdir()
  write_mit67_files(manual_dir)
  archive = manual_dir / mit67.ARCHIVE.file_name
  data = archive.read_bytes()
  archive.write_bytes(data[:1536])  # cut at a member boundary: reads as a short archive
  message = _prepare_fails('mit67', manual_dir, tmp_path / 'tfds')
  assert f'{archive}: truncated' in message and mit67.ARCHIVE.url in message


def test_html_page_saved_as_the_tar(tmp_path):
  manual_dir = tmp_path / 'manual'
  manual_dir.mkdir()
  write_mit67_files(manual_dir)
  archive = manual_dir / mit67.ARCHIVE.file_name
  archive.write_bytes(b'<html><body>404 Not Found</body></html>\n' * 20)
  message = _prepare_fails('mit67', manual_dir, tmp_path / 'tfds')
  assert f'{archive}: not a tar archive' in message and mit67.ARCHIVE.url in message


def test_list_naming_a_missing_image(tmp_path):
  manual_dir = tmp_path / 'manual'
  manual_dir.mkdir()
  write_mit67_files(manual_dir)
  with open(manual_dir / 'TrainImages.txt', 'a') as f:
    f.write('kitchen/int99.jpg\r\n')
  message = _prepare_fails('mit67', manual_dir, tmp_path / 'tfds')
  assert 'indoorCVPR_09.tar: kitchen/int99.jpg missing' in message
  assert mit67.ARCHIVE.url in message


@pytest.mark.parametrize('extracted', [False, True], ids=['tar', 'folder'])
def test_undecodable_image_is_named(tmp_path, extracted):
  manual_dir = tmp_path / 'manual'
  manual_dir.mkdir()
  write_mit67_files(manual_dir, extracted=True)
  image = manual_dir / 'Images' / 'bar' / 'int0.jpg'
  _truncate(image, 0.3)
  if not extracted:
    with tarfile.open(manual_dir / mit67.ARCHIVE.file_name, 'w') as tar:
      tar.add(manual_dir / 'Images', arcname='Images')
    for p in sorted((manual_dir / 'Images').rglob('*'), reverse=True):
      p.unlink() if p.is_file() else p.rmdir()
    (manual_dir / 'Images').rmdir()
  message = _prepare_fails('mit67', manual_dir, tmp_path / 'tfds')
  assert 'bar/int0.jpg is not a decodable image (truncated or damaged)' in message
  where = mit67.ARCHIVE.file_name if not extracted else str(manual_dir / 'Images')
  assert where in message and mit67.ARCHIVE.url in message


def test_mit67_overlapping_lists_are_warned_about(tmp_path, caplog):
  manual_dir = tmp_path / 'manual'
  manual_dir.mkdir()
  write_mit67_files(manual_dir)
  with open(manual_dir / 'TestImages.txt', 'a') as f:
    f.write('kitchen/int0.jpg\r\n')  # also a train image
  with caplog.at_level('WARNING'):
    _prepare('mit67', manual_dir, tmp_path / 'tfds')
  warnings = [r.getMessage() for r in caplog.records if 'in both' in r.getMessage()]
  assert len(warnings) == 1
  assert '1 images are in both TrainImages.txt and TestImages.txt (e.g. kitchen/int0.jpg)' \
      in warnings[0]


def test_command_line_damaged_archive_is_one_line(tmp_path, capsys):
  write_tiny_imagenet_zip(tmp_path)
  _truncate(tmp_path / tiny_imagenet.DOWNLOAD.file_name)
  status = prepare_command.main(['tiny_imagenet', f'--manual_dir={tmp_path}',
                                 f'--data_dir={tmp_path / "tfds"}'])
  assert status == DataError.exit_code
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and 'truncated or damaged zip' in err, err


# --- Registry rows agree with the builders ---------------------------------------------

def _tfds_split_names(cls) -> set[str]:
  """Split names a TFDS-installed builder generates, read from its source (no data offline)."""
  source = inspect.getsource(cls._split_generators)  # pylint: disable=protected-access
  return {s for s in ('train', 'test', 'validation') if f'Split.{s.upper()}' in source}


@pytest.mark.parametrize('name', datasets.names())
def test_registry_row_matches_builder(tmp_path, name):
  spec = datasets.get(name)
  cls = tfds.builder_cls(spec.tfds_name)
  assert spec.train_split != spec.test_split
  if spec.tfds_name in _BUILDER_MODULES:  # class names come with the data: check constants
    module = _BUILDER_MODULES[spec.tfds_name]
    assert spec.num_classes == module.NUM_CLASSES
    assert {spec.train_split, spec.test_split} == set(module.SPLIT_SIZES)
    assert spec.tfds_name in builders.MANUAL_BUILDERS
  elif spec.tfds_name == 'fashion_mnist_local':
    assert spec.num_classes == len(fashion_mnist_local.LABEL_NAMES)
    assert {spec.train_split, spec.test_split} == set(fashion_mnist_local.FILES)
  else:
    label = tfds.builder(spec.tfds_name, data_dir=str(tmp_path)).info.features['label']
    assert label.num_classes == spec.num_classes
    assert {spec.train_split, spec.test_split} <= _tfds_split_names(cls)
  image = tfds.builder(spec.tfds_name, data_dir=str(tmp_path)).info.features['image']
  assert image.shape[-1] == spec.channels
  if spec.eval_preprocess == 'none':  # fed as stored: the stored size must be the model's
    assert image.shape[:2] == (spec.image_size, spec.image_size)
  if spec.eval_preprocess == 'resize_center_crop':
    assert spec.resize_size and spec.resize_size >= spec.image_size
  if spec.manual_dir is not None:
    assert hasattr(cls, 'check_manual_dir')


def test_paper_datasets_registered():
  """Table 1 of the paper: classes and the (train, test) split of every dataset."""
  want = {'cifar100': (100, 32), 'tiny_imagenet': (200, 32), 'cub200': (200, 224),
          'stanford_dogs': (120, 224), 'mit67': (67, 224), 'fgvc_aircraft': (100, 224)}
  for name, (classes, size) in want.items():
    spec = datasets.get(name)
    assert (spec.num_classes, spec.image_size) == (classes, size)
    if size == 224:
      assert (spec.train_augment, spec.eval_preprocess, spec.resize_size) == (
          'random_resized_crop_flip', 'resize_center_crop', 256)
      assert not spec.in_memory
  assert datasets.get('cub200').tfds_name == 'caltech_birds2011'
  assert (datasets.get('fgvc_aircraft').train_split, datasets.get('tiny_imagenet').test_split) == (
      'trainval', 'validation')
