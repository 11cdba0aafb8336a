"""The commands' one start-up (aikd_jax/cli.py): flags per parse, --help, positional words."""
import importlib
import subprocess
import sys

from absl import flags
import pytest

from aikd_jax import cli
from aikd_jax.errors import ConfigError
from aikd_jax.tools import import_torch

MODULES = ('aikd_jax.main', 'aikd_jax.sweep', 'aikd_jax.report', 'aikd_jax.data.builders.__main__',
           'aikd_jax.tools.import_torch')


def _commands():
  return [importlib.import_module(m) for m in MODULES]


def test_every_command_imports_side_by_side_and_has_a_run_entry_point():
  for module in _commands():
    assert isinstance(module.COMMAND, cli.Command) and callable(module.run), module.__name__
    for _ in range(2):  # defined on a fresh FlagValues each time: no duplicate-flag error
      before = set(flags.FLAGS)
      values = flags.FlagValues()
      module.COMMAND.define_flags(values)
      # ...and never on absl's global FLAGS (main and sweep share --workdir, --config; other
      # modules imported in the same test process, e.g. benchmarks, may define an --out)
      assert set(flags.FLAGS) == before and list(values), module.__name__


def test_a_second_parse_starts_from_the_defaults():
  first = cli.parse(import_torch.COMMAND, ['p', '--num-classes=7', '--overwrite', '--arch=a',
                                           '--input=i', '--output=o'])
  assert first.options('num_classes', 'overwrite').__dict__ == {'num_classes': 7,
                                                                 'overwrite': True}
  with pytest.raises(SystemExit) as e:  # the same flags again, without the required ones
    cli.parse(import_torch.COMMAND, ['p', '--overwrite'])
  assert e.value.code == ConfigError.exit_code


@pytest.mark.parametrize('words,says', [
    ([], None), (['a'], "unexpected argument 'a': every option is a flag")])
def test_positional_words(capsys, words, says):
  command = cli.Command('demo', 'Demo.', lambda values: None, lambda args: len(args.words))
  assert cli.main(command, words) == (0 if says is None else ConfigError.exit_code)
  err = capsys.readouterr().err
  assert (says in err and err.count('\n') == 1) if says else not err


def test_an_internal_error_is_one_line_naming_its_log(capsys, tmp_path):
  def body(args):
    raise KeyError('a bug')
  command = cli.Command('demo', 'Demo.', lambda values: None, body,
                        log_dir=lambda args: str(tmp_path))
  assert cli.main(command, []) == 1
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and err.startswith('error: internal error (KeyError'), err
  assert "KeyError: 'a bug'" in (tmp_path / 'error.log').read_text()


def test_help_lists_the_flags_and_exits_0():
  proc = subprocess.run([sys.executable, '-m', 'aikd_jax.tools.import_torch', '--help'],
                        capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.startswith('Imports a PyTorch state_dict')
  assert '--num_classes:' in proc.stdout and '--num-classes: Alias' in proc.stdout


def test_config_overrides_are_read_from_the_parsed_argv_not_sys_argv(capsys, tmp_path):
  from aikd_jax import main  # pylint: disable=g-import-not-at-top
  argv = ['--config=configs/demo.py:smoke', '--config.optim.lr=-1', f'--workdir={tmp_path}/wd']
  assert cli.main(main.COMMAND, argv) == ConfigError.exit_code
  assert 'optim.lr must be > 0, got -1.0' in capsys.readouterr().err
  assert not (tmp_path / 'wd').exists()
