"""PS-KD: the target mixes the label with last epoch's own prediction for the example
(docs/methods.md, "PS-KD").

q = (1 - a_t) targets + a_t P[id], a_t = alpha_T (epoch + 1) / num_epochs; q = targets in
epoch 0. P [N, C] holds softmax probabilities; after each SGD step P[id] <- softmax(z) of
the same train-mode forward (no extra forward pass). Under Mixup/CutMix the rows are
mixed like the labels and the new prediction is stored at the anchor's id. A row never
written reads as the one-hot label.
"""
import dataclasses

import jax
import jax.numpy as jnp

from aikd_jax import losses
from aikd_jax.fields import UNIT, field
from aikd_jax.methods import base, registry


@dataclasses.dataclass(frozen=True, kw_only=True)
class PSKDConfig:
  """`config.pskd`: alpha_T, the weight of the previous prediction in the last epoch."""
  alpha_t: float = field(UNIT)


class PSKD(base.Method):
  """State: {'table': P [num_train_examples, C] float32}."""

  def __init__(self, name: str, c: PSKDConfig, num_epochs: int):
    super().__init__(name, c)
    self.num_epochs = num_epochs

  @classmethod
  def from_config(cls, name, c, config):
    return cls(name, c, config.num_epochs)

  def init_state(self, key, ctx: base.InitContext):
    del key
    return {'table': losses.empty_table(ctx.num_train_examples, ctx.num_classes)}

  def target(self, state, inputs: base.StepInputs):
    """q of `pskd_target` for this step's batch."""
    batch = inputs.batch
    rows = losses.table_rows(state['table'], batch['id'], batch['label'],
                             batch.get('mix_perm'), batch.get('mix_lam'))
    alpha = losses.pskd_alpha(inputs.epoch, self.c.alpha_t, self.num_epochs)
    return losses.pskd_target(inputs.targets, rows, alpha, inputs.epoch == 0)

  def objective(self, out, state, inputs):
    return losses.pskd_loss(out.logits, self.target(state, inputs))

  def after_step(self, state, logits, inputs):
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    return {'table': losses.write_rows(state['table'], inputs.batch['id'], probs)}, {}


registry.register('pskd', PSKD, group='pskd', config_cls=PSKDConfig)
