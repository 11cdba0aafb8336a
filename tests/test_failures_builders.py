"""Hostile input to `python -m aikd_jax.data.builders`: one line, its exit status, and the
downloads left as they were.

Each row is (name, setup, exit status, text of the error line). `setup(tmp_path, cleanup)`
writes a manual dir and returns (the command's arguments, the folder that must be left
exactly as it was).
"""
import io
import os
import tarfile
import zipfile

import pytest

from aikd_jax.data.builders import __main__ as prepare_command
from aikd_jax.data.builders import fgvc_aircraft, mit67, tiny_imagenet
from aikd_jax.errors import ConfigError
from tests import hostile
from tests.test_builders import write_fgvc_archive, write_mit67_files, write_tiny_imagenet_zip


def _with_member(archive: str, suffix: str, data: bytes) -> None:
  """Rewrites the zip or tar(.gz) `archive` with the member ending in `suffix` set to `data`."""
  if archive.endswith('.zip'):
    with zipfile.ZipFile(archive) as z:
      members = {n: z.read(n) for n in z.namelist()}
    with zipfile.ZipFile(archive, 'w') as z:
      for name, content in members.items():
        z.writestr(name, data if name.endswith(suffix) else content)
    return
  with tarfile.open(archive) as tar:
    members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
  with tarfile.open(archive, 'w:gz' if archive.endswith('gz') else 'w') as tar:
    for name, content in members.items():
      content = data if name.endswith(suffix) else content
      info = tarfile.TarInfo(name)
      info.size = len(content)
      tar.addfile(info, io.BytesIO(content))


def _manual(tmp_path, name: str):
  manual = tmp_path / 'manual'
  manual.mkdir()
  {'mit67': write_mit67_files, 'fgvc_aircraft': write_fgvc_archive,
   'tiny_imagenet': write_tiny_imagenet_zip}[name](str(manual))
  return manual


def _args(name, manual, data_dir):
  return [name, f'--manual_dir={manual}', f'--data_dir={data_dir}']


def _emptied(name: str, archive_name: str | None, member: str):
  """A manual dir of `name` whose `member` (in the archive, or a plain file) is empty."""
  def setup(tmp_path, cleanup):
    del cleanup
    manual = _manual(tmp_path, name)
    if archive_name is None:
      (manual / member).write_text('\n')
    else:
      _with_member(str(manual / archive_name), member, b'')
    return _args(name, manual, tmp_path / 'tfds'), manual
  return setup


def _data_dir_is_a_file(tmp_path, cleanup):
  del cleanup
  (tmp_path / 'tfds').write_text('not a folder')
  return _args('mit67', _manual(tmp_path, 'mit67'), tmp_path / 'tfds'), tmp_path


def _data_dir_read_only(tmp_path, cleanup):
  disk = hostile.mount_tmpfs(tmp_path, cleanup, 'ro,size=1m')
  return _args('mit67', _manual(tmp_path, 'mit67'), disk / 'tfds'), tmp_path / 'manual'


def _data_dir_on_a_full_disk(tmp_path, cleanup):
  disk = hostile.mount_tmpfs(tmp_path, cleanup, 'size=16k')
  return _args('mit67', _manual(tmp_path, 'mit67'), disk / 'tfds'), tmp_path / 'manual'


CASES = [
    ('mit67_empty_train_list', _emptied('mit67', None, mit67.LISTS['train'].file_name), 3,
     'TrainImages.txt is empty (a cut download, or not the official file); download '
     'TrainImages.txt again from http://web.mit.edu/torralba/www/TrainImages.txt'),
    ('fgvc_empty_test_list', _emptied('fgvc_aircraft', fgvc_aircraft.DOWNLOAD.file_name,
                                      fgvc_aircraft.LISTS['test']), 3,
     f'{fgvc_aircraft.LISTS["test"]} is empty'),
    ('tiny_empty_val_annotations', _emptied('tiny_imagenet', tiny_imagenet.DOWNLOAD.file_name,
                                            'val/val_annotations.txt'), 3,
     'val/val_annotations.txt is empty'),
    ('tiny_empty_wnids', _emptied('tiny_imagenet', tiny_imagenet.DOWNLOAD.file_name,
                                  'wnids.txt'), 3, 'wnids.txt is empty'),
    ('data_dir_is_a_file', _data_dir_is_a_file, 4,
     'cannot be written: it is a file, not a folder'),
    ('data_dir_read_only', _data_dir_read_only, 4, 'disk is not writable'),
    ('data_dir_on_a_full_disk', _data_dir_on_a_full_disk, 5,
     'no space left on the device holding --data_dir'),
]


@pytest.mark.parametrize('name,setup,code,says', CASES, ids=[c[0] for c in CASES])
def test_hostile_input_is_one_line(tmp_path, capsys, name, setup, code, says):
  del name

  def command(args):
    return prepare_command.main([str(a) for a in args]), capsys.readouterr().err

  with hostile.run_row(tmp_path, setup, command) as row:
    assert row.status == code, row.err
    assert says in hostile.last_error_line(row.err), row.err  # after TFDS's progress lines
    assert row.after() == row.before
    data_dir = row.args[0][-1].split('=', 1)[1]
    if os.path.isdir(data_dir):  # nothing half-prepared that a run would read
      assert not [p for p, _, files in os.walk(data_dir) for f in files
                  if f == 'dataset_info.json'], os.listdir(data_dir)


@pytest.mark.parametrize('words,says', [
    (['imagenet2012'], "unknown dataset 'imagenet2012'; choose one of: fgvc_aircraft, mit67, tiny_imagenet, caltech_birds2011"),
    ([], 'expected one NAME, got 0 words'),
    (['tiny_imagenet', 'mit67'], 'expected one NAME, got 2 words'),
    (['tiny_imagenet', '--data-dir=x'], "bad flag: Unknown command line flag 'data-dir'"),
])
def test_bad_command_line_is_one_line(tmp_path, capsys, words, says):
  status = prepare_command.main([*words, f'--data_dir={tmp_path / "tfds"}'])
  err = capsys.readouterr().err
  assert status == ConfigError.exit_code and err.count('\n') == 1, err
  assert err.startswith('error: ') and says in err, err
  assert not (tmp_path / 'tfds').exists()
