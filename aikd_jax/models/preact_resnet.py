"""CIFAR ResNets for 32-px inputs, as in PS-KD's `models/preact_resnet.py`.

- `preact_resnet18`: PS-KD `CIFAR_ResNet18_preActBasic`. Quirk kept from the
  reference: the identity shortcut carries the pre-activated input `relu(bn1(x))`,
  and the projection shortcut is a 1x1 conv without BN.
- `preact_resnet50`: PS-KD `CIFAR_ResNet(Bottleneck_CIFAR, [3, 4, 6, 3])`, which is a
  *post*-activation bottleneck (expansion 4, BN in the projection shortcut) on the
  same stem and pooling. PS-KD has no ResNet-50; this is the one consistent with its
  "PreAct ResNet-101" (`CIFAR_ResNet101_Bottle`).

`width` is the stem width (64 in the reference); stage i has `width * 2**i` planes.
Module names follow the torch state_dict (`layer2_0/shortcut_1` is
`layer2.0.shortcut.1`).
"""
import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from aikd_jax.models import common
from aikd_jax.models import resnet
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
                             name='shortcut_0')(o)
    else:
      shortcut = o
    y = common.conv(self.features, 3, self.stride, dtype=self.dtype, name='conv1')(o)
    y = nn.relu(common.batch_norm(train, self.dtype, name='bn2')(y))
    y = common.conv(self.features, 3, 1, dtype=self.dtype, name='conv2')(y)
    return y + shortcut


# PS-KD `Bottleneck_CIFAR`: torchvision's bottleneck with torch-default conv init and a
# `shortcut` (conv + BN) projection.
BottleneckCIFAR = functools.partial(resnet.Bottleneck,
                                    kernel_init=common.torch_default_kernel_init,
                                    shortcut='shortcut')


class PreActResNet(nn.Module):
  """PS-KD `CIFAR_ResNet`: conv3x3 -> BN -> ReLU stem, 4 stages, global mean, Linear."""
  num_classes: int
  stage_sizes: tuple[int, ...] = (2, 2, 2, 2)
  width: int = 64
  dtype: Any = jnp.float32
  block: Any = PreActBlock

  @nn.compact
  def __call__(self, x, train: bool = False, features: bool = False):
    x = jnp.asarray(x, self.dtype)
    x = common.conv(self.width, 3, 1, dtype=self.dtype, name='conv1')(x)
    x = nn.relu(common.batch_norm(train, self.dtype, name='bn1')(x))
    x, stages = common.residual_stages(x, self.block, self.stage_sizes, self.width,
                                       self.dtype, train)
    head = common.TorchDense(self.num_classes, dtype=self.dtype, name='linear')
    return common.classifier_head(x, stages, head, features)


@register('preact_resnet18')
def preact_resnet18(num_classes: int, width: int = 64, dtype: str = 'float32'):
  return PreActResNet(num_classes, (2, 2, 2, 2), width, common.dtype_from_name(dtype))


@register('preact_resnet50')
def preact_resnet50(num_classes: int, width: int = 64, dtype: str = 'float32'):
  return PreActResNet(num_classes, (3, 4, 6, 3), width, common.dtype_from_name(dtype),
                      block=BottleneckCIFAR)
