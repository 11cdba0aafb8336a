"""The AI-KD critic (WGAN-GP discriminator) on logits.

Paper section 4.1/5.2: FC(64) -> BatchNorm1d -> LeakyReLU -> FC(32) -> LeakyReLU -> FC(1).
The final scalar head is our reading (docs/methods.md, AI-KD). `norm` can replace the
BatchNorm by LayerNorm or nothing, which makes the gradient penalty exactly
per-example, as WGAN-GP intends.
"""
import flax.linen as nn
import jax.numpy as jnp

from aikd_jax.models import common


class Critic(nn.Module):
  hidden: tuple[int, int] = (64, 32)
  norm: str = 'batch'
  negative_slope: float = 0.2

  @nn.compact
  def __call__(self, x, train: bool = True):
    x = jnp.asarray(x, jnp.float32)
    x = common.TorchDense(self.hidden[0], name='fc1')(x)
    if self.norm == 'batch':
      x = common.batch_norm(train, name='bn')(x)
    elif self.norm == 'layer':
      x = nn.LayerNorm(epsilon=1e-5, name='ln')(x)
    elif self.norm != 'none':
      raise ValueError(f"critic norm must be 'batch', 'layer' or 'none', got {self.norm!r}")
    x = nn.leaky_relu(x, self.negative_slope)
    x = nn.leaky_relu(common.TorchDense(self.hidden[1], name='fc2')(x), self.negative_slope)
    return common.TorchDense(1, name='fc3')(x)[:, 0]
