"""Helpers of the end-to-end tests: the smoke config on fake Fashion-MNIST, the CLI."""
import json
import os
import subprocess
import sys

from aikd_jax import checkpointing, results
from configs import demo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT_KEYS = set(results.KEYS)
# Keys that differ between equal runs: wall-clock timing and where/when the code ran.
RUN_SPECIFIC_KEYS = ('train_time_s', 'images_per_s', 'throughput', 'provenance')


def comparable(result: dict) -> dict:
  """results.json without the keys that differ between two runs of the same numbers."""
  return {k: v for k, v in result.items() if k not in RUN_SPECIFIC_KEYS}


def set_keys(config, overrides: dict):
  """Sets dotted keys ('optim.lr') of a ConfigDict or a plain dict; returns `config`."""
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def smoke_config(data_dirs, **overrides):
  c = demo.get_config('smoke')
  c.data.train_subset = None
  c.data.eval_subset = None
  c.data.manual_dir = data_dirs['manual_dir']
  c.data.tfds_dir = data_dirs['tfds_dir']
  return set_keys(c, overrides)


def cli_command(workdir, data_dirs, *flags, devices=1):
  """(argv, env) of `python -m aikd_jax.main` on the smoke config with `devices` CPUs."""
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  args = [sys.executable, '-m', 'aikd_jax.main', '--config=configs/demo.py:smoke',
          f'--workdir={workdir}', '--config.data.train_subset=96',
          f'--config.data.manual_dir={data_dirs["manual_dir"]}',
          f'--config.data.tfds_dir={data_dirs["tfds_dir"]}', *flags]
  return args, env


def cli(workdir, data_dirs, *flags, devices=1):
  """Runs `python -m aikd_jax.main` on the smoke config; returns the CompletedProcess."""
  args, env = cli_command(workdir, data_dirs, *flags, devices=devices)
  return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def start_cli_until(workdir, data_dirs, marker: str, *flags):
  """Starts the CLI on the smoke config; returns the process once stderr shows `marker`."""
  args, env = cli_command(workdir, data_dirs, *flags)
  proc = subprocess.Popen(args, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
  for line in proc.stderr:
    if marker in line:
      return proc
  proc.wait()
  raise AssertionError(f'the run ended (exit {proc.returncode}) before printing {marker!r}')


def start_long_student(finished, data_dirs, workdir):
  """A 200-epoch student against the session's finished superior, at its second step."""
  return start_cli_until(str(workdir), data_dirs, 'student epoch 1/200 step 2/',
                         f'--config.superior_workdir={finished[0]}', '--config.num_epochs=200')


def read_json(path):
  with open(path) as f:
    return json.load(f)


def params_of(phase_dir):
  return checkpointing.load_model(os.path.join(phase_dir, 'model'))[1]


def count_convs(jaxpr) -> int:
  """Convolutions in a jaxpr, including those inside cond branches and other sub-jaxprs."""
  count = 0
  for eqn in jaxpr.eqns:
    count += eqn.primitive.name == 'conv_general_dilated'
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        sub = getattr(sub, 'jaxpr', sub)  # ClosedJaxpr -> Jaxpr
        if hasattr(sub, 'eqns'):
          count += count_convs(sub)
  return count
