"""AI-KD's student objective, its critic, and its ablations (paper eq. 16; docs/methods.md).

L = a_CE CE(y, z) + a_P tau_P^2 KL(p_prev || p_z) + a_G tau_G^2 KL(p_sup || p_z) - w mean D(z)

The progressive target p_prev comes from the previous epoch's student, either as a weight
snapshot run in eval mode on the current batch (`aikd.previous='snapshot'`, the default)
or as a per-example table of last epoch's train-mode logits (`'table'`: no extra forward).
In epoch 0 it is the label distribution. The critic D (WGAN-GP, on logits) is trained
after each student step on (student logits, superior logits) of the same batch.

The ablations are the same objective with weights switched off; the switched-off weight
goes to CE: no_adv (w = 0), only_progressive (a_G = w = 0, a_CE = 0.7), only_guide
(a_P = w = 0, a_CE = 0.9).
"""
import dataclasses
import functools

from flax.training import train_state
import jax
import jax.numpy as jnp
import optax

from aikd_jax import losses, models
from aikd_jax.fields import BELOW_ONE, NON_NEGATIVE, POSITIVE, field, one_of
from aikd_jax.methods import base, registry

_ABLATIONS = {
    'aikd': {},
    'no_adv': {'omega': 0.0},
    'only_progressive': {'alpha_g': 0.0, 'omega': 0.0, 'alpha_ce': 0.7},
    'only_guide': {'alpha_p': 0.0, 'omega': 0.0, 'alpha_ce': 0.9},
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class AIKDConfig:
  """`config.aikd`: loss weights, temperatures, the previous-epoch target, the critic."""
  alpha_ce: float = field(NON_NEGATIVE)
  alpha_p: float = field(NON_NEGATIVE)
  alpha_g: float = field(NON_NEGATIVE)
  omega: float = field(NON_NEGATIVE)
  tau_p: float = field(POSITIVE)
  tau_g: float = field(POSITIVE)
  previous: str = field(one_of('snapshot', 'table'))
  gp_weight: float = field(NON_NEGATIVE)
  critic_steps: int = field(POSITIVE)
  critic_lr: float = field(POSITIVE)
  critic_b1: float = field(BELOW_ONE)
  critic_b2: float = field(BELOW_ONE)
  critic_norm: str = field(one_of('batch', 'layer', 'none'))
  critic_input: str = field(one_of('logits', 'probs'))


class CriticState(train_state.TrainState):
  batch_stats: dict


def _critic_apply(critic, params, x):
  """(D(x), updated batch_stats) in train mode, the only mode the critic runs in."""
  return critic.apply_fn({'params': params, 'batch_stats': critic.batch_stats}, x, train=True,
                         mutable=['batch_stats'])


def _critic_input(logits, kind: str):
  return jax.nn.softmax(logits, axis=-1) if kind == 'probs' else logits


def _table_target(table, batch, tau):
  """softmax(table[id] / tau), mixed like the labels under Mixup/CutMix; the one-hot
  label for a row never written."""
  return losses.table_rows(table, batch['id'], batch['label'], batch.get('mix_perm'),
                           batch.get('mix_lam'),
                           to_probs=lambda z: jax.nn.softmax(z / tau, axis=-1))


class AIKD(base.Method):
  """AI-KD and its ablations; `weights` holds the four loss weights of the variant."""

  def __init__(self, name: str, c: AIKDConfig):
    super().__init__(name, c)
    w = {k: getattr(c, k) for k in ('alpha_ce', 'alpha_p', 'alpha_g', 'omega')}
    w.update(_ABLATIONS[name])
    self.alpha_ce, self.alpha_p, self.alpha_g, self.omega = (
        w['alpha_ce'], w['alpha_p'], w['alpha_g'], w['omega'])
    self.uses_previous, self.uses_critic = self.alpha_p > 0, self.omega > 0
    self.needs_superior = self.alpha_g > 0 or self.uses_critic
    self.critic = models.Critic(norm=c.critic_norm)

  # -- state -----------------------------------------------------------------------------
  def init_state(self, key, ctx: base.InitContext):
    state = {}
    if self.uses_previous and self.c.previous == 'snapshot':
      state['previous'] = jax.tree.map(jnp.copy, ctx.variables)
    elif self.uses_previous:
      state['table'] = losses.empty_table(ctx.num_train_examples, ctx.num_classes)
    if self.uses_critic:
      v = self.critic.init(key, jnp.zeros((2, ctx.num_classes), jnp.float32), train=False)
      tx = optax.adam(self.c.critic_lr, b1=self.c.critic_b1, b2=self.c.critic_b2)
      state['critic'] = CriticState.create(  # no batch_stats with critic_norm 'layer'/'none'
          apply_fn=self.critic.apply, params=v['params'],
          batch_stats=v.get('batch_stats', {}), tx=tx)
    return state or None

  def end_epoch(self, state, variables):
    if state is not None and 'previous' in state:  # an explicit copy: never a donated buffer
      state = dict(state, previous=jax.tree.map(jnp.copy, variables))
    return state

  # -- loss ------------------------------------------------------------------------------
  def _previous_target(self, state, inputs: base.StepInputs):
    """softmax(z_prev / tau_P); the label distribution in epoch 0.

    Snapshot mode runs the snapshot's forward in epoch 0 too (on the initial weights) and
    discards it: a select is cheaper in every later epoch than a `lax.cond` around it.
    """
    if 'table' in state:
      probs = _table_target(state['table'], inputs.batch, self.c.tau_p)
    else:
      z = inputs.model.apply(state['previous'], inputs.batch['image'], train=False)
      probs = jax.nn.softmax(jax.lax.stop_gradient(z) / self.c.tau_p, axis=-1)
    return jnp.where(inputs.epoch > 0, probs, inputs.targets)

  def _critic_score(self, critic, logits):
    return _critic_apply(critic, critic.params, _critic_input(logits, self.c.critic_input))[0]

  def objective(self, out, state, inputs):
    logits = out.logits
    terms = {'ce': losses.soft_cross_entropy(logits, inputs.targets)}
    loss = self.alpha_ce * terms['ce']
    if self.uses_previous:
      target = self._previous_target(state, inputs)
      terms['progressive'] = losses.kl_to_distribution(logits, target, self.c.tau_p)
      loss += self.alpha_p * terms['progressive']
    if self.alpha_g > 0:
      terms['guide'] = losses.kd_kl(logits, inputs.superior_logits, self.c.tau_g)
      loss += self.alpha_g * terms['guide']
    if self.uses_critic:
      terms['adversarial'] = losses.adversarial_loss(self._critic_score(state['critic'], logits))
      loss += self.omega * terms['adversarial']
    return loss, terms

  # -- updates ---------------------------------------------------------------------------
  def after_step(self, state, logits, inputs):
    metrics = {}
    if state is None:
      return state, metrics
    state = dict(state)
    if 'table' in state:  # the mixed prediction is stored at the anchor's id
      state['table'] = losses.write_rows(state['table'], inputs.batch['id'], logits)
    if self.uses_critic:
      critic = state['critic']
      fake = jax.lax.stop_gradient(logits)
      for i in range(self.c.critic_steps):
        critic, metrics = self._critic_update(critic, fake, inputs.superior_logits,
                                              jax.random.fold_in(inputs.key, i))
      state['critic'] = critic
    return state, metrics

  def _critic_update(self, critic, fake, real, key):
    """One Adam step on L_D = mean D(fake) - mean D(real) + lambda GP (train mode).

    The critic's running statistics are never used (it always runs in train mode); the
    state keeps those of the call on the student's logits.
    """
    kind = self.c.critic_input
    fake, real = _critic_input(fake, kind), _critic_input(real, kind)

    def loss_fn(params):
      apply = functools.partial(_critic_apply, critic, params)
      d_fake, new_stats = apply(fake)
      d_real, _ = apply(real)
      eps = jax.random.uniform(key, (fake.shape[0], 1), jnp.float32)
      penalty = losses.gradient_penalty(lambda x: apply(x)[0], real, fake, eps)
      loss = losses.critic_loss(d_fake, d_real, penalty, self.c.gp_weight)
      return loss, (new_stats.get('batch_stats', {}), {
          'critic_loss': loss, 'wasserstein': jnp.mean(d_real) - jnp.mean(d_fake),
          'gradient_penalty': penalty})

    grads, (stats, metrics) = jax.grad(loss_fn, has_aux=True)(critic.params)
    return critic.apply_gradients(grads=grads, batch_stats=stats), metrics


for _name in _ABLATIONS:
  registry.register(_name, AIKD, group='aikd', config_cls=AIKDConfig)
