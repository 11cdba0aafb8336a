"""Throughput and model-FLOPs utilisation (MFU) of a jitted train step, and profiling.

Pure helpers: the loop (or a benchmark) measures steps per second and passes numbers in.

  compiled = jax.jit(train_step).lower(state, batch, superior).compile()
  summary = throughput_summary(global_batch=128, step_time_s=0.05,
                               num_devices=jax.device_count(),
                               flops_per_step=step_flops(compiled),
                               peak=device_peak_flops(jax.devices()[0].device_kind, 'float32'))

FLOPs come from XLA's cost analysis of the compiled program, so they count what the
devices execute (backward pass, optimizer and critic updates, replicated work on every
device), not an analytic model count.
"""
import re

import jax
from clu import periodic_actions

_T = 1e12

# Dense (no structured sparsity) peak FLOP/s of one JAX device, by dtype of the step.
# 'float32' is the rate at which XLA runs float32 matmuls and convolutions at JAX's
# default precision: on TPUs one bfloat16 MXU pass (Google publishes only the bf16 peak),
# on Ampere and newer NVIDIA GPUs TF32 tensor cores, on V100 (no TF32) plain FP32.
# V100 has no bfloat16 tensor cores, so its bfloat16 entry is None.
PEAK_FLOPS: dict[str, dict[str, float | None]] = {
    # Google Cloud TPU documentation, "TPU v4" system architecture: 275 TFLOPs bf16 per chip
    # (one JAX device per chip: megacore).
    'TPU v4': {'bfloat16': 275 * _T, 'float32': 275 * _T},
    # Google Cloud TPU documentation, "TPU v5e": 197 TFLOPs bf16 per chip.
    'TPU v5e': {'bfloat16': 197 * _T, 'float32': 197 * _T},
    # Google Cloud TPU documentation, "TPU v5p": 459 TFLOPs bf16 per chip.
    'TPU v5p': {'bfloat16': 459 * _T, 'float32': 459 * _T},
    # Google Cloud TPU documentation, "TPU v6e" (Trillium): 918 TFLOPs bf16 per chip.
    'TPU v6e': {'bfloat16': 918 * _T, 'float32': 918 * _T},
    # NVIDIA A100 Tensor Core GPU datasheet (SXM4 and PCIe alike): BF16 312, TF32 156 TFLOPS.
    'NVIDIA A100': {'bfloat16': 312 * _T, 'float32': 156 * _T},
    # NVIDIA H100 Tensor Core GPU datasheet, H100 SXM: BF16 1,979 / TF32 989 TFLOPS with
    # sparsity, half that dense.
    'NVIDIA H100 SXM': {'bfloat16': 989.5 * _T, 'float32': 494.5 * _T},
    # Same datasheet, H100 PCIe: BF16 1,513 / TF32 756 TFLOPS with sparsity.
    'NVIDIA H100 PCIe': {'bfloat16': 756.5 * _T, 'float32': 378 * _T},
    # Same datasheet, H100 NVL: BF16 1,671 / TF32 835 TFLOPS with sparsity.
    'NVIDIA H100 NVL': {'bfloat16': 835.5 * _T, 'float32': 417.5 * _T},
    # NVIDIA H200 Tensor Core GPU datasheet, H200 SXM: BF16 1,979 / TF32 989 TFLOPS with
    # sparsity, half that dense.
    'NVIDIA H200 SXM': {'bfloat16': 989.5 * _T, 'float32': 494.5 * _T},
    # Same datasheet, H200 NVL: BF16 1,671 / TF32 835 TFLOPS with sparsity.
    'NVIDIA H200 NVL': {'bfloat16': 835.5 * _T, 'float32': 417.5 * _T},
    # NVIDIA L4 Tensor Core GPU datasheet: BF16 242 / TF32 120 TFLOPS with sparsity.
    'NVIDIA L4': {'bfloat16': 121 * _T, 'float32': 60 * _T},
    # NVIDIA Tesla V100 GPU datasheet, V100 SXM2: single precision 15.7 TFLOPS.
    'NVIDIA V100 SXM2': {'bfloat16': None, 'float32': 15.7 * _T},
    # Same datasheet, V100 PCIe: single precision 14 TFLOPS.
    'NVIDIA V100 PCIe': {'bfloat16': None, 'float32': 14 * _T},
}

# jax.devices()[0].device_kind (lower-cased) -> PEAK_FLOPS key; the first match wins.
_KINDS: list[tuple[str, str]] = [
    (r'\btpu v4\b(?! ?lite)', 'TPU v4'),
    (r'\btpu v5 ?(lite|e)\b', 'TPU v5e'),
    (r'\btpu v5p?\b', 'TPU v5p'),
    (r'\btpu v6 ?(lite|e)\b', 'TPU v6e'),
    (r'\ba100\b', 'NVIDIA A100'),
    (r'\bh100\b.*\bpcie\b', 'NVIDIA H100 PCIe'),
    (r'\bh100\b.*\bnvl\b', 'NVIDIA H100 NVL'),
    (r'\bh100\b', 'NVIDIA H100 SXM'),
    (r'\bh200\b.*\bnvl\b', 'NVIDIA H200 NVL'),
    (r'\bh200\b', 'NVIDIA H200 SXM'),
    (r'\bl4\b', 'NVIDIA L4'),
    (r'\bv100\b.*\bpcie\b', 'NVIDIA V100 PCIe'),
    (r'\bv100\b', 'NVIDIA V100 SXM2'),
]


def peak_key(device_kind: str) -> str | None:
  """The PEAK_FLOPS entry of a `jax.Device.device_kind` string, or None if unknown."""
  kind = device_kind.lower()
  return next((key for pattern, key in _KINDS if re.search(pattern, kind)), None)


def device_peak_flops(device_kind: str, dtype: str = 'bfloat16') -> float | None:
  """Dense peak FLOP/s of one device of this kind for a `dtype` step; None if unknown."""
  key = peak_key(device_kind)
  return None if key is None else PEAK_FLOPS[key].get(str(dtype))


def _program_devices(compiled) -> int:
  """How many devices the (SPMD-partitioned) program runs on, from its input shardings."""
  shardings = getattr(compiled, 'input_shardings', None)
  leaves = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
  return max((len(s.device_set) for s in leaves if isinstance(s, jax.sharding.Sharding)),
             default=1)


def step_flops(compiled) -> float | None:
  """FLOPs of one call of `compiled` on all its devices together, or None if XLA gives none.

  `compiled` is `jax.jit(f).lower(...).compile()`. XLA's cost analysis of a compiled
  program covers one device's partition; it is multiplied by the number of devices the
  program is sharded over. (A `Lowered` also works: its analysis is of the whole,
  unpartitioned program.)
  """
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jax: one dict per executable
    analysis = analysis[0] if analysis else None
  if not analysis or analysis.get('flops') is None:
    return None
  if hasattr(compiled, 'compile'):  # a Lowered: not partitioned yet
    return float(analysis['flops'])
  return float(analysis['flops']) * _program_devices(compiled)


def mfu(flops_per_step: float, steps_per_s: float, num_devices: int, peak: float) -> float:
  """Achieved FLOP/s as a fraction of the devices' peak (peak is per device)."""
  return flops_per_step * steps_per_s / (num_devices * peak)


def throughput_summary(*, global_batch: int, step_time_s: float, num_devices: int,
                       flops_per_step: float | None = None,
                       peak: float | None = None) -> dict:
  """{global_batch, images_per_s_per_device, flops_per_step, mfu}; mfu None when unknown."""
  steps_per_s = 1.0 / step_time_s
  utilisation = None
  if flops_per_step and peak:
    utilisation = mfu(flops_per_step, steps_per_s, num_devices, peak)
  return {'global_batch': int(global_batch),
          'images_per_s_per_device': global_batch * steps_per_s / num_devices,
          'flops_per_step': flops_per_step,
          'mfu': utilisation}


def profile_action(workdir: str, profile_steps: int | None,
                   first_step: int = 10) -> periodic_actions.Profile | None:
  """A periodic action tracing steps first_step+1 .. first_step+profile_steps once.

  Call it after every train step (`action(step)`); the trace (TensorBoard's profile
  plugin) lands under `workdir/plugins/profile/`. None when `profile_steps` is 0 or None.
  """
  if not profile_steps:
    return None
  return periodic_actions.Profile(logdir=workdir, num_profile_steps=int(profile_steps),
                                  profile_duration_ms=0, first_profile=int(first_step),
                                  every_steps=None, every_secs=None)
