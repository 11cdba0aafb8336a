"""The train step: AI-KD's loss composition, the critic update, and what ablations trace."""
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aikd_jax import config as config_lib
from aikd_jax import losses, methods, models
from aikd_jax.methods import aikd as aikd_lib
from aikd_jax.train import state as state_lib
from aikd_jax.train import steps
from configs import demo
from tests.runs import count_convs

NUM_CLASSES, SPE = 10, 4
IMAGE_SHAPE = (8, 8, 1)


def _setup(method_name, augment=None, optim=None, **aikd):
  raw = demo.get_config('smoke')
  raw.method = method_name
  for k, v in (optim or {}).items():
    raw.optim[k] = v
  for k, v in aikd.items():
    raw.aikd[k] = v
  for k, v in (augment or {}).items():
    raw.augment[k] = v
  config = config_lib.parse(raw)
  model = models.create('preact_resnet18', NUM_CLASSES, width=2)
  method = aikd_lib.AIKD(method_name, config.methods['aikd']) \
      if method_name != 'baseline' else methods.create(config)
  state = state_lib.create_state(jax.random.key(0), model=model, method=method,
                                 optim=config.optim, image_shape=IMAGE_SHAPE,
                                 num_classes=NUM_CLASSES, num_train_examples=64,
                                 steps_per_epoch=SPE)
  superior = dict(model.init(jax.random.key(7), jnp.zeros((1, *IMAGE_SHAPE)), train=False))
  step = steps.make_train_step(model=model, method=method, augment=config.augment,
                               seed=config.seed, num_classes=NUM_CLASSES, steps_per_epoch=SPE)
  rng = np.random.default_rng(0)
  batch = {'image': jnp.asarray(rng.normal(size=(16, *IMAGE_SHAPE)), jnp.float32),
           'label': jnp.asarray(rng.integers(0, NUM_CLASSES, 16), jnp.int32),
           'id': jnp.arange(16, dtype=jnp.int32)}
  return config, method, model, state, superior, step, batch


def test_inactive_terms_cost_nothing():
  convs = {}
  for name in ('baseline', 'only_guide', 'only_progressive', 'no_adv', 'aikd'):
    _, method, _, state, superior, step, batch = _setup(name)
    convs[name] = count_convs(jax.make_jaxpr(step)(state, batch, superior).jaxpr)
    method_state = state.method or {}
    assert ('critic' in method_state) == (name == 'aikd')
    assert ('previous' in method_state) == (name in ('only_progressive', 'no_adv', 'aikd'))
  forward = convs['only_guide'] - convs['baseline']  # one extra eval-mode forward pass
  assert forward > 0
  assert convs['only_progressive'] == convs['baseline'] + forward
  assert convs['no_adv'] == convs['baseline'] + 2 * forward
  assert convs['aikd'] == convs['no_adv']  # the critic has no convolutions


def test_the_optimizer_and_the_logged_learning_rate_share_one_schedule():
  # Without momentum and weight decay an SGD update of all-ones gradients is -lr.
  _, _, _, state, superior, step, batch = _setup(
      'baseline', optim={'momentum': 0.0, 'weight_decay': 0.0, 'nesterov': False})
  step = jax.jit(step)
  ones = jax.tree.map(jnp.ones_like, state.student.params)
  logged, applied = [], []
  for _ in range(2 * SPE):
    student = state.student
    probe = student.apply_gradients(grads=ones, batch_stats=student.batch_stats)
    applied.append(float(jax.tree.leaves(student.params)[0].ravel()[0]
                         - jax.tree.leaves(probe.params)[0].ravel()[0]))
    state, metrics = step(state, batch, superior)
    logged.append(float(metrics['learning_rate']))
  expected = [0.1] * SPE + [0.01] * SPE  # the smoke config: lr 0.1, x0.1 after epoch 1
  assert logged == pytest.approx(expected, rel=1e-6)
  assert applied == pytest.approx(expected, rel=1e-4)


def test_aikd_loss_is_the_weighted_sum_of_independent_terms():
  config, method, model, state, superior, step, batch = _setup('aikd', tau_p=2.0, tau_g=3.0)
  state = state.replace(student=state.student.replace(step=jnp.asarray(SPE)))  # epoch 1
  # Make the previous snapshot differ from the student, so the progressive term is not 0.
  previous = dict(model.init(jax.random.key(3), jnp.zeros((1, *IMAGE_SHAPE)), train=False))
  state = state.replace(method=dict(state.method, previous=previous))
  student_vars = {'params': state.student.params, 'batch_stats': state.student.batch_stats}
  z = model.apply(student_vars, batch['image'], train=True, mutable=['batch_stats'])[0]
  z_sup = model.apply(superior, batch['image'], train=False)
  z_prev = model.apply(previous, batch['image'], train=False)
  critic = state.method['critic']
  d = critic.apply_fn({'params': critic.params, 'batch_stats': critic.batch_stats}, z,
                      train=True, mutable=['batch_stats'])[0]
  expected = {'ce': losses.cross_entropy(z, batch['label']),
              'progressive': losses.kd_kl(z, z_prev, 2.0),
              'guide': losses.kd_kl(z, z_sup, 3.0),
              'adversarial': -jnp.mean(d)}
  _, metrics = jax.jit(step)(state, batch, superior)
  for k, v in expected.items():
    np.testing.assert_allclose(metrics[k], v, rtol=2e-5, atol=1e-6, err_msg=k)
  total = 0.6 * expected['ce'] + 0.3 * expected['progressive'] + 0.1 * expected['guide'] \
      + 0.1 * expected['adversarial']
  np.testing.assert_allclose(metrics['loss'], total, rtol=2e-5)


def test_progressive_target_is_one_hot_in_the_first_epoch():
  _, _, _, state, superior, step, batch = _setup('only_progressive', tau_p=4.0)
  z = state.student.apply_fn({'params': state.student.params,
                              'batch_stats': state.student.batch_stats}, batch['image'],
                             train=True, mutable=['batch_stats'])[0]
  _, metrics = jax.jit(step)(state, batch, superior)
  expected = 16.0 * losses.cross_entropy(z / 4.0, batch['label'])
  np.testing.assert_allclose(metrics['progressive'], expected, rtol=2e-5)


def test_critic_update_matches_wgan_gp_loss_and_moves_only_the_critic():
  config, _, _, state, superior, step, batch = _setup('aikd')
  new_state, metrics = jax.jit(step)(state, batch, superior)
  assert np.isfinite(metrics['critic_loss'])
  np.testing.assert_allclose(
      metrics['critic_loss'],
      -metrics['wasserstein'] + config.methods['aikd'].gp_weight * metrics['gradient_penalty'],
      rtol=1e-5)
  before, after = state.method['critic'].params, new_state.method['critic'].params
  moved = flax.traverse_util.flatten_dict(jax.tree.map(
      lambda a, b: not np.allclose(a, b), before, after))
  # The output bias cancels in mean D(fake) - mean D(real) and the penalty ignores it.
  output_bias = [k for k in moved if k[0] == 'fc3' and k[-1] == 'bias']
  assert len(output_bias) == 1 and not moved.pop(output_bias[0])
  assert all(moved.values())
  # One Adam step with lr 1e-4 moves each critic weight by at most ~lr.
  delta = jax.tree.map(lambda a, b: np.max(np.abs(a - b)), before, after)
  assert max(jax.tree.leaves(delta)) <= 1.01 * config.methods['aikd'].critic_lr


@pytest.mark.parametrize('norm', ['batch', 'layer', 'none'])
def test_aikd_step_trains_the_critic_with_each_norm(norm):
  _, _, _, state, superior, step, batch = _setup('aikd', critic_norm=norm)
  new_state, metrics = jax.jit(step)(state, batch, superior)
  assert np.isfinite(metrics['critic_loss']) and np.isfinite(metrics['loss'])
  assert bool(new_state.method['critic'].batch_stats) == (norm == 'batch')
  moved = jax.tree.map(lambda a, b: not np.allclose(a, b), state.method['critic'].params,
                       new_state.method['critic'].params)
  assert sum(jax.tree.leaves(moved)) > 0


@pytest.mark.parametrize('norm', ['batch', 'layer', 'none'])
def test_critic_norm_options(norm):
  critic = models.Critic(norm=norm)
  x = jax.random.normal(jax.random.key(0), (6, NUM_CLASSES))
  variables = critic.init(jax.random.key(1), x, train=False)
  assert ('batch_stats' in variables) == (norm == 'batch')
  out = critic.apply(variables, x, train=True, mutable=['batch_stats'])[0]
  assert out.shape == (6,)


def test_critic_parameter_count():
  variables = models.Critic().init(jax.random.key(0), jnp.zeros((2, 100)), train=False)
  count = sum(x.size for x in jax.tree.leaves(variables['params']))
  # FC(100->64) + BN(64) + FC(64->32) + FC(32->1)
  assert count == (100 * 64 + 64) + 2 * 64 + (64 * 32 + 32) + (32 + 1)


def test_epoch_end_snapshot_is_a_copy_that_survives_donation():
  _, method, _, state, superior, step, batch = _setup('only_progressive')
  snap = method.end_epoch(state.method, state_lib.variables_of(state.student))['previous']
  before = jax.tree.map(np.asarray, snap)
  jax.jit(step, donate_argnums=(0,))(state, batch, superior)
  jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, snap))


def test_mixed_labels_reach_the_losses_through_one_target():
  """With CutMix on, CE is lam CE(y_a) + (1 - lam) CE(y_b) on the mixed images."""
  from aikd_jax import mixing  # pylint: disable=g-import-not-at-top
  config, _, model, state, superior, step, batch = _setup('aikd', augment={'cutmix': 1.0})
  step_key = jax.random.fold_in(jax.random.key(config.seed), 0)
  mixed, _ = mixing.apply(steps.augment_key(step_key), dict(batch), config.augment,
                          NUM_CLASSES)
  lam, perm = mixed['mix_lam'], mixed['mix_perm']
  assert 0 < lam < 1
  z = model.apply({'params': state.student.params, 'batch_stats': state.student.batch_stats},
                  mixed['image'], train=True, mutable=['batch_stats'])[0]
  y = batch['label']
  expected = lam * losses.cross_entropy(z, y) + (1 - lam) * losses.cross_entropy(z, y[perm])
  _, metrics = jax.jit(step)(state, batch, superior)
  np.testing.assert_allclose(metrics['ce'], expected, rtol=2e-5)
  np.testing.assert_allclose(metrics['guide'], losses.kd_kl(
      z, model.apply(superior, mixed['image'], train=False), 1.0), rtol=2e-5)
