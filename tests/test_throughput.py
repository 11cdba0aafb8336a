"""throughput.py: XLA FLOP counts against hand counts, peak lookup, MFU, profiling."""
import glob
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import pytest

from aikd_jax import throughput

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B, I, H, O = 8, 16, 32, 4


def _mlp(x, w1, w2):
  return jnp.dot(jnp.dot(x, w1), w2)


def _args():
  return jnp.zeros((B, I)), jnp.zeros((I, H)), jnp.zeros((H, O))


def test_step_flops_of_a_matmul_chain_is_the_hand_count():
  compiled = jax.jit(_mlp).lower(*_args()).compile()
  assert throughput.step_flops(compiled) == 2 * B * I * H + 2 * B * H * O


def test_step_flops_of_a_gradient_counts_the_backward_matmuls():
  def loss(w1, w2, x):
    return jnp.sum(jax.nn.relu(jnp.dot(jax.nn.relu(jnp.dot(x, w1)), w2)))
  x, w1, w2 = _args()
  compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(w1, w2, x).compile()
  # Forward 2BIH + 2BHO; backward dW2 = h^T g (2BHO), g_h = g W2^T (2BHO), dW1 = x^T g_h
  # (2BIH); no gradient to x. Elementwise ops (relu, masks, sum) add a little.
  matmuls = 4 * B * I * H + 6 * B * H * O
  assert matmuls <= throughput.step_flops(compiled) <= 1.1 * matmuls


def test_step_flops_of_a_lowered_function():
  assert throughput.step_flops(jax.jit(_mlp).lower(*_args())) == 2 * B * I * H + 2 * B * H * O


class _FakeCompiled:

  def __init__(self, analysis):
    self.analysis = analysis

  def cost_analysis(self):
    return self.analysis


@pytest.mark.parametrize('analysis, expected', [
    ([{'flops': 7.0}], 7.0),  # older jax: a list of one dict per executable
    ({'flops': 7.0}, 7.0),
    ([], None), ({}, None), (None, None), ({'bytes accessed': 3.0}, None)])
def test_step_flops_reads_dicts_and_lists(analysis, expected):
  assert throughput.step_flops(_FakeCompiled(analysis)) == expected


def test_step_flops_of_a_sharded_program_counts_all_devices():
  """XLA analyses one device's partition; step_flops multiplies by the 4 devices."""
  code = textwrap.dedent('''
      import jax, jax.numpy as jnp
      from jax.sharding import NamedSharding, PartitionSpec as P
      from aikd_jax import throughput
      mesh = jax.make_mesh((4,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
      x = jax.device_put(jnp.zeros((64, 16)), NamedSharding(mesh, P('data')))
      w = jax.device_put(jnp.zeros((16, 32)), NamedSharding(mesh, P()))
      compiled = jax.jit(lambda x, w: jnp.dot(x, w)).lower(x, w).compile()
      print(compiled.cost_analysis()['flops'], throughput.step_flops(compiled))
  ''')
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
             JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120, check=True).stdout.split()
  per_device, total = float(out[-2]), float(out[-1])
  assert per_device == 2 * 16 * 16 * 32  # a quarter of the batch
  assert total == 2 * 64 * 16 * 32


@pytest.mark.parametrize('kind, dtype, expected', [
    ('NVIDIA H100 80GB HBM3', 'bfloat16', 989.5e12),
    ('NVIDIA H100 80GB HBM3', 'float32', 494.5e12),
    ('NVIDIA H100 PCIe', 'bfloat16', 756.5e12),
    ('NVIDIA H100 NVL', 'bfloat16', 835.5e12),
    ('NVIDIA H200', 'bfloat16', 989.5e12),
    ('NVIDIA H200 NVL', 'float32', 417.5e12),
    ('NVIDIA A100-SXM4-80GB', 'bfloat16', 312e12),
    ('NVIDIA A100-PCIE-40GB', 'float32', 156e12),
    ('NVIDIA L4', 'bfloat16', 121e12),
    ('Tesla V100-SXM2-16GB', 'float32', 15.7e12),
    ('Tesla V100-PCIE-32GB', 'float32', 14e12),
    ('Tesla V100-SXM2-16GB', 'bfloat16', None),
    ('TPU v4', 'bfloat16', 275e12),
    ('TPU v5 lite', 'bfloat16', 197e12),
    ('TPU v5e', 'float32', 197e12),
    ('TPU v5', 'bfloat16', 459e12),
    ('TPU v5p', 'bfloat16', 459e12),
    ('TPU v6 lite', 'bfloat16', 918e12),
    ('cpu', 'float32', None),
    ('NVIDIA L40S', 'bfloat16', None),  # not an L4
    ('NVIDIA GeForce RTX 4090', 'bfloat16', None),
    ('TPU v4 lite', 'bfloat16', None),  # v4i: not a v4
    ('TPU v4', 'float16', None),  # unknown dtype
])
def test_device_peak_flops(kind, dtype, expected):
  assert throughput.device_peak_flops(kind, dtype) == expected


def test_every_peak_entry_is_reachable_and_bf16_is_not_slower():
  for key, peaks in throughput.PEAK_FLOPS.items():
    assert throughput.peak_key(key) == key
    if peaks['bfloat16'] is not None:
      assert peaks['bfloat16'] >= peaks['float32'] > 1e12


def test_mfu_arithmetic():
  # 1 TFLOP per step at 10 steps/s = 10 TFLOP/s over 4 devices of 5 TFLOP/s each.
  assert throughput.mfu(1e12, 10.0, 4, 5e12) == pytest.approx(0.5)


def test_throughput_summary():
  s = throughput.throughput_summary(global_batch=128, step_time_s=0.5, num_devices=2,
                                    flops_per_step=4e12, peak=8e12)
  assert s == {'global_batch': 128, 'images_per_s_per_device': 128.0,
               'flops_per_step': 4e12, 'mfu': pytest.approx(0.5)}
  for flops, peak in [(4e12, None), (None, 8e12)]:
    s = throughput.throughput_summary(global_batch=128, step_time_s=0.5, num_devices=2,
                                      flops_per_step=flops, peak=peak)
    assert s['mfu'] is None and s['images_per_s_per_device'] == 128.0


def test_profile_action_off():
  assert throughput.profile_action('/nonexistent', 0) is None
  assert throughput.profile_action('/nonexistent', None) is None


def test_profile_action_writes_a_trace(tmp_path):
  action = throughput.profile_action(str(tmp_path), profile_steps=2, first_step=3)
  f = jax.jit(lambda x: x @ x)
  x = jnp.ones((8, 8))
  for step in range(1, 8):
    x = f(x) / 8
    jax.block_until_ready(x)
    action(step)
  traces = glob.glob(str(tmp_path / 'plugins' / 'profile' / '*' / '*.xplane.pb'))
  assert len(traces) == 1 and os.path.getsize(traces[0]) > 0
