"""TF-KD, self-training variant (Tf-KD_self): the phase-1 model teaches at a high
temperature (docs/methods.md, "TF-KD").

L = (1 - alpha) CE(targets, z) + alpha T^2 m mean_{B*C} p (log p - log q), p = softmax of
the frozen superior's eval-mode logits on the same (augmented, mixed) batch / T.
"""
import dataclasses

from aikd_jax import losses
from aikd_jax.fields import POSITIVE, UNIT, field
from aikd_jax.methods import base, registry


@dataclasses.dataclass(frozen=True, kw_only=True)
class TFKDConfig:
  """`config.tfkd`: the KD weight, temperature and the official code's multiplier."""
  alpha: float = field(UNIT)
  temperature: float = field(POSITIVE)
  multiplier: float = field(POSITIVE)


class TFKD(base.Method):
  """The superior (phase 1, plain CE) is the teacher; one student forward per step."""
  needs_superior = True

  def objective(self, out, state, inputs):
    return losses.tfkd_loss(out.logits, inputs.targets, inputs.superior_logits,
                            self.c.alpha, self.c.temperature, self.c.multiplier)


registry.register('tfkd', TFKD, group='tfkd', config_cls=TFKDConfig)
