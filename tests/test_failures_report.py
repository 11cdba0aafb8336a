"""`python -m aikd_jax.report` under hostile input: each case is one row of a table.

A row: how to build the input (a folder of runs and the command's arguments), the exit
status, a line that must appear on stderr, and what must be left untouched. Unusable
inputs are skipped with one `warning:` line naming them and the report goes on; the
report fails (one `error:` line, exit 4) only when no run is usable or --out cannot be
written. Every row also checks that no traceback is printed and that an existing
report.md is either replaced whole or left as it was.
"""
import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from aikd_jax import paths, report
from tests.test_report import _phase, _write_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OLD_REPORT = '# an earlier report\n'
_GOOD = (20.0, 5.0, 80.0, 14.0, 2.0)


def _good_run(root, name='good', seed=0, predictions=True):
  """A usable AI-KD student (with predictions: the reliability figure reads them)."""
  rng = np.random.default_rng(seed)
  preds = {'logits': rng.normal(size=(40, 4)).astype(np.float32),
           'labels': np.arange(40) % 4} if predictions else None
  path = os.path.join(root, name, 'student')
  _phase(path, _GOOD, method='aikd', seed=seed, phase='student', predictions=preds)
  return os.path.join(path, 'results.json')


def _results(root, name, **fields):
  """A results.json of a run whose fields are replaced by `fields`."""
  path = os.path.join(root, name, 'student', 'results.json')
  _phase(os.path.dirname(path), _GOOD, method='aikd', seed=1, phase='student')
  with open(path) as f:
    data = json.load(f)
  data.update(fields)
  _write_json(path, data)
  return path


def _raw(root, name, filename, content: bytes):
  path = os.path.join(root, name, 'student', filename)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(content)
  return path


def _npz(root, name, **arrays):
  _results(root, name)
  path = os.path.join(root, name, 'student', 'predictions.npz')
  np.savez(path, **arrays)
  return path


def _truncated_npz(root, name):
  path = _npz(root, name, logits=np.zeros((40, 4), np.float32), labels=np.zeros(40, np.int32))
  with open(path, 'rb') as f:
    data = f.read()
  with open(path, 'wb') as f:
    f.write(data[:len(data) // 2])
  return path


# Each builder: (runs folder, tmp, out folder) -> (the command's arguments, the files that
# must stay untouched). The out folder holds an earlier report.md.
def _bad_results(**fields):
  def build(runs, tmp, out):
    return [runs, '--out', out], [_good_run(runs), _results(runs, 'bad', **fields)]
  return build


def _bad_file(filename, content):
  def build(runs, tmp, out):
    return [runs, '--out', out], [_good_run(runs), _raw(runs, 'bad', filename, content)]
  return build


def _bad_npz(make):
  def build(runs, tmp, out):
    return [runs, '--out', out], [_good_run(runs), make(runs, 'bad')]
  return build


def _only(make):
  def build(runs, tmp, out):
    return [runs, '--out', out], [make(runs)]
  return build


def _out_file(runs, tmp, out):
  path = os.path.join(tmp, 'out')
  with open(path, 'w') as f:
    f.write('not a folder\n')
  return [runs, '--out', path], [_good_run(runs), path]


def _out_below_file(runs, tmp, out):
  parent = os.path.join(tmp, 'file')
  with open(parent, 'w') as f:
    f.write('a file\n')
  return [runs, '--out', os.path.join(parent, 'report')], [_good_run(runs), parent]


def _flags(*flags):
  def build(runs, tmp, out):
    return [runs, '--out', out, *flags], [_good_run(runs)]
  return build


CASES = [
    # (id, build, exit status, a line that must appear)
    ('method_config_is_a_string', _bad_results(method_config='fast'), 0,
     'warning: skipped {runs}/bad/student/results.json: method_config is "fast", not an object'),
    ('method_is_an_int', _bad_results(method=3), 0,
     'warning: skipped {runs}/bad/student/results.json: method is 3, not a string'),
    ('dataset_is_a_dict', _bad_results(dataset={'name': 'cifar100'}), 0,
     'dataset is {"name": "cifar100"}, not a string'),
    ('seed_is_a_string', _bad_results(seed='one'), 0, 'seed is "one", not an integer'),
    ('metric_is_a_string', _bad_results(top1_err='twenty'), 0,
     'top1_err is "twenty", not a number'),
    ('provenance_config_is_a_list', _bad_results(provenance={'config': [1]}), 0,
     'provenance.config is not an object'),
    # Odd but usable: reported (its row named by the odd value), no line on stderr.
    ('config_value_is_a_list_of_objects', _bad_results(provenance={'config': {
        'model': {'arch': 'preact_resnet18', 'width': [{'odd': 1}]}}}), 0, ''),
    ('results_not_an_object', _bad_file('results.json', b'[1, 2]'), 0,
     'holds a JSON list, not an object'),
    ('results_truncated', _bad_file('results.json', b'{"top1_err": 1'), 0,
     'warning: skipped {runs}/bad/student/results.json: cannot read it'),
    ('results_empty', _bad_file('results.json', b''), 0, 'cannot read it'),
    ('npz_truncated', _bad_npz(_truncated_npz), 0,
     'warning: skipped {runs}/bad/student/predictions.npz: cannot read it'),
    ('npz_empty', _bad_npz(lambda r, n: (_results(r, n), _raw(r, n, 'predictions.npz', b''))[1]),
     0, 'skipped {runs}/bad/student/predictions.npz: cannot read it'),
    ('npz_logits_1d', _bad_npz(lambda r, n: _npz(r, n, logits=np.zeros(40, np.float32),
                                                 labels=np.zeros(40, np.int32))),
     0, 'logits are float32 (40,), not float [examples, classes]'),
    ('npz_labels_mismatch', _bad_npz(lambda r, n: _npz(r, n, logits=np.zeros((40, 4), np.float32),
                                                       labels=np.zeros(39, np.int32))),
     0, 'labels are int32 (39,), not int [40]'),
    ('npz_labels_out_of_range', _bad_npz(lambda r, n: _npz(
        r, n, logits=np.zeros((40, 4), np.float32), labels=np.full(40, 7, np.int32))),
     0, 'labels outside [0, 4)'),
    ('npz_without_labels', _bad_npz(lambda r, n: _npz(r, n, logits=np.zeros((40, 4), np.float32))),
     0, 'it has no logits or no labels'),
    ('config_json_not_an_object', _bad_file('../config.json', b'"aikd"'), 0,
     'warning: skipped {runs}/bad/config.json: holds a JSON str, not an object'),
    ('config_json_data_is_a_string', _bad_file('../config.json', b'{"data": "cifar100"}'), 0,
     'data.name is missing or not a string'),
    ('only_run_unusable', _only(lambda r: _results(r, 'bad', seed=[0])), 4,
     'error: no usable results.json below {runs} (0 phases pending)'),
    ('out_is_a_file', _out_file, 4, 'error: --out {tmp}/out is a file, not a folder'),
    ('out_below_a_file', _out_below_file, 4, 'is below the file {tmp}/file'),
    ('tsne_classes_zero', _flags('--tsne_classes', '0'), 2,
     "error: bad flag: flag --tsne_classes=0: must be >= 1"),
    ('tsne_max_per_class_text', _flags('--tsne_max_per_class', 'many'), 2,
     "flag --tsne_max_per_class=many: invalid literal for int()"),
    ('tsne_perplexity_negative', _flags('--tsne_perplexity=-5'), 2, '--tsne_perplexity=-5.0: must be > 0 and finite'),
    ('tsne_perplexity_nan', _flags('--tsne_perplexity', 'nan'), 2, '--tsne_perplexity=nan: must be > 0 and finite'),
    ('tsne_perplexity_inf', _flags('--tsne_perplexity', 'inf'), 2, '--tsne_perplexity=inf: must be > 0 and finite'),
    ('unknown_layout', _flags('--layout', 'wide'), 2, "flag --layout=wide: value should be one of <by_setting|paper>"),
    ('unknown_flag', _flags('--colour'), 2, "error: bad flag: Unknown command line flag 'colour'"),
    ('no_folder', lambda runs, tmp, out: (['--out', out], [_good_run(runs)]), 2,
     'error: expected at least one DIR'),
    ('missing_folder', lambda runs, tmp, out: ([os.path.join(tmp, 'nope'), '--out', out],
                                               [_good_run(runs)]), 2,
     'error: {tmp}/nope is not a folder'),
]


def _fill(text, runs, tmp):
  return text.replace('{runs}', runs).replace('{tmp}', tmp)


def _contents(paths_):
  out = {}
  for p in paths_:
    with open(p, 'rb') as f:
      out[p] = f.read()
  return out


def _check_stderr(err: str, code: int, line: str):
  lines = [l for l in err.splitlines() if l.strip()]
  assert line in err, err
  assert 'Traceback' not in err, err
  errors = [l for l in lines if l.startswith('error:')]
  if code:
    assert len(errors) == 1 and lines[-1] == errors[0], err
  else:
    assert not errors, err
  assert all(l.startswith(('warning:', 'error:')) for l in lines), err


@pytest.mark.parametrize('build,code,line', [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_input(tmp_path, capsys, build, code, line):
  runs, tmp, out = str(tmp_path / 'runs'), str(tmp_path), str(tmp_path / 'report')
  os.makedirs(runs)
  os.makedirs(out)
  report_md = os.path.join(out, 'report.md')
  with open(report_md, 'w') as f:
    f.write(OLD_REPORT)
  argv, untouched = build(runs, tmp, out)
  before = _contents(untouched)
  assert report.main(argv) == code
  _check_stderr(capsys.readouterr().err, code, _fill(line, runs, tmp))
  assert _contents(untouched) == before
  if code == 0:
    with open(report_md) as f:
      text = f.read()
    assert text.startswith('# Results') and 'finished runs' in text
    assert os.path.exists(os.path.join(out, 'runs.csv'))
  else:
    with open(report_md) as f:
      assert f.read() == OLD_REPORT


# -- the disk: read-only or full while writing -----------------------------------------


@pytest.mark.parametrize('error,code,says', [
    (OSError(errno.EROFS, 'Read-only file system'), 4, 'error: --out {out} cannot be written'),
    (PermissionError(errno.EACCES, 'Permission denied'), 4,
     'error: --out {out} cannot be written'),
    (OSError(errno.ENOSPC, 'No space left on device'), 5,
     'error: --out {out}: the disk is full'),
    (KeyboardInterrupt(), 130, 'error: interrupted; the outputs written so far are whole'),
])
def test_failing_write_keeps_the_old_report_whole(tmp_path, capsys, monkeypatch, error, code,
                                                   says):
  """The write fails after the temporary file was opened: report.md stays the old one and
  no temporary file is left (paths.write_bytes_atomic)."""
  runs, out = str(tmp_path / 'runs'), tmp_path / 'out'
  _good_run(runs, predictions=False)
  out.mkdir()
  (out / 'report.md').write_text(OLD_REPORT)

  def fail(fd):
    raise error
  monkeypatch.setattr(paths.os, 'fsync', fail)
  assert report.main([runs, '--out', str(out)]) == code
  _check_stderr(capsys.readouterr().err, code, says.replace('{out}', str(out)))
  assert (out / 'report.md').read_text() == OLD_REPORT
  assert sorted(os.listdir(out)) == ['report.md']


def test_read_only_out_is_refused_before_reading(tmp_path, capsys, monkeypatch):
  """As root every folder is writable, so the permission check is simulated."""
  runs, out = str(tmp_path / 'runs'), tmp_path / 'ro' / 'report'
  _good_run(runs)
  (tmp_path / 'ro').mkdir()
  real_access = os.access
  monkeypatch.setattr(report.os, 'access',
                      lambda p, m: False if p == str(tmp_path / 'ro') else real_access(p, m))
  assert report.main([runs, '--out', str(out)]) == 4
  _check_stderr(capsys.readouterr().err, 4,
                f'error: --out {out} cannot be written ({tmp_path}/ro is read-only)')
  assert not out.exists()


# -- a folder name that is not UTF-8: the real process (stderr is a real stream) --------


def test_non_utf8_folder_is_skipped_with_one_warning(tmp_path):
  runs = os.fsencode(str(tmp_path / 'runs'))
  good = _good_run(str(tmp_path / 'runs'), predictions=False)
  bad = os.path.join(runs, b'caf\xe9', b'student')
  os.makedirs(bad)
  with open(good, 'rb') as f:
    data = f.read()
  with open(os.path.join(bad, b'results.json'), 'wb') as f:
    f.write(data)
  out = tmp_path / 'out'
  env = dict(os.environ, PYTHONIOENCODING='utf-8')
  proc = subprocess.run([sys.executable, '-m', 'aikd_jax.report', str(tmp_path / 'runs'),
                         '--out', str(out)], cwd=ROOT, capture_output=True, text=True, env=env,
                        timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr
  _check_stderr(proc.stderr, 0, f'warning: skipped {tmp_path}/runs/caf\\xe9/student/'
                                'results.json: its folder name is not valid UTF-8; rename it')
  rows = (out / 'runs.csv').read_text().splitlines()
  assert len(rows) == 2 and rows[1].endswith(os.path.dirname(good))  # header + the good run
  assert '1 finished runs' in (out / 'report.md').read_text()
