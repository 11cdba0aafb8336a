"""Torchvision ImageNet ResNet-18/50 (224-px inputs), as used by CS-KD for fine-grained data.

Layout of `torchvision.models.resnet`: conv7x7/2 (pad 3) -> BN -> ReLU ->
maxpool3x3/2 (pad 1) -> 4 stages -> global mean -> Linear. ResNet-50 is v1.5 (the
stride sits in the 3x3 conv). Init as torchvision: convs kaiming_normal(fan_out),
BN weight 1 / bias 0, Linear torch default; no zero-init of the last BN.

`width` is the stem width (64 in torchvision); stage i has `width * 2**i` planes.
Module names follow the torch state_dict: `layer1_0/conv1` is `layer1.0.conv1`,
`layer2_0/downsample_0` / `downsample_1` are `layer2.0.downsample.0` / `.1`, then `fc`.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from aikd_jax.models import common
from aikd_jax.models.registry import register


def _conv(features, kernel, stride, dtype, name, padding=None,
          kernel_init=common.kaiming_fan_out_init):
  return common.conv(features, kernel, stride, padding=padding, dtype=dtype,
                     kernel_init=kernel_init, name=name)


def _project(x, features, stride, train, dtype, name='downsample',
             kernel_init=common.kaiming_fan_out_init):
  """The projection shortcut (conv1x1 + BN, `name`_0 / `name`_1) when the shape changes."""
  if stride == 1 and x.shape[-1] == features:
    return x
  x = _conv(features, 1, stride, dtype, f'{name}_0', padding=0, kernel_init=kernel_init)(x)
  return common.batch_norm(train, dtype, name=f'{name}_1')(x)


class BasicBlock(nn.Module):
  features: int
  stride: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    y = _conv(self.features, 3, self.stride, self.dtype, 'conv1')(x)
    y = nn.relu(common.batch_norm(train, self.dtype, name='bn1')(y))
    y = _conv(self.features, 3, 1, self.dtype, 'conv2')(y)
    y = common.batch_norm(train, self.dtype, name='bn2')(y)
    return nn.relu(y + _project(x, self.features, self.stride, train, self.dtype))


class Bottleneck(nn.Module):
  """Post-activation bottleneck, stride in the 3x3 conv, ReLU after the sum.

  The same block serves PS-KD's `Bottleneck_CIFAR` (preact_resnet50), which differs
  only in its conv init (torch default) and its shortcut's name (`shortcut`).
  """
  features: int
  stride: int
  dtype: Any = jnp.float32
  expansion: int = 4
  kernel_init: Any = common.kaiming_fan_out_init
  shortcut: str = 'downsample'

  @nn.compact
  def __call__(self, x, train: bool):
    out_features = self.features * self.expansion
    conv = lambda f, k, stride, name: _conv(f, k, stride, self.dtype, name,
                                            kernel_init=self.kernel_init)
    y = conv(self.features, 1, 1, 'conv1')(x)
    y = nn.relu(common.batch_norm(train, self.dtype, name='bn1')(y))
    y = conv(self.features, 3, self.stride, 'conv2')(y)
    y = nn.relu(common.batch_norm(train, self.dtype, name='bn2')(y))
    y = conv(out_features, 1, 1, 'conv3')(y)
    y = common.batch_norm(train, self.dtype, name='bn3')(y)
    return nn.relu(y + _project(x, out_features, self.stride, train, self.dtype,
                                self.shortcut, self.kernel_init))


class ResNet(nn.Module):
  """`stages` are the outputs of layer1..layer4; `prepool` is layer4's output."""
  num_classes: int
  stage_sizes: tuple[int, ...]
  block: Any
  width: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, features: bool = False):
    x = jnp.asarray(x, self.dtype)
    x = _conv(self.width, 7, 2, self.dtype, 'conv1', padding=3)(x)
    x = nn.relu(common.batch_norm(train, self.dtype, name='bn1')(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))  # pads with -inf
    x, stages = common.residual_stages(x, self.block, self.stage_sizes, self.width,
                                       self.dtype, train)
    head = common.TorchDense(self.num_classes, dtype=self.dtype, name='fc')
    return common.classifier_head(x, stages, head, features)


@register('resnet18')
def resnet18(num_classes: int, width: int = 64, dtype: str = 'float32'):
  return ResNet(num_classes, (2, 2, 2, 2), BasicBlock, width, common.dtype_from_name(dtype))


@register('resnet50')
def resnet50(num_classes: int, width: int = 64, dtype: str = 'float32'):
  return ResNet(num_classes, (3, 4, 6, 3), Bottleneck, width, common.dtype_from_name(dtype))
