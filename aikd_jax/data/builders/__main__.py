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

from aikd_jax import console
from aikd_jax.data import builders
from aikd_jax.errors import UserError

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
  builder = tfds.builder(args.name, data_dir=args.data_dir)
  if args.name in DOWNLOAD_BUILDERS:
    builder.download_and_prepare()
    _report(builder)
    return
  data_dir_root = os.path.dirname(os.path.dirname(os.fspath(builder.data_dir)))  # root/name/version
  manual_dir = args.manual_dir or os.path.join(data_dir_root, 'downloads', 'manual')
  try:
    type(builder).check_manual_dir(manual_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  except UserError as e:
    console.fail(str(e), e.exit_code)
  _report(builder)


def _report(builder) -> None:
  for split, info in builder.info.splits.items():
    print(f'{builder.name} {split}: {info.num_examples} examples in {builder.data_dir}')


if __name__ == '__main__':
  main()
