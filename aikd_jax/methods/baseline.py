"""Plain cross-entropy: the paper's Baseline, and the superior's phase-1 objective."""
from aikd_jax import losses
from aikd_jax.methods import base, registry


class CrossEntropy(base.Method):
  """L = CE(targets, z): the batch mean of the soft cross-entropy to the label distribution."""

  def objective(self, out, state, inputs):
    ce = losses.soft_cross_entropy(out.logits, inputs.targets)
    return ce, {'ce': ce}


registry.register('baseline', CrossEntropy)
