"""launch/: shellcheck on every script, and each --dry-run prints well-formed commands."""
import os
import shlex
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, 'launch')
SCRIPTS = sorted(f for f in os.listdir(LAUNCH) if f.endswith(('.sh', '.sbatch')))
CONFIG, WORKDIR = 'configs/cub_r50.py', 'gs://bucket/aikd/cub r50'
EXTRA = ["--config.seed=1", "--config.data.tfds_dir=/data/it's here"]
REPO = 'https://example.com/me/aikd_jax.git'


def test_every_launcher_is_covered():
  assert SCRIPTS == ['gpu_single.sh', 'slurm_gpu.sbatch', 'tpu_vm.sh']
  for name in SCRIPTS:
    with open(os.path.join(LAUNCH, name)) as f:
      assert f.readline() == '#!/usr/bin/env bash\n', name


@pytest.mark.skipif(shutil.which('shellcheck') is None,
                    reason='shellcheck is not installed (`make test` installs it via apt-get)')
@pytest.mark.parametrize('name', SCRIPTS)
def test_shellcheck(name):
  proc = subprocess.run(['shellcheck', os.path.join(LAUNCH, name)], capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0, proc.stdout


def _dry_run(name, *args, env=None):
  proc = subprocess.run(['bash', os.path.join(LAUNCH, name), '--dry-run', *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=60,
                        env=dict(os.environ, **(env or {})))
  assert proc.returncode == 0, proc.stderr
  return [shlex.split(line) for line in proc.stdout.splitlines() if line.strip()]


def _assert_train_command(words, python):
  i = words.index('-m')
  assert words[i - 1] == python and words[i + 1] == 'aikd_jax.main'
  assert f'--config={CONFIG}' in words and f'--workdir={WORKDIR}' in words
  assert words[-len(EXTRA):] == EXTRA


def test_gpu_single_dry_run():
  [words] = _dry_run('gpu_single.sh', CONFIG, WORKDIR, *EXTRA)
  assert words[:2] == ['env', 'XLA_PYTHON_CLIENT_MEM_FRACTION=0.9']
  _assert_train_command(words, 'python')


def test_slurm_dry_run():
  [words] = _dry_run('slurm_gpu.sbatch', CONFIG, WORKDIR, *EXTRA)
  assert words[0] == 'srun'
  _assert_train_command(words, '.venv/bin/python')


def test_tpu_vm_dry_run():
  [words] = _dry_run('tpu_vm.sh', 'my-tpu', 'us-central2-b', CONFIG, WORKDIR, *EXTRA,
                     env={'REPO': REPO})
  assert words[:7] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'my-tpu', '--zone']
  assert words[7:9] == ['us-central2-b', '--worker=all'] and words[9] == '--command'
  remote = words[10]
  steps = [shlex.split(s) for s in remote.split(' && ')]  # the remote shell's commands
  assert ['git', 'clone', REPO, 'aikd_jax;', '}'] == steps[1][-5:]
  train = steps[-1]
  assert '--jax_distributed' in train
  _assert_train_command(train, '.venv/bin/python')
  assert "jax[tpu]==0.10.2" in steps[-2]


def test_tpu_vm_needs_repo():
  env = {k: v for k, v in os.environ.items() if k != 'REPO'}
  proc = subprocess.run(['bash', os.path.join(LAUNCH, 'tpu_vm.sh'), '--dry-run', 't', 'z',
                         CONFIG, WORKDIR], capture_output=True, text=True, timeout=60, env=env)
  assert proc.returncode == 2 and proc.stdout == ''
  assert len(proc.stderr.splitlines()) == 1 and 'set REPO' in proc.stderr


@pytest.mark.parametrize('name', SCRIPTS)
def test_usage_without_arguments(name):
  proc = subprocess.run(['bash', os.path.join(LAUNCH, name), '--dry-run'], capture_output=True,
                        text=True, timeout=60, env=dict(os.environ, REPO=REPO))
  assert proc.returncode == 2 and proc.stderr.startswith('usage:')
