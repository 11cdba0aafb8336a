"""House rules of the package: private JAX in one place, TF's GPUs hidden at start-up."""
import ast
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, 'aikd_jax')


def _private_jax_uses() -> list[tuple[str, str]]:
  """(module path, innermost enclosing function) of every `jax._src` import in the package."""
  found = []
  for folder, _, files in os.walk(PACKAGE):
    for name in sorted(f for f in files if f.endswith('.py')):
      path = os.path.join(folder, name)
      with open(path) as f:
        tree = ast.parse(f.read())
      funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
      for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
          continue
        modules = [getattr(node, 'module', None) or ''] + [a.name for a in node.names]
        if any(m == 'jax._src' or m.startswith('jax._src.') for m in modules):
          around = [f for f in funcs if f.lineno <= node.lineno <= f.end_lineno]
          where = max(around, key=lambda f: f.lineno).name if around else '<module>'
          found.append((os.path.relpath(path, ROOT), where))
  return found


def test_private_jax_is_used_in_one_function_only():
  assert _private_jax_uses() == [('aikd_jax/distributed.py', 'kv_client')]


# Records TF's set_visible_devices calls: importing the data modules, then each command's
# start-up (main and sweep: until the trainer is imported; data.builders: until the
# empty --manual_dir fails).
_STARTUP_SCRIPT = r'''
import json, sys
import tensorflow as tf
calls = []
tf.config.set_visible_devices = lambda devices, kind=None: calls.append([list(devices), kind])
found = {}
from aikd_jax.data import augment, pipeline
found['import'], calls[:] = list(calls), []
from aikd_jax import cli, main
tmp = sys.argv[1]
found['main_exit'] = cli.main(main.COMMAND, ['--config=configs/demo.py:smoke',
                                             '--config.optim.lr=-1', '--workdir=' + tmp + '/wd'])
found['main'], calls[:] = list(calls), []
from aikd_jax import sweep
sweep._import_trainer(False, True)
found['sweep'], calls[:] = list(calls), []
from aikd_jax.data.builders import __main__ as builders_main
found['builders_exit'] = builders_main.main(['mit67', '--manual_dir=' + tmp,
                                             '--data_dir=' + tmp])
found['builders'] = list(calls)
print(json.dumps(found))
'''


def test_commands_hide_gpus_from_tf_at_start_up_not_at_import(tmp_path):
  out = subprocess.run([sys.executable, '-c', _STARTUP_SCRIPT, str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert out.returncode == 0, out.stderr
  found = json.loads(out.stdout.strip().splitlines()[-1])
  hidden = [[[], 'GPU']]
  assert found == {'import': [], 'main': hidden, 'main_exit': 2, 'sweep': hidden,
                   'builders': hidden, 'builders_exit': 3}
