"""Building blocks with PyTorch-equivalent initialisation and BatchNorm settings."""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# torch's default Conv/Linear weight init, U(+-1/sqrt(fan_in)).
torch_default_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')
# torchvision ResNet: kaiming_normal_(mode='fan_out', nonlinearity='relu').
kaiming_fan_out_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def batch_norm(train: bool, dtype: Any = jnp.float32, name: str | None = None, **kw):
  """BatchNorm matching torch (momentum 0.1 in torch terms, eps 1e-5); statistics in float32."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      dtype=dtype, param_dtype=jnp.float32, name=name, **kw)


class TorchDense(nn.Module):
  """A Linear layer as torch.nn.Linear: weight and bias both drawn U(+-1/sqrt(fan_in)).

  Written out (rather than wrapping nn.Dense) because the bias init needs fan_in, and so
  that its variables are plainly `kernel` and `bias` under the layer's own name.
  """
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    fan_in = x.shape[-1]
    bound = 1.0 / jnp.sqrt(fan_in)
    kernel = self.param('kernel', torch_default_kernel_init, (fan_in, self.features),
                        jnp.float32)
    bias = self.param('bias', lambda key, shape: jax.random.uniform(
        key, shape, jnp.float32, -bound, bound), (self.features,))
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    return x @ kernel + bias


def conv(features, kernel, stride=1, padding=None, dtype=jnp.float32,
         kernel_init=torch_default_kernel_init, name=None):
  """A bias-free conv with torch-style symmetric padding (kernel // 2 unless given)."""
  pad = kernel // 2 if padding is None else padding
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((pad, pad), (pad, pad)), use_bias=False, dtype=dtype,
                 param_dtype=jnp.float32, kernel_init=kernel_init, name=name)


def dtype_from_name(name: str):
  try:
    return {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}[name]
  except KeyError:
    raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {name!r}") from None


def residual_stages(x, block, stage_sizes, width: int, dtype, train: bool):
  """ResNet stages: stage i has `width * 2**i` planes and starts with a stride-2 block
  (except the first). Blocks are named `layer{i+1}_{j}`, as torch's `layer1.0`.
  Returns the last output and the list of stage outputs.
  """
  stages = []
  for i, blocks in enumerate(stage_sizes):
    for j in range(blocks):
      stride = 2 if (i > 0 and j == 0) else 1
      x = block(width * 2**i, stride, dtype, name=f'layer{i + 1}_{j}')(x, train)
    stages.append(x)
  return x, stages


def classifier_head(x, stages, dense, features: bool):
  """Global average pooling, then `dense`, as float32 logits; with `features`, also
  `{'stages': stages, 'prepool': x}` (the map before pooling).

  The global mean equals the references' avg_pool2d(4) on 32-px inputs and torchvision's
  adaptive average pooling on any size.
  """
  logits = jnp.asarray(dense(jnp.mean(x, axis=(1, 2))), jnp.float32)
  return (logits, {'stages': stages, 'prepool': x}) if features else logits
