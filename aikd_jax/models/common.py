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
  """nn.Dense whose weight and bias are both drawn U(+-1/sqrt(fan_in)), as torch.nn.Linear."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    bound = 1.0 / jnp.sqrt(x.shape[-1])
    bias_init = lambda key, shape, dtype=jnp.float32: jax.random.uniform(
        key, shape, dtype, -bound, bound)
    return nn.Dense(self.features, dtype=self.dtype, param_dtype=jnp.float32,
                    kernel_init=torch_default_kernel_init, bias_init=bias_init)(x)


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

