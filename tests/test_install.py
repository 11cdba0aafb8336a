"""`pip install .` and the commands it installs, run outside the checkout.

The package is built and installed by pip (setuptools, pyproject.toml) into a fresh venv
whose only other site-packages is this interpreter's: pip runs with --no-index, so it
must find every pinned dependency of requirements.txt already there (the fresh-venv
install that downloads them is in docs/usage.md, *Installing*). The commands then run
from a folder outside the checkout, where only the installed copy can be imported.
"""
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

from tests import test_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What the build reads: pyproject.toml names the rest.
SOURCES = ('pyproject.toml', 'requirements.txt', 'requirements-test.txt', 'README.md',
           'aikd_jax')
# Each console script, its `python -m` module and a flag its --help must name.
COMMANDS = (('aikd-train', 'aikd_jax.main', '--workdir'),
            ('aikd-sweep', 'aikd_jax.sweep', '--submit'),
            ('aikd-report', 'aikd_jax.report', '--out'),
            ('aikd-prepare-data', 'aikd_jax.data.builders', '--manual_dir'),
            ('aikd-import-torch', 'aikd_jax.tools.import_torch', '--arch'))

pytestmark = pytest.mark.slow


def _pyproject_scripts() -> dict:
  import tomllib  # pylint: disable=g-import-not-at-top
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    return tomllib.load(f)['project']['scripts']


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
  """(venv bin folder, a folder outside the checkout to run in, its environment)."""
  tmp = tmp_path_factory.mktemp('install')
  src = tmp / 'src'
  for name in SOURCES:
    path = os.path.join(ROOT, name)
    if os.path.isdir(path):
      shutil.copytree(path, src / name, ignore=shutil.ignore_patterns('__pycache__'))
    else:
      src.mkdir(exist_ok=True)
      shutil.copy(path, src / name)
  venv = tmp / 'venv'
  subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], check=True)
  bin_dir = venv / 'bin'
  new_site = subprocess.run(
      [str(bin_dir / 'python'), '-c', 'import sysconfig; print(sysconfig.get_path("purelib"))'],
      check=True, capture_output=True, text=True).stdout.strip()
  with open(os.path.join(new_site, 'pinned_stack.pth'), 'w') as f:  # this venv's packages
    f.write('\n'.join({sysconfig.get_path('purelib'), sysconfig.get_path('platlib')}) + '\n')
  subprocess.run([sys.executable, '-m', 'pip', '--python', str(bin_dir / 'python'), 'install',
                  '-q', '--no-index', '--no-build-isolation', '--no-cache-dir', str(src)],
                 check=True, cwd=tmp)
  elsewhere = tmp / 'elsewhere'
  elsewhere.mkdir()
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  env.update(JAX_PLATFORMS='cpu', PATH=f'{bin_dir}{os.pathsep}{env["PATH"]}')
  return bin_dir, elsewhere, env


def _run(installed, *args, cwd=None):
  _, elsewhere, env = installed
  return subprocess.run(args, cwd=cwd or elsewhere, env=env, capture_output=True, text=True,
                        timeout=300)


def test_the_installed_copy_is_imported(installed):
  bin_dir, _, _ = installed
  out = _run(installed, str(bin_dir / 'python'), '-c',
             'import aikd_jax; print(aikd_jax.__file__)')
  assert out.returncode == 0, out.stderr
  assert out.stdout.startswith(str(bin_dir.parent)) and ROOT not in out.stdout


def test_every_command_has_a_console_script():
  assert sorted(_pyproject_scripts()) == sorted(c for c, _, _ in COMMANDS)


@pytest.mark.parametrize('script,module,flag', COMMANDS)
def test_console_script_and_module_help(installed, script, module, flag):
  bin_dir, _, _ = installed
  for command in ([str(bin_dir / script)], [str(bin_dir / 'python'), '-m', module]):
    out = _run(installed, *command, '--help')
    # absl's --help (aikd-train, aikd-sweep) exits with status 1, argparse's with 0.
    assert out.returncode in (0, 1), out.stderr
    assert flag in out.stdout and 'Traceback' not in out.stderr, (command, out.stderr)


def test_console_script_loads_a_config_that_imports_its_siblings(installed, tmp_path):
  bin_dir, _, _ = installed
  shutil.copytree(os.path.join(ROOT, 'configs'), tmp_path / 'configs',
                  ignore=shutil.ignore_patterns('__pycache__'))
  # demo.py imports configs.default; a bad value is refused only after the config loaded.
  out = _run(installed, str(bin_dir / 'aikd-train'), '--config=configs/demo.py:smoke',
             '--config.optim.lr=-1', f'--workdir={tmp_path / "wd"}', cwd=tmp_path)
  assert (out.returncode, out.stderr.strip().splitlines()[-1]) == (
      2, 'error: optim.lr must be > 0, got -1.0: fix --config.optim.lr')


def test_report_outside_the_checkout(installed, tmp_path):
  dirs = test_report._make_tree(str(tmp_path / 'runs'))  # pylint: disable=protected-access
  out_dir = tmp_path / 'report'
  bin_dir, _, _ = installed
  out = _run(installed, str(bin_dir / 'python'), '-m', 'aikd_jax.report', *dirs,
             '--out', str(out_dir))
  assert out.returncode == 0, out.stderr
  with open(test_report.GOLDEN) as f:
    assert (out_dir / 'report.md').read_text() == f.read()
