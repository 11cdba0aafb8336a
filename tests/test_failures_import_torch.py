"""Hostile input to `python -m aikd_jax.tools.import_torch`: one line, its exit status, and
nothing of the user's changed.

Each row is (name, setup, exit status, text of the error line). `setup(tmp_path, cleanup, cli)`
(`cli(output, *flags)` runs the command) returns (the --output, extra flags, the
folder that must be left exactly as it was).
"""
import functools
import os

import pytest

from aikd_jax import models
from aikd_jax.tools import import_torch
from tests import hostile
from tests.test_import_torch import _cli, _one_line


def _user_folder(tmp_path, cleanup, cli):
  del cli
  """The current folder holds the user's files; `--output .` names it."""
  home = tmp_path / 'home'
  home.mkdir()
  (home / 'thesis.tex').write_text('months of work')
  cwd = os.getcwd()
  os.chdir(home)
  cleanup.callback(os.chdir, cwd)
  return '.', ['--overwrite'], home


def _other_folder(tmp_path, cleanup, cli):
  del cli
  del cleanup
  (tmp_path / 'out' / 'sub').mkdir(parents=True)
  (tmp_path / 'out' / 'model.json').write_text('{}')
  return tmp_path / 'out', ['--overwrite'], tmp_path / 'out'


def _read_only(tmp_path, cleanup, cli):
  del cli
  disk = hostile.mount_tmpfs(tmp_path, cleanup, 'ro,size=1m')
  return disk / 'out', [], disk


def _below_a_file(tmp_path, cleanup, cli):
  del cli
  del cleanup
  (tmp_path / 'f').write_text('x')
  return tmp_path / 'f' / 'out', [], tmp_path


def _full_disk_over_an_old_model(tmp_path, cleanup, cli):
  """An exported model on a disk with too little room for a second copy."""
  disk = hostile.mount_tmpfs(tmp_path, cleanup, 'size=1m')
  assert cli(disk / 'out')[0] == 0
  free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
  (disk / 'filler').write_bytes(b'x' * (free - 64 * 1024))
  return disk / 'out', ['--overwrite'], disk


CASES = [
    ('overwrite_the_current_folder', _user_folder, 4,
     'holds files that are not an exported model (e.g. thesis.tex); --overwrite replaces '
     'only an exported model (model.json + variables)'),
    ('overwrite_a_folder_with_more_than_a_model', _other_folder, 4, '(e.g. sub)'),
    ('read_only_output', _read_only, 4, 'is not writable; nothing was changed'),
    ('output_below_a_file', _below_a_file, 4, 'is a file, not a folder'),
    ('full_disk_over_an_old_model', _full_disk_over_an_old_model, 5,
     'no space left on the device holding --output'),
]


@pytest.mark.parametrize('name,setup,code,says', CASES, ids=[c[0] for c in CASES])
def test_hostile_output_is_one_line(monkeypatch, capsys, tmp_path, name, setup, code, says):
  cli = lambda out, *flags: _cli(monkeypatch, capsys, out, *flags)
  with hostile.run_row(tmp_path, functools.partial(setup, cli=cli),
                       lambda out, flags: cli(out, *flags)) as row:
    assert row.seconds < 60, name  # no retries on a read-only or missing store
    assert row.status == code and says in _one_line(row.err), row.err
    after, (out, _), untouched = row.after(), row.args, row.untouched
    if name == 'full_disk_over_an_old_model':  # the old model survives and still loads
      assert models.load(str(out))[1]['params']
      partial = set(os.listdir(untouched)) - {'filler', 'out'}  # at most a dying writer's
      assert not any(os.path.exists(untouched / p / 'model.json') for p in partial)
      after = {k: v for k, v in after.items() if k.split('/')[0] not in partial}
    assert after == row.before


def test_internal_error_is_one_line_naming_its_log(monkeypatch, capsys, tmp_path):
  def bug(*args, **kwargs):
    raise KeyError('a bug')
  monkeypatch.setattr(import_torch, 'convert_state_dict', bug)
  rc, err = _cli(monkeypatch, capsys, tmp_path / 'out')
  assert rc == 1 and err.startswith('error: internal error (KeyError'), err
  log = err.split('the traceback is in ')[1].split('. Please')[0]
  assert "KeyError: 'a bug'" in open(log).read()
  assert not (tmp_path / 'out').exists()
