"""DenseNet-121 for 32-px inputs, as in PS-KD's `CIFAR_DenseNet121` (densenet_cifar.py).

Growth rate k = `width` (32 in the reference), blocks [6, 12, 24, 16], bottleneck
layers BN-ReLU-conv1x1(4k)-BN-ReLU-conv3x3(k), compression 0.5. The stem is a 3x3
conv to 2k channels with no BN; transitions are BN-ReLU-conv1x1-avgpool2; the head
is BN-ReLU-global mean-Linear. Quirk kept from the reference: each layer
concatenates `[new, x]` (new features first), unlike torchvision's `[x, new]`.

Module names follow the torch state_dict: `dense1_0/bn1` is `dense1.0.bn1`,
`trans1/conv` is `trans1.conv`, then `bn` and `linear`.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from aikd_jax.models import common
from aikd_jax.models.registry import register


class Bottleneck(nn.Module):
  growth_rate: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    y = nn.relu(common.batch_norm(train, self.dtype, name='bn1')(x))
    y = common.conv(4 * self.growth_rate, 1, padding=0, dtype=self.dtype, name='conv1')(y)
    y = nn.relu(common.batch_norm(train, self.dtype, name='bn2')(y))
    y = common.conv(self.growth_rate, 3, dtype=self.dtype, name='conv2')(y)
    return jnp.concatenate([y, x], axis=-1)


class Transition(nn.Module):
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    y = nn.relu(common.batch_norm(train, self.dtype, name='bn')(x))
    y = common.conv(self.features, 1, padding=0, dtype=self.dtype, name='conv')(y)
    return nn.avg_pool(y, (2, 2), strides=(2, 2))


class CIFARDenseNet(nn.Module):
  """`stages` are the dense-block outputs; `prepool` is relu(bn(block 4))."""
  num_classes: int
  block_sizes: tuple[int, ...] = (6, 12, 24, 16)
  growth_rate: int = 32
  reduction: float = 0.5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, features: bool = False):
    x = jnp.asarray(x, self.dtype)
    x = common.conv(2 * self.growth_rate, 3, dtype=self.dtype, name='conv1')(x)
    stages = []
    for i, layers in enumerate(self.block_sizes):
      for j in range(layers):
        x = Bottleneck(self.growth_rate, self.dtype, name=f'dense{i + 1}_{j}')(x, train)
      stages.append(x)
      if i + 1 < len(self.block_sizes):
        out = int(x.shape[-1] * self.reduction)  # math.floor, as the reference
        x = Transition(out, self.dtype, name=f'trans{i + 1}')(x, train)
    x = nn.relu(common.batch_norm(train, self.dtype, name='bn')(x))
    head = common.TorchDense(self.num_classes, dtype=self.dtype, name='linear')
    return common.classifier_head(x, stages, head, features)


@register('cifar_densenet121')
def cifar_densenet121(num_classes: int, width: int = 32, dtype: str = 'float32'):
  """`width` is the growth rate k (32); the stem has 2k channels."""
  return CIFARDenseNet(num_classes, (6, 12, 24, 16), width,
                       dtype=common.dtype_from_name(dtype))
