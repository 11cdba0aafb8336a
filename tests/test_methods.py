"""The peer methods (TF-KD, PS-KD, CS-KD, Zipf's LS, TF-FD) and AI-KD's table mode through
the generic step: each loss against the loss functions on the same forward outputs, the
state they keep, what they trace (forward passes per step), and smoke runs end to end."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from aikd_jax import config as config_lib
from aikd_jax import losses, methods, models, run
from aikd_jax.methods import base
from aikd_jax.train import loop
from aikd_jax.train import state as state_lib
from aikd_jax.train import steps
from configs import demo
from tests import runs
from tests.runs import comparable, count_convs

NUM_CLASSES, SPE, NUM_TRAIN, BATCH = 10, 4, 32, 8  # Fashion-MNIST has 10 classes
IMAGE_SHAPE = (8, 8, 1)
PEERS = ('tfkd', 'pskd', 'cskd', 'zipf_ls', 'tffd')


def typed_config(method: str, **overrides) -> config_lib.RunConfig:
  """configs/demo.py:smoke with `method`, a width-2 model and `overrides` ('group.key')."""
  return config_lib.parse(runs.set_keys(demo.get_config('smoke'),
                                        {'method': method, 'model.width': 2, **overrides}))


class Setup:
  """A method's model, initial state, superior, pure train step and one batch."""

  def __init__(self, method: str, **overrides):
    self.config = config = typed_config(method, **overrides)
    self.method = methods.create(config)
    self.model = models.create(config.model.arch, NUM_CLASSES, width=config.model.width)
    self.state = state_lib.create_state(
        jax.random.key(0), model=self.model, method=self.method, optim=config.optim,
        image_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES, num_train_examples=NUM_TRAIN,
        steps_per_epoch=SPE)
    self.superior = (dict(self.model.init(jax.random.key(7), jnp.zeros((1, *IMAGE_SHAPE)),
                                          train=False))
                     if self.method.needs_superior else None)
    self.step = steps.make_train_step(
        model=self.model, method=self.method, augment=config.augment, seed=config.seed,
        num_classes=NUM_CLASSES, steps_per_epoch=SPE)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, NUM_CLASSES, BATCH)
    self.batch = {'image': jnp.asarray(rng.normal(size=(BATCH, *IMAGE_SHAPE)), jnp.float32),
                  'label': jnp.asarray(labels, jnp.int32),
                  'id': jnp.asarray(rng.permutation(NUM_TRAIN)[:BATCH], jnp.int32)}
    if self.method.batch == 'paired':
      self.batch.update(
          pair_image=jnp.asarray(rng.normal(size=(BATCH, *IMAGE_SHAPE)), jnp.float32),
          pair_label=jnp.asarray(labels, jnp.int32),
          pair_id=jnp.asarray(rng.permutation(NUM_TRAIN)[:BATCH], jnp.int32))

  @property
  def variables(self):
    return state_lib.variables_of(self.state.student)

  def at_epoch(self, epoch: int):
    """The state moved to the first step of `epoch` (the step counter only)."""
    self.state = self.state.replace(
        student=self.state.student.replace(step=jnp.asarray(epoch * SPE)))
    return self

  def train_forward(self, images, variables=None, features=False):
    """Train-mode (logits or (logits, features), new batch_stats), outside the step."""
    out, new = self.model.apply(variables or self.variables, images, train=True,
                                features=features, mutable=['batch_stats'])
    return out, new['batch_stats']

  def run_step(self):
    return jax.jit(self.step)(self.state, self.batch, self.superior)

  def convs(self) -> int:
    return count_convs(jax.make_jaxpr(self.step)(self.state, self.batch, self.superior).jaxpr)


def one_hot(labels):
  return jax.nn.one_hot(labels, NUM_CLASSES, dtype=jnp.float32)


def assert_terms(metrics, total, terms):
  np.testing.assert_allclose(metrics['loss'], total, rtol=2e-5, atol=1e-7)
  for name, value in terms.items():
    np.testing.assert_allclose(metrics[name], value, rtol=2e-5, atol=1e-7, err_msg=name)


# -- each loss against the loss functions on the same forward outputs ---------------------
def test_tfkd_step_loss():
  s = Setup('tfkd', **{'tfkd.alpha': 0.7, 'tfkd.temperature': 3.0, 'tfkd.multiplier': 5.0})
  z, _ = s.train_forward(s.batch['image'])
  z_teacher = s.model.apply(s.superior, s.batch['image'], train=False)  # eval mode
  total, terms = losses.tfkd_loss(z, one_hot(s.batch['label']), z_teacher, 0.7, 3.0, 5.0)
  _, metrics = s.run_step()
  assert_terms(metrics, total, terms)
  assert terms['kd'] > 0


def test_pskd_step_loss_mixes_the_table_rows():
  s = Setup('pskd', **{'pskd.alpha_t': 0.6}).at_epoch(1)  # smoke: 2 epochs, so a_t = 0.6
  table = jax.nn.softmax(jax.random.normal(jax.random.key(3), (NUM_TRAIN, NUM_CLASSES)) * 2)
  s.state = s.state.replace(method={'table': table})
  z, _ = s.train_forward(s.batch['image'])
  q = 0.4 * one_hot(s.batch['label']) + 0.6 * table[s.batch['id']]
  total, terms = losses.pskd_loss(z, q)
  _, metrics = s.run_step()
  assert_terms(metrics, total, terms)
  assert not np.allclose(total, losses.soft_cross_entropy(z, one_hot(s.batch['label'])))


def test_pskd_and_aikd_tables_read_a_never_written_row_as_the_label():
  """An example skipped in epoch 0 (the dropped partial batch) still has its zero row in
  epoch 1: PS-KD's target and AI-KD's progressive target are then its one-hot label."""
  s = Setup('pskd', **{'pskd.alpha_t': 0.6}).at_epoch(1)
  table = jax.nn.softmax(jax.random.normal(jax.random.key(3), (NUM_TRAIN, NUM_CLASSES)) * 2)
  unwritten = s.batch['id'][:3]
  s.state = s.state.replace(method={'table': table.at[unwritten].set(0.0)})
  z, _ = s.train_forward(s.batch['image'])
  rows = table[s.batch['id']].at[:3].set(one_hot(s.batch['label'][:3]))
  _, metrics = s.run_step()
  assert_terms(metrics, *losses.pskd_loss(z, 0.4 * one_hot(s.batch['label']) + 0.6 * rows))

  s = Setup('only_progressive', **{'aikd.previous': 'table', 'aikd.tau_p': 2.0}).at_epoch(1)
  logits = jax.random.normal(jax.random.key(4), (NUM_TRAIN, NUM_CLASSES)) * 3
  s.state = s.state.replace(method={'table': logits.at[unwritten].set(0.0)})
  z, _ = s.train_forward(s.batch['image'])
  target = jax.nn.softmax(logits[s.batch['id']] / 2.0).at[:3].set(
      one_hot(s.batch['label'][:3]))
  _, metrics = s.run_step()
  np.testing.assert_allclose(metrics['progressive'], losses.kl_to_distribution(z, target, 2.0),
                             rtol=2e-5, atol=1e-7)


def test_cskd_step_loss():
  s = Setup('cskd', **{'cskd.temperature': 3.0, 'cskd.lam': 2.0})
  z, stats = s.train_forward(s.batch['image'])
  # The pair forward starts from the anchors' new statistics (train mode: they only move).
  z_pair, _ = s.train_forward(s.batch['pair_image'],
                              {'params': s.state.student.params, 'batch_stats': stats})
  total, terms = losses.cskd_loss(z, z_pair, one_hot(s.batch['label']), 3.0, 2.0)
  _, metrics = s.run_step()
  assert_terms(metrics, total, terms)
  assert terms['kd'] > 0


def test_zipf_ls_step_loss():
  s = Setup('zipf_ls', **{'zipf_ls.lam': 0.5, 'zipf_ls.upsample': True})
  (z, feats), _ = s.train_forward(s.batch['image'], features=True)
  head = s.state.student.params['linear']
  votes = losses.dense_votes(feats['prepool'], head['kernel'], head['bias'], upsample=True)
  assert float(jnp.sum(votes)) == BATCH * 4 * feats['prepool'].shape[1] ** 2  # x2 upsampled
  total, terms = losses.zipf_ls_loss(z, one_hot(s.batch['label']), votes,
                                     s.batch['label'], None, 0.5)
  _, metrics = s.run_step()
  assert_terms(metrics, total, terms)
  assert terms['zipf'] > 0


def test_tffd_step_loss_ramps_the_feature_terms():
  s = Setup('tffd', **{'tffd.lambda_inter': 0.5, 'tffd.lambda_intra': 0.25}).at_epoch(5)
  (z, feats), _ = s.train_forward(s.batch['image'], features=True)
  inter, intra = losses.tffd_inter(feats['stages']), losses.tffd_intra(feats['stages'])
  ce = losses.soft_cross_entropy(z, one_hot(s.batch['label']))
  total = ce + (6 / 20) * (0.5 * inter + 0.25 * intra)  # 0-indexed epoch 5: ramp 6/20
  _, metrics = s.run_step()
  assert_terms(metrics, total, {'ce': ce, 'inter': inter, 'intra': intra})


# -- state --------------------------------------------------------------------------------
def test_pskd_first_epoch_is_plain_ce_and_the_table_stores_train_mode_softmax():
  s = Setup('pskd')
  table = jax.nn.softmax(jax.random.normal(jax.random.key(3), (NUM_TRAIN, NUM_CLASSES)))
  s.state = s.state.replace(method={'table': table})  # not read in epoch 0
  z, _ = s.train_forward(s.batch['image'])  # the pre-update weights
  new_state, metrics = s.run_step()
  np.testing.assert_allclose(metrics['loss'],
                             losses.soft_cross_entropy(z, one_hot(s.batch['label'])), rtol=2e-5)
  new_table, ids = np.asarray(new_state.method['table']), np.asarray(s.batch['id'])
  np.testing.assert_allclose(new_table[ids], jax.nn.softmax(z), rtol=1e-5, atol=1e-7)
  others = np.setdiff1d(np.arange(NUM_TRAIN), ids)
  np.testing.assert_array_equal(new_table[others], np.asarray(table)[others])


def test_pskd_initial_table():
  s = Setup('pskd')
  assert s.state.method['table'].shape == (NUM_TRAIN, NUM_CLASSES)
  assert s.state.method['table'].dtype == jnp.float32
  np.testing.assert_array_equal(s.state.method['table'], 0.0)


def test_cskd_pair_updates_batch_norm_but_gets_no_gradient():
  s = Setup('cskd')
  params, images, pairs = s.state.student.params, s.batch['image'], s.batch['pair_image']
  _, anchor_stats = s.train_forward(images)
  _, both_stats = s.train_forward(pairs, {'params': params, 'batch_stats': anchor_stats})
  new_state, _ = s.run_step()
  stats = new_state.student.batch_stats
  # The pair forward moved the running statistics a second time, after the anchors'.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               stats, both_stats)
  assert not all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(stats),
                                                   jax.tree.leaves(anchor_stats)))
  # The gradient is that of the objective with the pair logits as constants.
  forward = steps.student_forward(s.model.apply, features=False)
  inputs = base.StepInputs(batch=s.batch, targets=one_hot(s.batch['label']),
                           key=jax.random.key(0), step=jnp.asarray(0), epoch=jnp.asarray(0),
                           superior_logits=None)
  loss_of = lambda p: s.method.loss(forward, p, s.state.student.batch_stats, None, inputs)[0]
  grads = jax.jit(jax.grad(loss_of))(params)
  z_pair, _ = s.train_forward(pairs, {'params': params, 'batch_stats': anchor_stats})
  z_pair = np.asarray(z_pair)  # a constant

  def constant_pair_objective(p):
    z, _ = s.train_forward(images, {'params': p, 'batch_stats': s.state.student.batch_stats})
    return losses.cskd_loss(z, z_pair, one_hot(s.batch['label']), 4.0, 1.0)[0]

  expected = jax.jit(jax.grad(constant_pair_objective))(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               grads, expected)
  _, metrics = s.run_step()
  np.testing.assert_allclose(metrics['grad_norm'], optax.tree.norm(expected), rtol=1e-4)


def test_aikd_table_stores_train_mode_logits_at_the_batch_ids():
  s = Setup('aikd', **{'aikd.previous': 'table'})
  assert set(s.state.method) == {'table', 'critic'}
  z, _ = s.train_forward(s.batch['image'])
  new_state, _ = s.run_step()
  table, ids = np.asarray(new_state.method['table']), np.asarray(s.batch['id'])
  np.testing.assert_allclose(table[ids], z, rtol=1e-5, atol=1e-6)
  others = np.setdiff1d(np.arange(NUM_TRAIN), ids)
  np.testing.assert_array_equal(table[others], 0.0)


# -- what a step traces -------------------------------------------------------------------
def test_forward_passes_per_step():
  """Zero-cost methods trace baseline's convolutions; CS-KD one more train-mode forward,
  TF-KD and AI-KD's table mode one eval-mode forward of the superior, and the snapshot
  mode one more (the previous epoch's weights)."""
  baseline = Setup('baseline')
  forward = count_convs(jax.make_jaxpr(
      lambda v, x: baseline.model.apply(v, x, train=False))(baseline.variables,
                                                             baseline.batch['image']).jaxpr)
  assert forward > 0
  convs = {'baseline': baseline.convs()}
  assert convs['baseline'] > forward  # and the backward pass
  for name in PEERS:
    convs[name] = Setup(name).convs()
  convs['aikd_table'] = Setup('aikd', **{'aikd.previous': 'table'}).convs()
  convs['aikd_snapshot'] = Setup('aikd').convs()
  extra = {'tfkd': 1, 'pskd': 0, 'cskd': 1, 'zipf_ls': 0, 'tffd': 0, 'aikd_table': 1,
           'aikd_snapshot': 2}
  assert {k: convs[k] - convs['baseline'] for k in extra} == {
      k: n * forward for k, n in extra.items()}


# -- end to end (slow) --------------------------------------------------------------------
@pytest.fixture(scope='module')
def fast_compile():
  """What `main.py` does for `fast_compile` configs (the CLI runs compare to these)."""
  before = jax.config.read('jax_disable_most_optimizations')
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', before)


def smoke_config(data_dirs, method, **overrides):
  """configs/demo.py:smoke on the fake files, as `runs.cli` gives it to the CLI."""
  return runs.smoke_config(data_dirs, method=method, **{'data.train_subset': 96, **overrides})


# The smoke runs: name -> (method, overrides). tfkd trains the superior the others share.
SMOKE = {'tfkd': ('tfkd', {}), 'pskd': ('pskd', {}), 'cskd': ('cskd', {}),
         'zipf_ls': ('zipf_ls', {}), 'tffd': ('tffd', {}),
         'aikd_table': ('aikd', {'aikd.previous': 'table'})}


@pytest.fixture(scope='module')
def smoke_runs(tmp_path_factory, data_dirs, fast_compile):
  del fast_compile
  out = {}
  for name, (method, overrides) in SMOKE.items():
    workdir = str(tmp_path_factory.mktemp(name))
    if name == 'aikd_table':
      overrides = dict(overrides, superior_workdir=out['tfkd'][0])
    out[name] = workdir, run.run(smoke_config(data_dirs, method, **overrides), workdir)
  return out


def final_state(phase_dir: str):
  """The newest train checkpoint's state as numpy arrays, whatever devices saved it."""
  root = os.path.join(phase_dir, 'checkpoints')
  path = os.path.join(root, str(max(int(n) for n in os.listdir(root) if n.isdigit())), 'state')
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  with ocp.StandardCheckpointer() as checkpointer:
    abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                            checkpointer.metadata(path).item_metadata.tree)
    return jax.tree.map(np.asarray, checkpointer.restore(path, abstract))


@pytest.mark.slow
def test_every_method_trains_end_to_end(smoke_runs):
  for name, (workdir, results) in smoke_runs.items():
    student = results['student']
    assert student['method'] == SMOKE[name][0] and student['steps'] == 6, name
    assert os.path.exists(os.path.join(workdir, 'student', 'results.json')), name
    assert np.isfinite(student['top1_err']) and 0 <= student['top1_err'] <= 100, name
    assert ('superior' in results) == (name in ('tfkd', 'aikd_table')), name
  assert os.path.exists(os.path.join(smoke_runs['tfkd'][0], 'superior', 'results.json'))
  table = final_state(os.path.join(smoke_runs['pskd'][0], 'student'))['method']['table']
  assert table.shape == (96, NUM_CLASSES)
  np.testing.assert_allclose(table.sum(-1), 1.0, rtol=1e-5)  # every example visited


@pytest.mark.slow
@pytest.mark.parametrize('name', ['pskd', 'aikd_table'])
def test_resume_mid_epoch_is_exact(smoke_runs, data_dirs, tmp_path, name):
  """Stopped after the second step and resumed: params and table bit for bit equal."""
  workdir, results = smoke_runs[name]
  method, overrides = SMOKE[name]
  if name == 'aikd_table':
    overrides = dict(overrides, superior_workdir=smoke_runs['tfkd'][0])
  config = smoke_config(data_dirs, method, **overrides)
  calls = []
  with pytest.raises(loop.Preempted):
    run.run(config, str(tmp_path), stop_requested=lambda: calls.append(1) or len(calls) == 2)
  assert sorted(os.listdir(tmp_path / 'student' / 'checkpoints')) == ['2']
  resumed = run.run(config, str(tmp_path))
  expected = final_state(os.path.join(workdir, 'student'))
  got = final_state(str(tmp_path / 'student'))
  jax.tree.map(np.testing.assert_array_equal, expected, got)
  assert 'table' in got['method']
  assert comparable(resumed['student']) == comparable(results['student'])


@pytest.mark.slow
@pytest.mark.parametrize('name', ['pskd', 'cskd', 'zipf_ls', 'tffd', 'tfkd'])
def test_four_devices_match_one(smoke_runs, data_dirs, tmp_path, name):
  """The CLI on 4 forced CPU devices ends where the 1-device run ends."""
  workdir, results = smoke_runs[name]
  superior = [f'--config.superior_workdir={workdir}'] if 'superior' in results else []
  proc = runs.cli(str(tmp_path), data_dirs, f'--config.method={name}', *superior, devices=4)
  assert proc.returncode == 0, proc.stderr[-3000:]
  one, four = final_state(os.path.join(workdir, 'student')), final_state(str(tmp_path / 'student'))
  # Zipf's votes (an argmax per position) and TF-FD's channel order (a sort by saliency)
  # are discontinuous: a 4-device reduction order can flip a near-tie, so their
  # parameters agree less tightly (about 1 %). PS-KD's too: its table feeds each epoch's
  # predictions back as targets, and on this width-4 model the 4-device reduction order
  # alone moves plain CE's gradient norm by 0.2 % at step 3 (1.490 against 1.493, the
  # baseline as much as PS-KD), which its table carries into epoch 2 (about 1e-3 in
  # parameters and table rows). The metrics below are as tight for all.
  loose = name in ('zipf_ls', 'tffd', 'pskd')
  atol, rtol = (5e-3, 5e-2) if loose else (2e-4, 1e-3)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=atol, rtol=rtol),
               one['student']['params'], four['student']['params'])
  if name == 'pskd':
    np.testing.assert_allclose(one['method']['table'], four['method']['table'], atol=5e-3)
  four_results = runs.read_json(tmp_path / 'student' / 'results.json')
  for key in ('top1_err', 'top5_err', 'nll', 'ece'):
    assert four_results[key] == pytest.approx(results['student'][key], abs=1e-2), key
