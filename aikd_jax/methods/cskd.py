"""CS-KD: each anchor's prediction is pulled towards that of another image of its class
(docs/methods.md, "CS-KD").

L = CE(targets, z_anchor) + lam T^2 KL(softmax(z_pair / T) || softmax(z_anchor / T)).
As in the official code the step runs two train-mode forwards: the anchors (with
gradient), then the pairs (no gradient). The pair forward has its own BatchNorm batch
statistics and updates the running statistics a second time, after the anchors' update.
"""
import dataclasses

import jax

from aikd_jax import losses
from aikd_jax.fields import NON_NEGATIVE, POSITIVE, field
from aikd_jax.methods import base, registry


@dataclasses.dataclass(frozen=True, kw_only=True)
class CSKDConfig:
  """`config.cskd`: the KD temperature and weight."""
  temperature: float = field(POSITIVE)
  lam: float = field(NON_NEGATIVE)


class CSKD(base.Method):
  """Paired batches: 'pair_image' row i is another image of anchor i's class."""
  batch = 'paired'

  def loss(self, forward, params, batch_stats, state, inputs):
    out, stats = forward(params, batch_stats, inputs.batch['image'])
    # torch.no_grad(): the pair forward sees the parameters as constants.
    pair, stats = forward(jax.lax.stop_gradient(params), stats, inputs.batch['pair_image'])
    loss, terms = losses.cskd_loss(out.logits, pair.logits, inputs.targets,  # detaches pair
                                   self.c.temperature, self.c.lam)
    return loss, terms, out.logits, stats


registry.register('cskd', CSKD, group='cskd', config_cls=CSKDConfig)
