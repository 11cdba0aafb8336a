"""benchmarks/torch_peer.py: a clear exit without torch; with torch, the same architecture."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'benchmarks', 'torch_peer.py')


def test_without_torch_one_line_and_status_2(tmp_path):
  (tmp_path / 'torch').mkdir()
  (tmp_path / 'torch' / '__init__.py').write_text('raise ImportError("no torch here")\n')
  env = dict(os.environ, PYTHONPATH=str(tmp_path))
  proc = subprocess.run([sys.executable, SCRIPT], env=env, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 2
  assert proc.stdout == ''
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and 'pip install torch' in lines[0]


@pytest.fixture(scope='module')
def peer():
  pytest.importorskip('torch', reason='torch is an optional extra (pip install torch)')
  sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
  import torch_peer  # pylint: disable=g-import-not-at-top
  return torch_peer


def _count(module):
  return sum(p.numel() for p in module.parameters())


def test_torch_model_and_critic_match_ours(peer):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from aikd_jax import models  # pylint: disable=g-import-not-at-top
  assert _count(peer.PreActResNet18(100)) == 11_217_444  # README's parameter count
  ours = models.create('preact_resnet18', 100, width=8)
  shapes = jax.eval_shape(lambda: ours.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  assert _count(peer.PreActResNet18(100, width=8)) == sum(
      x.size for x in jax.tree.leaves(shapes['params']))
  critic = jax.eval_shape(lambda: models.Critic().init(jax.random.key(0), jnp.zeros((4, 100))))
  assert _count(peer.make_critic(100)) == sum(x.size for x in jax.tree.leaves(critic['params']))


def test_torch_aikd_step_updates_student_and_critic_only(peer):
  import torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  steps = peer.TorchSteps(num_classes=10, width=4, device='cpu')
  before = {name: [p.detach().clone() for p in m.parameters()]
            for name, m in [('student', steps.student), ('superior', steps.superior),
                            ('previous', steps.previous), ('critic', steps.critic)]}
  steps.aikd(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))
  for name, m in [('student', steps.student), ('superior', steps.superior),
                  ('previous', steps.previous), ('critic', steps.critic)]:
    changed = any(not torch.equal(a, b) for a, b in zip(before[name], m.parameters()))
    assert changed == (name in ('student', 'critic')), name


@pytest.mark.slow
def test_side_by_side_output(peer):
  del peer
  proc = subprocess.run([sys.executable, SCRIPT, '--width=4', '--batch=8', '--warmup=0',
                         '--repeats=1'], capture_output=True, text=True, timeout=600,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = proc.stdout.splitlines()
  assert lines[2].split() == ['step', 'torch', 'ms', 'jax', 'ms', 'jax/torch']
  for line, method in zip(lines[3:5], ('baseline', 'aikd')):
    name, torch_ms, jax_ms, ratio = line.split()
    assert name == method and float(torch_ms) > 0 and float(jax_ms) > 0
    assert float(ratio) == pytest.approx(float(jax_ms) / float(torch_ms), rel=0.05, abs=0.01)
  assert lines[5].startswith('aikd / baseline: torch ')
