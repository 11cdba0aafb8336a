"""Torchvision ImageNet DenseNet-121 (224-px inputs).

Layout of `torchvision.models.densenet121`: conv7x7/2 (pad 3) -> BN -> ReLU ->
maxpool3x3/2 (pad 1) -> dense blocks [6, 12, 24, 16] with BN-ReLU-conv1x1(4k)-
BN-ReLU-conv3x3(k) layers concatenating `[x, new]`, transitions BN-ReLU-conv1x1
(half the channels)-avgpool2 -> BN -> ReLU -> global mean -> Linear. Init as
torchvision: convs kaiming_normal (fan_in), BN weight 1 / bias 0, Linear bias 0.

`width` is the growth rate k (32 in torchvision); the stem has 2k channels.
Module names follow the torch state_dict with '.' -> '_':
`features_denseblock1_denselayer1/norm1` is `features.denseblock1.denselayer1.norm1`,
`features_transition1/conv` is `features.transition1.conv`, then `features_norm5`
and `classifier`.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from aikd_jax.models import common
from aikd_jax.models.registry import register

# torchvision DenseNet: nn.init.kaiming_normal_(conv.weight) (fan_in, gain sqrt(2)).
kaiming_fan_in_init = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')


def _conv(features, kernel, dtype, name, stride=1, padding=None):
  return common.conv(features, kernel, stride, padding=padding, dtype=dtype,
                     kernel_init=kaiming_fan_in_init, name=name)


class DenseLayer(nn.Module):
  growth_rate: int
  bn_size: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    y = nn.relu(common.batch_norm(train, self.dtype, name='norm1')(x))
    y = _conv(self.bn_size * self.growth_rate, 1, self.dtype, 'conv1', padding=0)(y)
    y = nn.relu(common.batch_norm(train, self.dtype, name='norm2')(y))
    y = _conv(self.growth_rate, 3, self.dtype, 'conv2')(y)
    return jnp.concatenate([x, y], axis=-1)


class Transition(nn.Module):
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    y = nn.relu(common.batch_norm(train, self.dtype, name='norm')(x))
    y = _conv(self.features, 1, self.dtype, 'conv', padding=0)(y)
    return nn.avg_pool(y, (2, 2), strides=(2, 2))


class DenseNet(nn.Module):
  """`stages` are the dense-block outputs; `prepool` is relu(norm5(block 4))."""
  num_classes: int
  block_sizes: tuple[int, ...] = (6, 12, 24, 16)
  growth_rate: int = 32
  bn_size: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, features: bool = False):
    x = jnp.asarray(x, self.dtype)
    x = _conv(2 * self.growth_rate, 7, self.dtype, 'features_conv0', stride=2, padding=3)(x)
    x = nn.relu(common.batch_norm(train, self.dtype, name='features_norm0')(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))  # pads with -inf
    stages = []
    for i, layers in enumerate(self.block_sizes):
      for j in range(layers):
        name = f'features_denseblock{i + 1}_denselayer{j + 1}'
        x = DenseLayer(self.growth_rate, self.bn_size, self.dtype, name=name)(x, train)
      stages.append(x)
      if i + 1 < len(self.block_sizes):
        x = Transition(x.shape[-1] // 2, self.dtype, name=f'features_transition{i + 1}')(x, train)
    x = nn.relu(common.batch_norm(train, self.dtype, name='features_norm5')(x))
    head = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32,
                    kernel_init=common.torch_default_kernel_init,
                    bias_init=nn.initializers.zeros, name='classifier')
    return common.classifier_head(x, stages, head, features)


@register('densenet121')
def densenet121(num_classes: int, width: int = 32, dtype: str = 'float32'):
  return DenseNet(num_classes, (6, 12, 24, 16), width, dtype=common.dtype_from_name(dtype))
