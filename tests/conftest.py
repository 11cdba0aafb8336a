"""Shared fixtures: fake Fashion-MNIST files and one finished smoke run per session."""
import pytest

from aikd_jax import run
from tests import fakes
from tests.runs import smoke_config


@pytest.fixture(scope='session')
def data_dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp('fashion')
  (root / 'idx').mkdir()
  fakes.write_fashion_files(str(root / 'idx'), n_train=96, n_test=40)
  return {'manual_dir': str(root / 'idx'), 'tfds_dir': str(root / 'tfds')}


@pytest.fixture(scope='session')
def finished(tmp_path_factory, data_dirs):
  workdir = str(tmp_path_factory.mktemp('run'))
  results = run.run(smoke_config(data_dirs), workdir)
  return workdir, results
