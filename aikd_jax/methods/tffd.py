"""TF-FD: features distil into each other inside one network (docs/methods.md, "TF-FD").

L = CE(targets, z) + ramp(epoch) (lambda_inter inter + lambda_intra intra), on the stage
outputs of the same forward; ramp = min(1, (epoch + 1) / 20). No state.
"""
import dataclasses

from aikd_jax import losses
from aikd_jax.fields import NON_NEGATIVE, field
from aikd_jax.errors import ConfigError
from aikd_jax.methods import base, registry


@dataclasses.dataclass(frozen=True, kw_only=True)
class TFFDConfig:
  """`config.tffd`: the weights of the inter-layer and intra-layer terms."""
  lambda_inter: float = field(NON_NEGATIVE)
  lambda_intra: float = field(NON_NEGATIVE)


class TFFD(base.Method):
  """One forward that also returns the stage outputs."""
  features = True

  def check_stages(self, shapes, model):
    """The intra term halves each stage's channels; the inter term pairs stages."""
    channels = [s[-1] for s in shapes]
    if len(shapes) < 2 or any(c % 2 for c in channels):
      raise ConfigError(f'tffd needs at least two stages, each with an even channel count; '
                        f'{model} has stages of {channels} channels: change '
                        '--config.model.width')

  def objective(self, out, state, inputs):
    return losses.tffd_loss(out.logits, inputs.targets, out.features['stages'],
                            self.c.lambda_inter, self.c.lambda_intra,
                            losses.tffd_ramp(inputs.epoch))


registry.register('tffd', TFFD, group='tffd', config_cls=TFFDConfig)
