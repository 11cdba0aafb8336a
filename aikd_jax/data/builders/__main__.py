"""Prepares a dataset of the registry in a TFDS data dir.

  python -m aikd_jax.data.builders tiny_imagenet --manual_dir=DIR [--data_dir=TFDS_DIR]
  python -m aikd_jax.data.builders cifar100 [--data_dir=TFDS_DIR]   # downloads

Our manual-download builders (`MANUAL_BUILDERS`) read the files the user downloaded;
each one's MANUAL_DOWNLOAD_INSTRUCTIONS say what to download. TFDS's own builders
(`DOWNLOAD_BUILDERS`) download, so they need a machine with network. (`tfds build` does
the same, but its command line needs apache_beam.) Training then reads the prepared data
with --config.data.tfds_dir=TFDS_DIR (the TFDS default data dir without --data_dir).
"""
from absl import flags
import tensorflow_datasets as tfds

from aikd_jax import cli, console, paths
from aikd_jax.data import builders
from aikd_jax.errors import ConfigError, OutOfSpaceError, UserError, WorkdirError
from aikd_jax.errors import is_out_of_space

# TFDS's own builders of the registry's datasets; they download (network needed).
DOWNLOAD_BUILDERS = ('caltech_birds2011', 'cifar100', 'stanford_dogs')


def _define_flags(values) -> None:
  flags.DEFINE_string('manual_dir', None, 'Folder with the downloaded files (default: '
                      '<data_dir>/downloads/manual).', flag_values=values)
  flags.DEFINE_string('data_dir', None, 'TFDS data dir (default: $TFDS_DATA_DIR or '
                      '~/tensorflow_datasets); training reads it through '
                      '--config.data.tfds_dir.', flag_values=values)


def _data_dir(args: cli.Args) -> str:
  return paths.absolute(args.flags.data_dir or tfds.core.constants.DATA_DIR)


def _main(args: cli.Args) -> None:
  """Prepares the builder NAME (the one positional word) in --data_dir."""
  name, data_dir = args.words[0], _data_dir(args)
  names = builders.MANUAL_BUILDERS + DOWNLOAD_BUILDERS
  if name not in names:
    raise ConfigError(f'unknown dataset {name!r}; choose one of: {", ".join(names)}')
  console.hide_gpus_from_tf()
  try:
    _check_data_dir(data_dir)
    builder = tfds.builder(name, data_dir=data_dir)
    _prepare(builder, name, args.flags.manual_dir, data_dir)
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    if not is_out_of_space(e):
      raise  # an internal error: cli writes its traceback to DATA_DIR/error.log
    raise OutOfSpaceError(f'no space left on the device holding --data_dir {data_dir}: free '
                          'space and run the same command again') from None
  _report(builder)


COMMAND = cli.Command('aikd_jax.data.builders', __doc__, _define_flags, _main, words='NAME',
                      log_dir=_data_dir)


def main(argv: list) -> int:
  """The command on `argv` (without the program's name); returns the exit status."""
  return cli.main(COMMAND, argv)


def run() -> None:
  """The `python -m aikd_jax.data.builders` process."""
  cli.run(COMMAND)


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
  run()
