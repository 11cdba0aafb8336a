"""PreAct ResNet-18 for 32-px inputs, as in PS-KD's `CIFAR_ResNet18_preActBasic`.

Quirk kept from the reference: the identity shortcut carries the pre-activated
input `relu(bn1(x))`, and the projection shortcut is a 1x1 conv without BN.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from aikd_jax.models import common
from aikd_jax.models.registry import register


class PreActBlock(nn.Module):
  features: int
  stride: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    o = nn.relu(common.batch_norm(train, self.dtype, name='bn1')(x))
    if self.stride != 1 or x.shape[-1] != self.features:
      shortcut = common.conv(self.features, 1, self.stride, padding=0, dtype=self.dtype,
                             name='shortcut')(o)
    else:
      shortcut = o
    y = common.conv(self.features, 3, self.stride, dtype=self.dtype, name='conv1')(o)
    y = nn.relu(common.batch_norm(train, self.dtype, name='bn2')(y))
    y = common.conv(self.features, 3, 1, dtype=self.dtype, name='conv2')(y)
    return y + shortcut


class PreActResNet(nn.Module):
  num_classes: int
  stage_sizes: tuple[int, ...] = (2, 2, 2, 2)
  width: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, features: bool = False):
    x = jnp.asarray(x, self.dtype)
    x = common.conv(self.width, 3, 1, dtype=self.dtype, name='conv1')(x)
    x = nn.relu(common.batch_norm(train, self.dtype, name='bn1')(x))
    stages = []
    for i, blocks in enumerate(self.stage_sizes):
      for j in range(blocks):
        stride = 2 if (i > 0 and j == 0) else 1
        x = PreActBlock(self.width * 2**i, stride, self.dtype, name=f'layer{i + 1}_{j}')(x, train)
      stages.append(x)
    pooled = jnp.mean(x, axis=(1, 2))  # avg_pool2d(4) on a 4x4 map, for any input size
    logits = common.TorchDense(self.num_classes, dtype=self.dtype, name='linear')(pooled)
    logits = jnp.asarray(logits, jnp.float32)
    if features:
      return logits, {'stages': stages, 'prepool': x}
    return logits


@register('preact_resnet18')
def preact_resnet18(num_classes: int, width: int = 64, dtype: str = 'float32'):
  return PreActResNet(num_classes, (2, 2, 2, 2), width, common.dtype_from_name(dtype))
