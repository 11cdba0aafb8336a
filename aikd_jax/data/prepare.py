"""A dataset's TFDS builder, ready to read: prepared from local files first if it can be.

`ready_builder` is the one entry point (the pipeline's constructor calls it). A dataset
with a manual dir (Fashion-MNIST's IDX files, the archives of `builders/manual.py`) is
prepared on first use, in seconds to minutes; any other must already be prepared, else
one `DataError` line says how to prepare it.
"""
import os

from absl import logging
import tensorflow_datasets as tfds

from aikd_jax import paths
from aikd_jax.data import builders  # noqa: F401  (registers our TFDS builders)
from aikd_jax.data import datasets
from aikd_jax.errors import DataError, UserError


def ready_builder(spec: datasets.DatasetSpec, tfds_dir: str | None, manual_dir: str | None):
  """The TFDS builder of `spec`, prepared from local files first if it can be.

  `tfds_dir` and `manual_dir` may be local folders (made absolute) or gs://... URLs.
  """
  tfds_dir = paths.absolute(tfds_dir) if tfds_dir else None
  manual_dir = paths.absolute(manual_dir) if manual_dir else None
  bucket = paths.missing_bucket(tfds_dir or '')
  if bucket:
    raise DataError(f'--config.data.tfds_dir {tfds_dir}: the bucket {bucket} does not exist or '
                    'these credentials cannot see it; create it or fix the name')
  builder = tfds.builder(spec.tfds_name, data_dir=tfds_dir)
  if _has_data(builder, spec.train_split):
    return builder
  if spec.manual_dir is None:
    root = tfds_dir or tfds.core.constants.DATA_DIR
    raise DataError(
        f'Dataset {spec.tfds_name} is not prepared in {root} (looked in {builder.data_dir}): '
        f'run `python -m aikd_jax.data.builders {spec.tfds_name} --data_dir={root}` on a '
        'machine with network or copy a prepared folder there, and set --config.data.tfds_dir')
  if manual_dir is None:
    manual_dir = spec.manual_dir
    if tfds_dir and manual_dir == datasets.TFDS_MANUAL_DIR:  # follow a custom data dir
      manual_dir = paths.join(tfds_dir, 'downloads', 'manual')
  _prepare_from_manual_dir(builder, manual_dir)
  return tfds.builder(spec.tfds_name, data_dir=tfds_dir)


def _has_data(builder, split: str) -> bool:
  try:
    builder.as_dataset(split=split)  # under tfds.testing.mock_data this always works
  except AssertionError:  # TFDS: "could not find data in ..."
    return False
  return True


def _prepare_from_manual_dir(builder, manual_dir: str) -> None:
  """Prepares a builder from its manual dir (seconds); tolerates a concurrent process."""
  check = getattr(type(builder), 'check_manual_dir', None)
  if check is not None:
    check(manual_dir)
  logging.info('Preparing %s from %s into %s', builder.name, manual_dir, builder.data_dir)
  config = tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir))
  try:
    builder.download_and_prepare(download_config=config)
  except UserError:
    raise
  except Exception:  # pylint: disable=broad-except
    if not builder.is_prepared():  # else another process prepared it at the same time
      raise
