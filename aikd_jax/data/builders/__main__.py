"""Prepares a dataset of the registry in a TFDS data dir.

  python -m aikd_jax.data.builders tiny_imagenet --manual_dir=DIR [--data_dir=TFDS_DIR]
  python -m aikd_jax.data.builders cifar100 [--data_dir=TFDS_DIR]   # downloads

Our manual-download builders (`MANUAL_BUILDERS`) read the files the user downloaded;
each one's MANUAL_DOWNLOAD_INSTRUCTIONS say what to download. TFDS's own builders
(`DOWNLOAD_BUILDERS`) download, so they need a machine with network. (`tfds build` does
the same, but its command line needs apache_beam.) Training then reads the prepared data
with --config.data.tfds_dir=TFDS_DIR (the TFDS default data dir without --data_dir).
"""
import argparse
from collections.abc import Sequence
import os

import tensorflow_datasets as tfds

from aikd_jax import console, paths
from aikd_jax.data import builders
from aikd_jax.errors import OutOfSpaceError, UserError, WorkdirError, is_out_of_space

# TFDS's own builders of the registry's datasets; they download (network needed).
DOWNLOAD_BUILDERS = ('caltech_birds2011', 'cifar100', 'stanford_dogs')


def main(argv: Sequence[str] | None = None) -> None:
  """Parses `argv` (default: sys.argv[1:]) and prepares the named builder."""
  parser = argparse.ArgumentParser(
      prog='python -m aikd_jax.data.builders',
      description='Prepare a TFDS dataset from manually downloaded files.')
  parser.add_argument('name', choices=builders.MANUAL_BUILDERS + DOWNLOAD_BUILDERS,
                      help='TFDS name of the builder')
  parser.add_argument('--manual_dir', default=None,
                      help='folder with the downloaded files (default: '
                           '<data_dir>/downloads/manual)')
  parser.add_argument('--data_dir', default=None,
                      help='TFDS data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets); '
                           'training reads it through --config.data.tfds_dir')
  args = parser.parse_args(argv)
  console.hide_gpus_from_tf()
  data_dir = paths.absolute(args.data_dir or tfds.core.constants.DATA_DIR)
  try:
    _check_data_dir(data_dir)
    builder = tfds.builder(args.name, data_dir=data_dir)
    _prepare(builder, args.name, args.manual_dir, data_dir)
  except UserError as e:
    console.fail(str(e), e.exit_code)
  except Exception as e:  # pylint: disable=broad-except
    if not is_out_of_space(e):
      console.fail_internal(data_dir)  # the traceback goes to DATA_DIR/error.log
    console.fail(f'no space left on the device holding --data_dir {data_dir}: free space and '
                 'run the same command again', OutOfSpaceError.exit_code)
  _report(builder)


def _check_data_dir(data_dir: str) -> None:
  problem = paths.folder_problem(data_dir)
  if problem:
    raise WorkdirError(f'--data_dir {data_dir} cannot be written: {problem}; fix it or choose '
                       'another --data_dir')


def _prepare(builder, name: str, manual_dir: str | None, data_dir: str) -> None:
  if name in DOWNLOAD_BUILDERS:
    builder.download_and_prepare()
    return
  manual_dir = manual_dir or paths.join(data_dir, 'downloads', 'manual')
  type(builder).check_manual_dir(manual_dir)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))


def _report(builder) -> None:
  for split, info in builder.info.splits.items():
    print(f'{builder.name} {split}: {info.num_examples} examples in {builder.data_dir}')


if __name__ == '__main__':
  console.quiet_libraries(verbose=False)  # TFDS's and TF's lines: our one line is what counts
  try:
    main()
  except SystemExit as e:
    console.exit_after_failure(e.code)
    raise
