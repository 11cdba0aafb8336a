"""The plan of a sweep without training: stable indices, sweep.json, cell states, one cell
by index (and from a scheduler's variable), SLURM scripts and array calls, the local pool's
slots, and the command line's one-line errors."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from aikd_jax import cells as cells_lib
from aikd_jax import local_pool, plan as plan_lib, run, slurm, sweep, workdir_lock
from aikd_jax.errors import ConfigError, SuperiorNotReadyError, WorkdirError
from tests.runs import ROOT, read_json, smoke_config


def _plan(data_dirs, workdir, methods=('baseline', 'aikd'), seeds=(0, 1), variants=None,
          **overrides):
  return sweep.plan_sweep(smoke_config(data_dirs, **overrides), str(workdir), methods, seeds,
                          variants)


def _finish(cell, top1=10.0):
  os.makedirs(cell.phase_dir, exist_ok=True)
  with open(os.path.join(cell.phase_dir, 'results.json'), 'w') as f:
    json.dump({'top1_err': top1}, f)


def test_a_grown_plan_keeps_every_index(data_dirs, tmp_path):
  first = _plan(data_dirs, tmp_path, ['baseline'], [0, 1])
  plan_lib.write(first)
  grown = _plan(data_dirs, tmp_path, ['baseline', 'aikd'], [0, 1, 2])
  old = {c.workdir: c.index for c in first.cells}
  assert all(old[c.workdir] == c.index for c in grown.cells if c.workdir in old)
  assert [c.index for c in grown.cells] == list(range(len(grown.cells)))
  assert len(grown.cells) == 3 * 3  # per seed: superior, baseline, aikd
  for c in grown.cells:
    if c.method == 'aikd':
      assert grown.cell(c.depends_on).workdir == os.path.join(str(tmp_path), 'superior',
                                                              f'seed{c.seed}')
  plan_lib.write(grown)
  again = plan_lib.read(str(tmp_path))
  assert again.cells == grown.cells and again.base_config == grown.base_config


def test_every_executor_gets_the_same_config(data_dirs, tmp_path):
  plan = _plan(data_dirs, tmp_path)
  plan_lib.write(plan)
  read = plan_lib.read(str(tmp_path))
  for a, b in zip(plan.cells, read.cells):
    assert plan_lib.cell_config(plan, a) == plan_lib.cell_config(read, b)
  aikd = next(c for c in plan.cells if c.method == 'aikd' and c.seed == 1)
  config = plan_lib.cell_config(plan, aikd)
  assert (config['method'], config['seed']) == ('aikd', 1)
  assert config['superior_workdir'] == plan.cell(aikd.depends_on).workdir


@pytest.mark.parametrize('content, says', [
    ('[1, 2]', 'a list, not an object'), ('{"base_config": {}, "cells": [{"index": 0}]}',
                                     'wrong shape'),
    ('{"base_config": 1}', 'no base_config'), ('{"base', 'is damaged')])
def test_a_damaged_plan_is_one_line(tmp_path, content, says):
  (tmp_path / 'sweep.json').write_text(content)
  with pytest.raises(WorkdirError, match=says):
    plan_lib.read(str(tmp_path))


def test_states_come_from_the_workdirs(data_dirs, tmp_path):
  plan = _plan(data_dirs, tmp_path)
  sup, base0, aikd0 = plan.cells[:3]
  assert {plan_lib.state(c) for c in plan.cells} == {'pending'}
  _finish(base0)
  os.makedirs(os.path.join(sup.phase_dir, 'checkpoints', '3'))
  os.makedirs(aikd0.workdir)
  (tmp_path / 'aikd' / 'seed0' / 'cell.json').write_text('{"state": "failed"}')
  assert [plan_lib.state(c) for c in plan.cells[:3]] == ['partial', 'done', 'failed']
  with workdir_lock.held(plan.cells[3].workdir):
    assert plan_lib.state(plan.cells[3]) == 'running'
  assert plan_lib.state(plan.cells[3]) == 'pending'


def test_a_student_waits_for_its_superior_and_trains_nothing(data_dirs, tmp_path,
                                                             monkeypatch):
  plan = _plan(data_dirs, tmp_path)
  monkeypatch.setattr(run, 'run', lambda *a, **k: pytest.fail('trained'))
  aikd = plan.cells[2]
  with pytest.raises(SuperiorNotReadyError, match=r'cell 2 \(aikd seed 0\) needs its '
                     r'superior, cell 0 \(superior seed 0\), which is pending'):
    cells_lib.execute(plan, aikd)
  assert not os.path.exists(aikd.workdir)
  assert SuperiorNotReadyError.exit_code == 8


def test_a_second_execution_of_a_running_cell_is_refused(data_dirs, tmp_path, monkeypatch):
  plan = _plan(data_dirs, tmp_path)
  cell = plan.cells[1]
  monkeypatch.setattr(run, 'run', lambda *a, **k: pytest.fail('trained'))
  with workdir_lock.held(cell.workdir):
    with pytest.raises(workdir_lock.LockedError, match='is in use by pid'):
      cells_lib.execute(plan, cell)
  assert not os.path.exists(os.path.join(cell.workdir, 'cell.json'))


@pytest.mark.parametrize('flag, kind, environ, expected', [
    ('4', None, {}, 4), ('auto', None, {'SLURM_ARRAY_TASK_ID': '5'}, 5),
    ('auto', None, {'JOB_COMPLETION_INDEX': '3'}, 3),
    ('auto', 'student', {'JOB_COMPLETION_INDEX': '2'}, 4),  # students: 1, 2, 4, 5
    ('auto', 'superior', {'JOB_COMPLETION_INDEX': '1'}, 3)])
def test_the_cell_index_from_the_flag_or_the_scheduler(data_dirs, tmp_path, flag, kind, environ,
                                                       expected):
  plan = _plan(data_dirs, tmp_path)
  assert sweep.cell_index(flag, kind, plan, environ) == expected


@pytest.mark.parametrize('flag, kind, environ, says', [
    ('auto', None, {}, 'needs SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX'),
    ('6', None, {}, 'has cells 0 to 5'), ('x', None, {}, 'is a number'),
    ('auto', 'superior', {'SLURM_ARRAY_TASK_ID': '2'}, 'has 2 superior cells')])
def test_a_bad_cell_index_is_one_line(data_dirs, tmp_path, flag, kind, environ, says):
  with pytest.raises(ConfigError, match=says):
    sweep.cell_index(flag, kind, _plan(data_dirs, tmp_path), environ)


def test_slurm_arrays_depend_on_their_own_superior(data_dirs, tmp_path):
  plan = _plan(data_dirs, tmp_path, ['baseline', 'aikd', 'tfkd'], [0, 1])
  # Per seed: superior, baseline, aikd, tfkd -> 0..3 and 4..7.
  calls = slurm.arrays(plan, list(plan.cells), {})
  assert calls == [([0, 1, 4, 5], None), ([2, 3], 'afterok:{job}_0'),
                   ([6, 7], 'afterok:{job}_4')]
  _finish(plan.cells[0])  # superior 0 done: its students start now
  # Superior 4 is still queued in SLURM (job 77): its students wait for that task.
  todo = [c for c in plan.cells if plan_lib.finished(c) is None and c.index != 4]
  assert slurm.arrays(plan, todo, {4: '77'}) == [([1, 2, 3, 5], None),
                                                 ([6, 7], 'afterok:77_4')]


def test_the_slurm_script_and_dry_run(data_dirs, tmp_path, capsys):
  plan = _plan(data_dirs, tmp_path)
  options = slurm.Options.from_config({'partition': 'gpu', 'account': 'lab', 'time': '1:00:00',
                                       'gpus': 1, 'cpus': 8, 'mem': '32G', 'throttle': 4,
                                       'extra': '--qos=high; --constraint=a100'})
  text = slurm.script(plan.workdir, options)
  for line in ('#SBATCH --signal=B:TERM@120', '#SBATCH --requeue', '#SBATCH --partition=gpu',
               '#SBATCH --account=lab', '#SBATCH --gres=gpu:1', '#SBATCH --cpus-per-task=8',
               '#SBATCH --mem=32G', '#SBATCH --qos=high', '#SBATCH --constraint=a100'):
    assert line in text.splitlines()
  assert text.splitlines()[-1].endswith(f'-m aikd_jax.sweep --workdir={plan.workdir} --cell')
  if shutil.which('shellcheck'):
    script = tmp_path / 'cell.sbatch'
    script.write_text(text)
    out = subprocess.run(['shellcheck', str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
  slurm.submit(plan, list(plan.cells), options, True, print)
  printed = capsys.readouterr().out
  assert 'sbatch --parsable --array=0,1,3,4%4 ' in printed
  assert "'--dependency=afterok:<job>_0' --kill-on-invalid-dep=yes" in printed or (
      '--dependency=afterok:<job>_0 --kill-on-invalid-dep=yes' in printed)
  assert not os.path.exists(os.path.join(plan.workdir, 'slurm'))


@pytest.mark.parametrize('options, says', [
    ({'gpus': -1}, 'gpus must be an integer >= 0'), ({'partitio': 'x'}, 'unknown option'),
    ({'extra': 'qos=high'}, 'give sbatch options')])
def test_bad_slurm_options_are_one_line(options, says):
  with pytest.raises(ConfigError, match=says):
    slurm.Options.from_config(options)


def test_local_slots_one_cell_per_gpu():
  assert local_pool.slots(2, []) == [None, None]
  assert local_pool.slots(2, ['0', '3', '5']) == ['0', '3']
  with pytest.raises(ConfigError, match='one cell per GPU'):
    local_pool.slots(4, ['0', '1'])
  with pytest.raises(ConfigError, match='must be >= 1'):
    local_pool.slots(0, [])


def _cli(*args, cwd=ROOT):
  return subprocess.run([sys.executable, '-m', 'aikd_jax.sweep', *args], cwd=cwd,
                        capture_output=True, text=True, timeout=300)


def _flags(data_dirs):
  return ['--config=configs/demo.py:smoke', f'--config.data.manual_dir={data_dirs["manual_dir"]}',
          f'--config.data.tfds_dir={data_dirs["tfds_dir"]}']


def test_cli_plans_lists_and_reports_status(data_dirs, tmp_path):
  out = _cli(*_flags(data_dirs), f'--workdir={tmp_path}', '--methods=baseline,aikd',
             '--seeds=0', '--submit=none')
  assert out.returncode == 0, out.stderr
  assert len(read_json(tmp_path / 'sweep.json')['cells']) == 3
  out = _cli(f'--workdir={tmp_path}', '--list')
  assert out.returncode == 0 and out.stdout.splitlines()[3].split()[:5] == [
      '2', 'aikd', 'seed', '0', '0'], out.stdout
  out = _cli(f'--workdir={tmp_path}', '--status')
  assert out.stdout.strip() == f'sweep {tmp_path}: 3 cells: 0 done, 3 pending, 0 failed'


@pytest.mark.parametrize('args, code, says', [
    (['--methods='], 2, "--methods='' has an empty entry"),
    (['--seeds=0,0'], 2, '--seeds names 0 twice'),
    (['--methods=aikd,aikd'], 2, '--methods names aikd twice'),
    (['config.method=pskd'], 2, "unexpected argument 'config.method=pskd'"),
    (['--cell=0'], 4, 'has no sweep plan'),
    (['--submit=slurm', '--slurm.gpus=-1'], 2, '--slurm.gpus must be'),
    (['--submit=local', '--parallel=0'], 2, '--parallel must be >= 1'),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(data_dirs, tmp_path, args, code, says):
  workdir = tmp_path / 'sweep'
  out = _cli(*_flags(data_dirs), f'--workdir={workdir}', '--methods=baseline', *args)
  assert out.returncode == code, out.stderr
  assert out.stderr.strip().splitlines()[-1].startswith('error: ')
  assert says in out.stderr and 'Traceback' not in out.stderr
  assert not workdir.exists()


def test_cli_a_sweep_folder_that_is_a_file_is_one_line(data_dirs, tmp_path):
  (tmp_path / 'f').write_text('')
  out = _cli(*_flags(data_dirs), f'--workdir={tmp_path / "f" / "sweep"}', '--submit=none')
  assert out.returncode == 4 and 'is a file, not a folder' in out.stderr


def _fake_command(folder, name: str, output: str) -> None:
  path = folder / name
  path.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}\nEOF\n")
  path.chmod(0o755)


def test_status_adds_slurms_queue_and_accounting(data_dirs, tmp_path, monkeypatch):
  plan = _plan(data_dirs, tmp_path / 'sweep')  # 0 sup, 1 base, 2 aikd; 3 sup, 4 base, 5 aikd
  plan_lib.write(plan)
  (tmp_path / 'sweep' / 'slurm').mkdir()
  (tmp_path / 'sweep' / 'slurm' / 'jobs.json').write_text(json.dumps([
      {'job_id': '12', 'cells': [0, 1, 3, 4]}, {'job_id': '13', 'cells': [2]},
      {'job_id': '14', 'cells': [5]}]))
  _finish(plan.cells[1])
  os.makedirs(os.path.join(plan.cells[5].phase_dir, 'checkpoints', '7'))
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  _fake_command(bin_dir, 'squeue', '12_0|RUNNING\n12_[3-4%2]|PENDING')
  _fake_command(bin_dir, 'sacct', '12_1|COMPLETED\n13_[2]|CANCELLED by 0\n14_5|TIMEOUT')
  monkeypatch.setenv('PATH', f'{bin_dir}:{os.environ["PATH"]}')
  found, notes = sweep.states(plan)
  assert found == {0: 'running', 1: 'done', 2: 'failed', 3: 'queued', 4: 'queued',
                   5: 'partial'}
  assert notes == {2: 'CANCELLED', 5: 'TIMEOUT'}
  text = sweep.status_text(plan, found, notes)
  assert text.splitlines()[0].endswith('6 cells: 1 done, 1 running, 2 queued, 1 partial, '
                                       '1 failed')
  assert 'failed: cell 2 aikd seed 0: SLURM says CANCELLED (exit ?;' in text


# -- packed seeds ----------------------------------------------------------------------


def test_pack_seeds_packs_cells_that_differ_only_in_their_seed(data_dirs, tmp_path):
  plan = sweep.plan_sweep(smoke_config(data_dirs), str(tmp_path), ['baseline', 'aikd', 'tfkd'],
                          [0, 1, 2], pack_seeds=True)
  # Per seed: superior, baseline, aikd, tfkd -> 0..3, 4..7, 8..11.
  packs = {c.index: c.pack for c in plan.cells}
  assert packs[0] == packs[4] == packs[8] == (0, 4, 8)
  assert packs[2] == packs[6] == (2, 6, 10)
  assert plan.cells[2].pack_dir == os.path.join(str(tmp_path), 'aikd', 'seeds0-1-2')
  assert plan.cells[0].pack_dir == os.path.join(str(tmp_path), 'superior', 'seeds0-1-2')
  units = plan_lib.units(plan, plan.cells)
  assert [c.index for c in units] == [0, 1, 2, 3]  # one task per pack, its first cell
  assert [c.depends_on for c in units] == [None, None, 0, 0]  # the superior pack's first
  assert [c.index for c in plan_lib.members(plan, plan.cells[6])] == [2, 6, 10]
  assert slurm.arrays(plan, units, {}) == [([0, 1], None), ([2, 3], 'afterok:{job}_0')]
  plan_lib.write(plan)
  assert plan_lib.read(str(tmp_path)).cells == plan.cells
  assert 'aikd seed 0 (pack of 3)' in sweep.list_table(plan, {c.index: 'pending'
                                                             for c in plan.cells})
  # A pack is unfinished until every member is: one result is not enough.
  _finish(plan.cells[2])
  _finish(plan.cells[6])
  assert plan_lib.unit_finished(plan, plan.cells[2]) is None
  _finish(plan.cells[10])
  assert plan_lib.unit_finished(plan, plan.cells[2]) == {'top1_err': 10.0}
  # Checkpoints of a pack are in its folder: its members read partial.
  os.makedirs(os.path.join(plan.cells[3].pack_dir, 'student', 'checkpoints', '3'))
  assert plan_lib.state(plan.cells[7]) == 'partial'


def test_a_grown_packed_plan_packs_only_new_cells_with_one_superior_pack(data_dirs, tmp_path):
  first = sweep.plan_sweep(smoke_config(data_dirs), str(tmp_path), ['aikd'], [0, 1],
                           pack_seeds=True)
  plan_lib.write(first)
  grown = sweep.plan_sweep(smoke_config(data_dirs), str(tmp_path), ['aikd', 'pskd'], [0, 1, 2],
                           pack_seeds=True)
  by = {(c.kind, c.method, c.seed): c for c in grown.cells}
  assert by[('superior', 'baseline', 0)].pack == (0, 2)  # planned packs stay
  assert by[('superior', 'baseline', 2)].pack is None  # alone: unpacked
  # pskd needs no superior: its three seeds pack; aikd seed 2 waits on its own superior.
  assert len(by[('student', 'pskd', 0)].pack) == 3
  assert by[('student', 'aikd', 2)].pack is None
  with pytest.raises(WorkdirError, match='was planned with --pack_seeds'):
    sweep.plan_sweep(smoke_config(data_dirs), str(tmp_path), ['aikd'], [0, 1])


def test_executing_any_member_runs_its_whole_pack(data_dirs, tmp_path, monkeypatch):
  plan = sweep.plan_sweep(smoke_config(data_dirs), str(tmp_path), ['baseline'], [0, 1],
                          pack_seeds=True)
  calls = []

  def fake_pack(configs, workdirs, pack_dir, *, superior_only, stop_requested):
    calls.append(([c['seed'] for c in configs], pack_dir, superior_only))
    for w in workdirs:
      _finish(plan_lib.Cell(0, 'student', 'baseline', 0, None, w, {}))
    return [{'top1_err': 10.0}] * len(workdirs)
  monkeypatch.setattr(run, 'run_pack', fake_pack)
  second = plan.cells[1]
  assert cells_lib.execute(plan, second) == {'top1_err': 10.0}
  assert calls == [([0, 1], plan.cells[0].pack_dir, False)]
  assert [read_json(os.path.join(c.workdir, 'cell.json'))['state'] for c in plan.cells] == [
      'done', 'done']
  cells_lib.execute(plan, plan.cells[0])  # finished: nothing runs again
  assert len(calls) == 1


def test_cell_kind_counts_packs_in_a_packed_plan(data_dirs, tmp_path):
  plan = sweep.plan_sweep(smoke_config(data_dirs), str(tmp_path), ['baseline', 'aikd'], [0, 1],
                          pack_seeds=True)  # superiors 0, 3; baseline 1, 4; aikd 2, 5
  assert [sweep.cell_index(str(k), 'student', plan) for k in (0, 1)] == [1, 2]
  assert sweep.cell_index('0', 'superior', plan) == 0
  with pytest.raises(ConfigError, match='the plan has 1 superior cells'):
    sweep.cell_index('1', 'superior', plan)
