"""Packed seeds (aikd_jax/train/seeds.py, run.run_pack): several seeds as one program.

The exactness tests train a pack of seeds 0 and 1 and compare each seed with the unpacked
run of that seed: the same top-1 error (these smoke models are near chance, so one
near-tie may flip) and the NLL within 1e-3 relative.
"""
import json
import os
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aikd_jax import config as config_lib
from aikd_jax import run, sweep
from aikd_jax.errors import ConfigError, WorkdirError
from aikd_jax.train import loop
from aikd_jax.train import seeds as seeds_lib
from aikd_jax.train.loop import Preempted
from tests.runs import ROOT, read_json, smoke_config

FLIP = 100 / 40  # one test example of the fake Fashion-MNIST's 40, in percent


def _close(packed: dict, solo: dict) -> None:
  assert abs(packed['top1_err'] - solo['top1_err']) <= FLIP + 1e-9, (packed, solo)
  np.testing.assert_allclose(packed['nll'], solo['nll'], rtol=1e-3)


# -- the seed axis --------------------------------------------------------------------


def test_a_pack_stacks_and_unstacks_each_seeds_tree():
  pack = seeds_lib.of([3, 5, 7])
  trees = [{'w': np.full((2,), s, np.float32), 'n': np.int32(s)} for s in (3, 5, 7)]
  stacked = pack.stack(trees)
  assert stacked['w'].shape == (3, 2) and stacked['n'].tolist() == [3, 5, 7]
  back = pack.unstack(stacked)
  assert [t['w'].tolist() for t in back] == [[3, 3], [5, 5], [7, 7]]
  solo = seeds_lib.of([4])
  assert solo.stack([trees[0]]) is trees[0] and solo.unstack(trees[0]) == [trees[0]]
  with pytest.raises(ValueError):
    seeds_lib.Packed([1, 1])


def test_a_packed_step_gives_each_seed_its_own_key_and_state():
  """vmap over seeds equals calling the one-seed step per seed (keys from the seed)."""
  def make_step(seed):
    def step(state, batch, superior):
      del superior
      noise = jax.random.uniform(jax.random.key(seed), ())
      return state + batch.sum() + noise, {'noise': noise}
    return step
  pack = seeds_lib.of([0, 9])
  state, batch = jnp.array([1.0, 2.0]), jnp.arange(6.0).reshape(2, 3)
  new, metrics = pack.step(make_step)(state, batch, None)
  for k, seed in enumerate((0, 9)):
    want, m = make_step(seed)(state[k], batch[k], None)
    np.testing.assert_allclose(new[k], want, rtol=1e-6)
    np.testing.assert_allclose(metrics['noise'][k], m['noise'], rtol=1e-6)
  assert metrics['noise'][0] != metrics['noise'][1]


def test_seeds_that_fit():
  assert seeds_lib.seeds_that_fit(10, None, 3) is None  # a CPU: no limit known
  assert seeds_lib.seeds_that_fit(30, 30, 3) == 3
  assert seeds_lib.seeds_that_fit(30, 25, 3) == 2  # 10 per seed
  assert seeds_lib.seeds_that_fit(30, 9, 3) == 0


def test_a_pack_too_big_for_the_device_is_refused_naming_how_many_fit(monkeypatch):
  analysis = types.SimpleNamespace(argument_size_in_bytes=3 * 2**30, output_size_in_bytes=0,
                                   temp_size_in_bytes=3 * 2**30, alias_size_in_bytes=0)
  compiled = types.SimpleNamespace(memory_analysis=lambda: analysis)
  device = types.SimpleNamespace(memory_stats=lambda: {'bytes_limit': 4 * 2**30})
  monkeypatch.setattr(jax, 'local_devices', lambda: [device])
  with pytest.raises(ConfigError, match=r'a pack of 3 seeds needs about 6.0 GiB per device '
                     r'and the device has 4.0 GiB: at most 2 seeds fit'):
    loop.check_pack_fits(compiled, 3)
  device.memory_stats = lambda: {'bytes_limit': 8 * 2**30}
  loop.check_pack_fits(compiled, 3)  # fits: nothing raised


# -- packs against unpacked runs --------------------------------------------------------


def _pack(data_dirs, root, method, superior=None, seeds=(0, 1), **overrides):
  extra = {'superior_workdir': superior} if superior else {}
  configs = [smoke_config(data_dirs, method=method, seed=s, **extra, **overrides)
             for s in seeds]
  return run.run_pack(configs, [str(root / f'seed{s}') for s in seeds], str(root / 'pack'),
                      superior_only=False)


@pytest.mark.slow
@pytest.mark.parametrize('method,overrides', [
    ('baseline', {}), ('aikd', {'aikd.previous': 'table'}), ('pskd', {}), ('cskd', {})])
def test_each_seed_of_a_pack_equals_its_unpacked_run(data_dirs, finished, tmp_path, method,
                                                      overrides):
  superior = finished[0] if method == 'aikd' else None
  packed = _pack(data_dirs, tmp_path / 'packed', method, superior, **overrides)
  extra = {'superior_workdir': superior} if superior else {}
  solo = run.run(smoke_config(data_dirs, method=method, seed=1, **extra, **overrides),
                 str(tmp_path / 'solo1'))['student']
  _close(packed[1], solo)
  assert packed[1]['seed'] == 1 and packed[0]['seed'] == 0
  assert packed[0]['nll'] != packed[1]['nll']  # two seeds, not one copied
  for name in ('results.json', 'predictions.npz', 'model'):
    assert os.path.exists(tmp_path / 'packed' / 'seed1' / 'student' / name)
  assert any(f.startswith('events.out.tfevents')
             for f in os.listdir(tmp_path / 'packed' / 'seed1' / 'student'))


@pytest.mark.slow
def test_a_packed_aikd_student_equals_the_unpacked_one_and_resumes_exactly(
    data_dirs, finished, tmp_path):
  """Seed 0 of an AI-KD pack (snapshot mode) against the session's unpacked seed-0
  student of the same superior; a pack stopped mid-epoch resumes to the same numbers."""
  workdir, unpacked = finished
  calls = []
  with pytest.raises(Preempted):  # stopped at the 2nd of 3 steps of epoch 1
    run.run_pack([smoke_config(data_dirs, seed=s, superior_workdir=workdir) for s in (0, 1)],
                 [str(tmp_path / f'seed{s}') for s in (0, 1)], str(tmp_path / 'pack'),
                 superior_only=False, stop_requested=lambda: calls.append(1) or len(calls) >= 2)
  assert os.listdir(tmp_path / 'pack' / 'student' / 'checkpoints')
  resumed = _pack(data_dirs, tmp_path, 'aikd', workdir)
  _close(resumed[0], unpacked['student'])
  straight = _pack(data_dirs, tmp_path / 'straight', 'aikd', workdir)
  for a, b in zip(resumed, straight):
    assert (a['top1_err'], a['nll'], a['ece']) == (b['top1_err'], b['nll'], b['ece'])


def test_packed_and_unpacked_runs_never_mix_in_one_workdir(data_dirs, tmp_path):
  member, solo = tmp_path / 'member', tmp_path / 'solo'
  member.mkdir()
  (member / run.PACK_JSON).write_text('{"pack_dir": "/elsewhere/pack", "seed": 0}')
  with pytest.raises(WorkdirError, match='is one seed of a pack trained as one program'):
    run.run(smoke_config(data_dirs, method='baseline'), str(member))
  solo.mkdir()  # an unpacked run of seed 0 started here: its config.json, no pack.json
  configs = [smoke_config(data_dirs, method='baseline', seed=s) for s in (0, 1)]
  (solo / 'config.json').write_text(json.dumps(config_lib.parse(configs[0]).to_dict()))
  with pytest.raises(WorkdirError, match='holds a run started unpacked'):
    run.run_pack(configs,
                 [str(solo), str(tmp_path / 'other')], str(tmp_path / 'pack'),
                 superior_only=False)
  assert not os.path.exists(tmp_path / 'other') and not os.path.exists(tmp_path / 'pack')


def test_a_pack_of_runs_that_differ_in_more_than_the_seed_is_refused(data_dirs, tmp_path):
  configs = [smoke_config(data_dirs, method='baseline', seed=0),
             smoke_config(data_dirs, method='baseline', seed=1, **{'optim.lr': 0.05})]
  with pytest.raises(ConfigError, match='may differ only in their seed; these differ in: '
                     'optim.lr'):
    run.run_pack(configs, [str(tmp_path / 'a'), str(tmp_path / 'b')], str(tmp_path / 'p'),
                 superior_only=False)
  assert not os.listdir(tmp_path)


@pytest.mark.slow
def test_a_pack_on_four_devices_ends_where_it_ends_on_one(data_dirs, tmp_path):
  """The sweep's --pack_seeds on 4 forced CPU devices (each seed's batch sharded over
  them, the seed axis replicated) against the same pack on one device."""
  one = sweep.run_sweep(smoke_config(data_dirs), str(tmp_path / 'one'), ['pskd'], [0, 1],
                        log=lambda line: None, pack_seeds=True)
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4')
  proc = subprocess.run(
      [sys.executable, '-m', 'aikd_jax.sweep', '--config=configs/demo.py:smoke',
       f'--workdir={tmp_path / "four"}', '--methods=pskd', '--seeds=0,1', '--pack_seeds',
       '--config.data.train_subset=96',
       f'--config.data.manual_dir={data_dirs["manual_dir"]}',
       f'--config.data.tfds_dir={data_dirs["tfds_dir"]}'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for seed in (0, 1):
    four = read_json(tmp_path / 'four' / 'pskd' / f'seed{seed}' / 'student' / 'results.json')
    _close(four, one.results[f'pskd seed {seed} (pack of 2)'])
    assert four['provenance']['devices']['count'] == 4


def test_a_non_finite_loss_in_a_pack_names_its_seed():
  from aikd_jax.errors import NonFiniteLossError  # pylint: disable=g-import-not-at-top
  with pytest.raises(NonFiniteLossError, match=r'non-finite ce \(nan\) at step 7 \(seed 2\)'):
    loop._check_finite([(6, {'ce': 1.0}), (7, {'ce': float('nan')})], ' (seed 2)')
