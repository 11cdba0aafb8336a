"""End to end: both phases, outputs, skipping, exact resume, 1 vs 4 devices, bad input."""
import os
import signal
import socket
import subprocess

import jax
import numpy as np
import pytest

from aikd_jax import checkpointing, models, run
from aikd_jax import results as results_lib
from aikd_jax.data.pipeline import Pipeline
from aikd_jax.errors import UserError
from aikd_jax.train import loop

from tests.runs import (RESULT_KEYS, ROOT, cli, cli_command, comparable, params_of, read_json,
                        smoke_config, start_long_student)


def test_both_phases_write_their_outputs(finished):
  workdir, results = finished
  assert set(read_json(os.path.join(workdir, 'config.json'))) >= {'method', 'aikd', 'data'}
  for phase, method, seed in (('superior', 'baseline', 1), ('student', 'aikd', 0)):
    d = os.path.join(workdir, phase)
    res = read_json(os.path.join(d, 'results.json'))
    assert set(res) == RESULT_KEYS and res == results[phase]
    assert (res['method'], res['seed'], res['epochs'], res['steps']) == (method, seed, 2, 6)
    assert 0 <= res['top5_err'] <= res['top1_err'] <= 100
    with open(os.path.join(d, 'reliability.png'), 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    assert any(f.startswith('events.out.tfevents') for f in os.listdir(d))
    assert sorted(os.listdir(os.path.join(d, 'checkpoints')), key=int) == ['3', '6']


def test_summaries_hold_every_loss_term(finished):
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  ea = event_accumulator.EventAccumulator(os.path.join(finished[0], 'student'),
                                          size_guidance={'tensors': 0})
  ea.Reload()
  tags = set(ea.Tags()['tensors'])
  for term in ('loss', 'ce', 'progressive', 'guide', 'adversarial', 'critic_loss',
               'wasserstein', 'gradient_penalty', 'learning_rate', 'grad_norm'):
    assert f'train/{term}' in tags
  for metric in ('top1_err', 'top5_err', 'f1_macro', 'ece', 'ece_ts', 'nll'):
    assert f'eval/{metric}' in tags
  assert 'steps_per_sec' in tags


def test_summaries_hold_each_phase_hyperparameters(finished, data_dirs):
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  from tensorboard.plugins.hparams import plugin_data_pb2  # pylint: disable=g-import-not-at-top
  from aikd_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  for phase, method in (('superior', 'baseline'), ('student', 'aikd')):
    ea = event_accumulator.EventAccumulator(os.path.join(finished[0], phase))
    ea.Reload()
    [content] = ea.PluginTagToContent('hparams').values()
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    written = {k: getattr(v, v.WhichOneof('kind')) for k, v in start.hparams.items()}
    assert written['method'] == method and written['optim.lr'] == pytest.approx(0.1)
    assert written['optim.lr_milestones'] == '[1]' and written['model.width'] == 4
    assert ('aikd.omega' in written) == (method == 'aikd') and 'cskd.lam' not in written
  expected = loop.hparams(config_lib.parse(smoke_config(data_dirs)))
  assert written == pytest.approx(expected)  # the student's: numbers come back as floats


def test_exported_model_reproduces_the_reported_error(finished, data_dirs):
  workdir, results = finished
  module, variables = models.load(os.path.join(workdir, 'student'))
  pipeline = Pipeline(smoke_config(data_dirs))
  correct = total = 0
  for batch in pipeline.eval_batches():
    logits = module.apply(variables, batch['image'], train=False)
    hit = np.asarray(np.argmax(logits, -1) == batch['label'])
    correct += int(np.sum(hit & batch['mask']))
    total += int(np.sum(batch['mask']))
  assert total == 40
  assert 100 * (1 - correct / total) == pytest.approx(results['student']['top1_err'])


def test_finished_phases_are_skipped(finished, data_dirs):
  workdir, results = finished
  stamp = os.path.getmtime(os.path.join(workdir, 'student', 'results.json'))
  assert run.run(smoke_config(data_dirs), workdir) == results
  assert os.path.getmtime(os.path.join(workdir, 'student', 'results.json')) == stamp


def test_resume_mid_epoch_is_exact(finished, data_dirs, tmp_path):
  """A student stopped mid-epoch and resumed equals the uninterrupted one, bit for bit."""
  workdir, results = finished
  config = smoke_config(data_dirs, superior_workdir=workdir)
  calls = []
  stop_at_second_step = lambda: calls.append(1) or len(calls) == 2
  with pytest.raises(loop.Preempted):
    run.run(config, str(tmp_path), stop_requested=stop_at_second_step)
  assert sorted(os.listdir(tmp_path / 'student' / 'checkpoints')) == ['2']
  resumed = run.run(config, str(tmp_path))
  jax.tree.map(np.testing.assert_array_equal, params_of(os.path.join(workdir, 'student')),
               params_of(str(tmp_path / 'student')))
  assert comparable(resumed['student']) == comparable(results['student'])


def test_damaged_newest_checkpoint_falls_back(tmp_path):
  ckpt = checkpointing.TrainCheckpointer(str(tmp_path))
  for step in (1, 2):
    ckpt.save(step, {'w': np.full((3,), float(step))}, {'epoch': step})
  ckpt.close()
  os.remove(tmp_path / '2' / 'state' / 'manifest.ocdbt')
  state, meta = checkpointing.TrainCheckpointer(str(tmp_path)).restore_latest(
      {'w': np.zeros((3,))})
  assert meta == {'epoch': 1}
  np.testing.assert_array_equal(state['w'], [1.0, 1.0, 1.0])


def test_checkpoint_with_a_flipped_byte_is_moved_aside(tmp_path):
  """Orbax's compressed chunks have no checksum: without ours, the flip restores silently."""
  ckpt = checkpointing.TrainCheckpointer(str(tmp_path))
  weights = np.random.RandomState(0).randn(4096).astype(np.float32)
  for step in (1, 2):
    ckpt.save(step, {'w': weights * step, 'key': jax.random.key(step)}, {'epoch': step})
  ckpt.close()
  files = [os.path.join(root, f) for root, _, names in os.walk(tmp_path / '2' / 'state' /
                                                                'ocdbt.process_0') for f in names]
  largest = max(files, key=os.path.getsize)  # the array's data
  data = bytearray(open(largest, 'rb').read())
  data[len(data) // 2] ^= 0x10
  with open(largest, 'wb') as f:
    f.write(data)
  state, meta = checkpointing.TrainCheckpointer(str(tmp_path)).restore_latest(
      {'w': np.zeros(4096, np.float32), 'key': jax.random.key(0)})
  assert meta == {'epoch': 1}
  np.testing.assert_array_equal(state['w'], weights)
  assert os.listdir(tmp_path / 'damaged') == ['2']


def test_workdir_of_another_config_is_refused(finished, data_dirs):
  with pytest.raises(UserError, match='differs in: seed'):
    run.run(smoke_config(data_dirs, seed=5), finished[0])


def test_superior_of_another_architecture_is_refused(finished, data_dirs, tmp_path):
  config = smoke_config(data_dirs, superior_workdir=finished[0])
  config.model.width = 8
  with pytest.raises(UserError, match='does not fit this run: width 4'):
    run.run(config, str(tmp_path))
  config.model.width = 4
  config.data.name = 'cifar100'
  with pytest.raises(UserError):
    run.run(config, str(tmp_path / 'other'))


@pytest.mark.slow
def test_four_devices_match_one(finished, data_dirs, tmp_path):
  """The student phase on 4 forced CPU devices ends where the 1-device run ends."""
  flags = [f'--config.superior_workdir={finished[0]}']
  outs = {}
  for n in (1, 4):
    proc = cli(str(tmp_path / f'd{n}'), data_dirs, *flags, devices=n)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outs[n] = (read_json(tmp_path / f'd{n}' / 'student' / 'results.json'),
               params_of(str(tmp_path / f'd{n}' / 'student')))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-4, rtol=1e-3),
               outs[1][1], outs[4][1])
  for key in ('top1_err', 'top5_err', 'nll', 'ece'):
    assert outs[4][0][key] == pytest.approx(outs[1][0][key], abs=1e-2), key


@pytest.mark.slow
def test_two_processes_train_together(finished, data_dirs, tmp_path):
  """Two local processes (jax.distributed, one CPU device each) train one student."""
  with socket.socket() as sock:
    sock.bind(('localhost', 0))
    port = sock.getsockname()[1]
  procs = []
  for i in range(2):
    args, env = cli_command(str(tmp_path), data_dirs, f'--config.superior_workdir={finished[0]}',
                            f'--coordinator=localhost:{port}', '--num_processes=2',
                            f'--process_id={i}')
    procs.append(subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True))
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  # Only process 0 prints the summary.
  assert 'top-1 err' in outs[0][0] and 'top-1 err' not in outs[1][0], (outs[0], outs[1][0])
  res = read_json(tmp_path / 'student' / 'results.json')
  assert (res['steps'], res['epochs'], res['method']) == (6, 2, 'aikd')
  assert sorted(os.listdir(tmp_path / 'student' / 'checkpoints'), key=int) == ['3', '6']
  assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(params_of(str(tmp_path / 'student'))))


def test_cli_sigterm_saves_a_checkpoint_and_exits_zero(finished, data_dirs, tmp_path):
  proc = start_long_student(finished, data_dirs, tmp_path)
  proc.send_signal(signal.SIGTERM)
  _, rest = proc.communicate(timeout=300)
  assert proc.returncode == 0, rest[-3000:]
  assert 'stopped:' in rest and 'run the same command again to resume' in rest
  assert os.listdir(tmp_path / 'student' / 'checkpoints')
  assert not os.path.exists(tmp_path / 'student' / 'results.json')


def _one_error_line(proc):
  lines = [l for l in proc.stderr.splitlines() if l.startswith('error:')]
  assert proc.returncode != 0
  assert len(lines) == 1 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  return lines[0]


def test_cli_unknown_config_key(data_dirs, tmp_path):
  line = _one_error_line(cli(str(tmp_path), data_dirs, '--config.optim.lrr=0.1'))
  assert 'lrr' in line and 'lr' in line
  assert not os.path.exists(tmp_path / 'config.json')


def test_cli_unprepared_dataset(data_dirs, tmp_path):
  line = _one_error_line(cli(str(tmp_path / 'w'), data_dirs, '--config.data.name=cifar100',
                             f'--config.data.tfds_dir={tmp_path}/empty'))
  assert 'cifar100' in line and 'aikd_jax.data.builders cifar100' in line


def test_cli_superior_of_another_width(finished, data_dirs, tmp_path):
  before = sorted(os.listdir(os.path.join(finished[0], 'superior')))
  line = _one_error_line(cli(str(tmp_path), data_dirs, f'--config.superior_workdir={finished[0]}',
                             '--config.model.width=8'))
  assert 'does not fit' in line
  assert sorted(os.listdir(os.path.join(finished[0], 'superior'))) == before


def test_cli_non_finite_loss_keeps_last_good_checkpoint(finished, data_dirs, tmp_path):
  """Epoch 1 trains normally; at epoch 2 the LR jumps to 1e30 and the loss blows up."""
  proc = cli(str(tmp_path), data_dirs, f'--config.superior_workdir={finished[0]}',
             '--config.optim.lr_decay=1e31')
  line = _one_error_line(proc)
  assert 'non-finite' in line and 'at step' in line
  assert sorted(os.listdir(tmp_path / 'student' / 'checkpoints')) == ['3']
  assert not os.path.exists(tmp_path / 'student' / 'results.json')


def test_superior_init_and_model_init(finished, data_dirs, tmp_path):
  """An exported model serves as the superior (phase 1 only scores it) and as init."""
  workdir, results = finished
  superior_model = os.path.join(workdir, 'superior', 'model')
  config = smoke_config(data_dirs, superior_init=superior_model, method='only_guide',
                        num_epochs=1)
  config.model.init = superior_model
  out = run.run(config, str(tmp_path))
  scored = {k: out['superior'][k] for k in ('top1_err', 'nll')}
  assert scored == {k: results['superior'][k] for k in ('top1_err', 'nll')}
  assert out['superior']['method'] == 'imported' and out['student']['epochs'] == 1
  assert 'superior' in run.summary(out, config, str(tmp_path))


def test_score_phase_writes_a_trained_phases_results_for_0_epochs(finished, data_dirs,
                                                                 tmp_path):
  """Scoring the exported superior gives its trained phase's numbers, marked 'imported'."""
  from aikd_jax import config as config_lib, methods, sharding  # pylint: disable=g-import-not-at-top
  workdir, results = finished
  model_dir = os.path.join(workdir, 'superior', 'model')
  config = run.superior_config(config_lib.parse(smoke_config(data_dirs)))
  phase = loop.Phase('superior', str(tmp_path), config, methods.create(config))
  variables = checkpointing.load_model(model_dir)[1]
  returned = loop.score_phase(phase, variables, model_dir, Pipeline(config), sharding.make_mesh())
  out = read_json(tmp_path / 'results.json')  # inf as 'inf', like the trained phase's
  assert list(returned) == list(out) == [*results_lib.KEYS, 'source']
  trained = results['superior']
  for key in results_lib.METRIC_KEYS + ('phase', 'dataset', 'arch', 'superior'):
    same = (pytest.approx(trained[key], abs=1e-6) if isinstance(trained[key], float)
            else trained[key])
    assert out[key] == same, key
  assert (out['method'], out['seed'], out['source']) == ('imported', None, model_dir)
  assert (out['epochs'], out['steps'], out['train_time_s'], out['images_per_s']) == (0, 0, 0.0, 0.0)
  assert (out['best_top1_err'], out['best_epoch'], out['throughput']) == (out['top1_err'], 0, None)
  assert out['provenance']['config']['num_epochs'] == 0
  # Nothing trained or exported: no checkpoints, no model, no summaries.
  assert sorted(os.listdir(tmp_path)) == ['predictions.npz', 'reliability.png', 'results.json']
  with np.load(tmp_path / 'predictions.npz') as scored, \
       np.load(os.path.join(workdir, 'superior', 'predictions.npz')) as saved:
    assert sorted(scored.files) == ['features', 'labels', 'logits']
    np.testing.assert_array_equal(scored['labels'], saved['labels'])
    np.testing.assert_allclose(scored['logits'], saved['logits'], atol=1e-5)


def test_model_init_overlay_keeps_a_new_head():
  from aikd_jax.train import state as state_lib  # pylint: disable=g-import-not-at-top
  fresh = {'params': {'conv': {'kernel': np.zeros((3, 3, 1, 4), np.float32)},
                      'linear': {'kernel': np.zeros((4, 10), np.float32), 'bias': np.zeros((10,), np.float32)}}}
  given = {'params': {'conv': {'kernel': np.ones((3, 3, 1, 4), np.float32)},
                      'linear': {'kernel': np.ones((4, 1000), np.float32), 'bias': np.ones((1000,), np.float32)}}}
  out = state_lib.overlay_pretrained(fresh, given, num_classes=10)
  np.testing.assert_array_equal(out['params']['conv']['kernel'], 1.0)
  np.testing.assert_array_equal(out['params']['linear']['kernel'], 0.0)
  given['params']['conv']['kernel'] = np.ones((3, 3, 1, 8), np.float32)
  with pytest.raises(UserError, match='conv/kernel has shape'):
    state_lib.overlay_pretrained(fresh, given, num_classes=10)
