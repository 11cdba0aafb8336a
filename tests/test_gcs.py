"""The program's writers and readers on gs://, against a local GCS (fake-gcs-server).

The clients are the production ones: TensorFlow's GCS file system (epath, the TensorBoard
writer) and Orbax's TensorStore; tests/gcs_emulator.py says how each reaches the emulator.
"""
import os

from etils import epath
import numpy as np
import pytest

from aikd_jax import checkpointing, console, models, paths, preflight, results, run
from aikd_jax import shared_workdir, workdir_lock
from tests.gcs_emulator import LocalGcs


@pytest.fixture(scope='module')
def gcs(tmp_path_factory):
  try:
    local = LocalGcs(str(tmp_path_factory.mktemp('gcs')))
  except (OSError, RuntimeError) as e:  # no bundled binary for this platform
    pytest.skip(f'fake-gcs-server does not start here: {e}')
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
  import jax  # pylint: disable=g-import-not-at-top
  phase = 'gs://bkt/w/superior'
  logits = np.random.default_rng(0).normal(size=(20, 10)).astype(np.float32)
  labels = np.arange(20) % 10
  monkeypatch.setattr(results, 'provenance', lambda c: {})
  results.write(phase, {'top1_err': 1.0}, logits, labels, None, 'superior')
  names = sorted(p.name for p in epath.Path(phase).iterdir())
  assert names == ['predictions.npz', 'reliability.png', 'results.json']
  assert run._is_finished(phase)  # pylint: disable=protected-access
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


def test_workdir_checks_lock_and_logs_on_gcs(gcs, tmp_path, monkeypatch):
  del gcs
  monkeypatch.setattr(console, 'LOCAL_LOG_ROOT', str(tmp_path / 'logs'))
  assert console.local_log_dir('gs://bkt/w').startswith(str(tmp_path / 'logs'))
  with workdir_lock.held('gs://bkt/w2'):  # no lock on object stores, a warning instead
    assert not epath.Path('gs://bkt/w2/.lock').exists()
  shared_workdir.check('gs://bkt/w2', 1)  # one process: nothing to check
