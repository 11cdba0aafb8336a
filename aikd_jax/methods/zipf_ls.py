"""Zipf's label smoothing: the model's own dense votes rank the non-target classes, and a
Zipf distribution over those ranks is a soft target for the non-target logits
(docs/methods.md, "Zipf's label smoothing").

L = CE(targets, z) + lam KL(zipf(votes) || softmax(non-target z)). The votes come from the
same forward: the classifier head applied at every position of the pre-pool map
(upsampled x2 at 32 px). Under Mixup/CutMix the term is lam L(y_a) + (1 - lam) L(y_b).
"""
import dataclasses

from aikd_jax import losses
from aikd_jax.fields import NON_NEGATIVE, field
from aikd_jax.methods import base, registry

# The classifier head's name: PreAct ResNets and the CIFAR DenseNet, torchvision ResNets,
# torchvision DenseNet.
HEAD_NAMES = ('linear', 'fc', 'classifier')


@dataclasses.dataclass(frozen=True, kw_only=True)
class ZipfLSConfig:
  """`config.zipf_ls`: the weight of the Zipf term; whether the map is upsampled x2."""
  lam: float = field(NON_NEGATIVE)
  upsample: bool


def head_params(params) -> dict:
  """The classifier head's {'kernel' [D, C], 'bias' [C]} of a student's params."""
  for name in HEAD_NAMES:
    if name in params:
      return params[name]
  raise ValueError(f'no classifier head ({", ".join(HEAD_NAMES)}) in {sorted(params)}')


class ZipfLS(base.Method):
  """One forward with features; the votes use the head's current parameters."""
  features = True

  def loss(self, forward, params, batch_stats, state, inputs):
    out, new_stats = forward(params, batch_stats, inputs.batch['image'])
    head = head_params(params)
    votes = losses.dense_votes(out.features['prepool'], head['kernel'], head['bias'],
                               self.c.upsample)
    batch = inputs.batch
    labels, weights = losses.zipf_label_sets(batch['label'], batch.get('mix_perm'),
                                             batch.get('mix_lam'))
    loss, terms = losses.zipf_ls_loss(out.logits, inputs.targets, votes, labels, weights,
                                      self.c.lam)
    return loss, terms, out.logits, new_stats


registry.register('zipf_ls', ZipfLS, group='zipf_ls', config_cls=ZipfLSConfig)
