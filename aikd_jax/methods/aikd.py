"""AI-KD's student objective and its ablations (DESIGN section 2, paper eq. 16).

L = a_CE CE(y, z) + a_P tau_P^2 KL(p_prev || p_z) + a_G tau_G^2 KL(p_sup || p_z) - w mean D(z)

The ablations are the same objective with weights switched off; the weights that are
switched off go to CE (reference/methods.md section 3):
  no_adv            w = 0
  only_progressive  a_G = 0, w = 0, a_CE = 0.7
  only_guide        a_P = 0, w = 0, a_CE = 0.9
  baseline          CE only (also the superior's phase-1 objective)
"""
import dataclasses

import jax

from aikd_jax import losses

_ABLATIONS = {
    'aikd': {},
    'no_adv': {'omega': 0.0},
    'only_progressive': {'alpha_g': 0.0, 'omega': 0.0, 'alpha_ce': 0.7},
    'only_guide': {'alpha_p': 0.0, 'omega': 0.0, 'alpha_ce': 0.9},
    'baseline': {'alpha_ce': 1.0, 'alpha_p': 0.0, 'alpha_g': 0.0, 'omega': 0.0},
}


@dataclasses.dataclass(frozen=True)
class AIKD:
  name: str
  alpha_ce: float
  alpha_p: float
  alpha_g: float
  omega: float
  tau_p: float
  tau_g: float

  @property
  def uses_previous(self) -> bool:
    return self.alpha_p > 0

  @property
  def uses_critic(self) -> bool:
    return self.omega > 0

  @property
  def uses_superior(self) -> bool:
    return self.alpha_g > 0 or self.uses_critic

  def student_loss(self, logits, targets, *, superior_logits=None, previous_probs=None,
                   critic_fn=None):
    """Returns (loss, {term: value}) for student `logits` [B, C].

    `targets` [B, C] is the label distribution: one-hot, or the Mixup/CutMix mixture
    lam*onehot(y_a) + (1-lam)*onehot(y_b), so CE is lam*CE(y_a) + (1-lam)*CE(y_b).
    `previous_probs` is the progressive target: softmax(z_prev / tau_P), or `targets` in
    the first epoch. `critic_fn` maps student logits to one score per example.
    """
    terms = {'ce': losses.soft_cross_entropy(logits, targets)}
    loss = self.alpha_ce * terms['ce']
    if self.uses_previous:
      terms['progressive'] = losses.kl_to_distribution(logits, previous_probs, self.tau_p)
      loss += self.alpha_p * terms['progressive']
    if self.alpha_g > 0:
      terms['guide'] = losses.kd_kl(logits, superior_logits, self.tau_g)
      loss += self.alpha_g * terms['guide']
    if self.uses_critic:
      terms['adversarial'] = losses.adversarial_loss(critic_fn(logits))
      loss += self.omega * terms['adversarial']
    return loss, terms

  def previous_target(self, previous_logits: jax.Array) -> jax.Array:
    return jax.nn.softmax(previous_logits / self.tau_p, axis=-1)


def from_config(name: str, config) -> AIKD:
  weights = {k: float(config.aikd[k]) for k in ('alpha_ce', 'alpha_p', 'alpha_g', 'omega',
                                                'tau_p', 'tau_g')}
  weights.update(_ABLATIONS[name])
  return AIKD(name=name, **weights)
