"""A sweep's plan on a real one-node SLURM cluster (tests/slurm_cluster.py): the smoke grid
as job arrays gives the in-process sweep's numbers, a cancelled cell resubmitted resumes to
the same result, and the students of a failed superior end through their dependency."""
import os
import re
import subprocess
import sys
import time

import pytest

from aikd_jax import plan as plan_lib
from aikd_jax import report, slurm, sweep
from tests import slurm_cluster
from tests.runs import ROOT, comparable, read_json, smoke_config

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group('slurm')]


@pytest.fixture(scope='module')
def cluster(tmp_path_factory):
  why = slurm_cluster.missing()
  if why:
    pytest.skip(why)
  # Short folder: SLURM and munge keep socket paths below it.
  one = slurm_cluster.SlurmCluster(str(tmp_path_factory.mktemp('slurm')))
  yield one
  one.close()


@pytest.fixture
def on_cluster(cluster, monkeypatch):
  monkeypatch.setenv('SLURM_CONF', cluster.conf)
  monkeypatch.chdir(ROOT)
  return cluster


def _submit(workdir, base, methods, seeds):
  """Plans the grid into `workdir` and submits it with sbatch; returns the job ids."""
  plan = sweep.plan_sweep(base, str(workdir), methods, seeds)
  plan_lib.write(plan)
  todo = [c for c in plan.cells if plan_lib.finished(c) is None]
  jobs = slurm.submit(plan, todo, slurm.Options(cpus=1), False, lambda line: None)
  return plan, [j['job_id'] for j in jobs]


def _comp_states(cluster) -> dict:
  return {r['JobId']: r['JobState'] for r in cluster.completed()}


def test_the_smoke_grid_under_slurm_matches_the_in_process_sweep(on_cluster, data_dirs,
                                                                 tmp_path):
  base = smoke_config(data_dirs)
  start = time.monotonic()
  plan, jobs = _submit(tmp_path / 'slurm', base, ['baseline', 'aikd'], [0, 1])
  assert len(jobs) == 3  # now: superiors and baselines; one array per superior's students
  local = sweep.run_sweep(base, str(tmp_path / 'local'), ['baseline', 'aikd'], [0, 1],
                          log=lambda line: None)
  on_cluster.wait(jobs)
  print(f'SLURM smoke grid (6 cells, 2 at a time, next to the in-process sweep): '
        f'{time.monotonic() - start:.0f} s')
  assert local.exit_code == 0 and len(local.trained) == 6
  states = _comp_states(on_cluster)
  for cell in plan.cells:
    record = read_json(os.path.join(cell.workdir, 'cell.json'))
    assert record['state'] == 'done', (cell.name, record)
    job = record['job']
    assert int(job['SLURM_ARRAY_TASK_ID']) == cell.index
    assert job['SLURM_ARRAY_JOB_ID'] in jobs
    assert states[job['SLURM_JOB_ID']] == 'COMPLETED', (cell.name, states)
    assert comparable(plan_lib.finished(cell)) == comparable(local.results[cell.name]) or (
        _same_numbers(plan_lib.finished(cell), local.results[cell.name]))
  texts = []
  for name in ('slurm', 'local'):
    assert report.main([str(tmp_path / name), '--out', str(tmp_path / f'report_{name}')]) == 0
    text = (tmp_path / f'report_{name}' / 'report.md').read_text()
    texts.append(text.replace(str(tmp_path / name), 'DIR'))
  assert texts[0] == texts[1]
  status = subprocess.run([sys.executable, '-m', 'aikd_jax.sweep',
                           f'--workdir={tmp_path / "slurm"}', '--status'], cwd=ROOT,
                          env=on_cluster.env, capture_output=True, text=True, timeout=120)
  assert status.returncode == 0 and '6 cells: 6 done' in status.stdout, status


def _same_numbers(a: dict, b: dict) -> bool:
  """Equal results but for where they were written (the superior's folder)."""
  strip = lambda r: {k: v for k, v in comparable(r).items() if k != 'superior'}
  return strip(a) == strip(b) and a['superior']['top1_err'] == b['superior']['top1_err']


def _wait_for(path, pattern, timeout_s=300):
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    if os.path.exists(path) and re.search(pattern, open(path).read()):
      return
    time.sleep(0.2)
  raise TimeoutError(f'{pattern!r} never appeared in {path}')


def test_a_cancelled_cell_resubmitted_resumes_and_ends_identical(on_cluster, data_dirs,
                                                                 tmp_path):
  base = smoke_config(data_dirs, num_epochs=30)  # 90 steps: cancelled well before the end
  reference = sweep.run_sweep(base, str(tmp_path / 'local'), ['baseline'], [0],
                              log=lambda line: None).results['baseline seed 0']
  plan, jobs = _submit(tmp_path / 'slurm', base, ['baseline'], [0])
  cell = plan.cells[0]
  _wait_for(os.path.join(cell.workdir, 'log.txt'), r'student epoch \d+/30 step \d+/90')
  lines = []
  assert slurm.submit(plan, [cell], slurm.Options(), False, lines.append) == []
  assert lines == ['sweep: cells 0 are still queued or running in SLURM: not submitted again',
                   'sweep: nothing to submit: every cell is done, queued or running']
  on_cluster.run('scancel', jobs[0])
  on_cluster.wait(jobs)
  assert plan_lib.finished(cell) is None
  assert plan_lib.record(cell)['state'] == 'stopped'
  assert os.listdir(os.path.join(cell.phase_dir, 'checkpoints'))
  assert plan_lib.state(cell) == 'partial'
  _, again = _submit(tmp_path / 'slurm', base, ['baseline'], [0])
  on_cluster.wait(again)
  assert comparable(plan_lib.finished(cell)) == comparable(reference)
  log = open(os.path.join(cell.workdir, 'log.txt')).read()
  assert 'resum' in log.lower(), 'the resubmitted cell started over'


def test_the_students_of_a_failed_superior_end_through_the_dependency(on_cluster, data_dirs,
                                                                      tmp_path):
  workdir = tmp_path / 'sweep'
  sup_dir = workdir / 'superior' / 'seed0'
  sup_dir.mkdir(parents=True)
  (sup_dir / 'config.json').write_text('{"seed": 99}')  # another run's workdir: refused
  submitted = subprocess.run(
      [sys.executable, '-m', 'aikd_jax.sweep', '--config=configs/demo.py:smoke',
       f'--config.data.manual_dir={data_dirs["manual_dir"]}',
       f'--config.data.tfds_dir={data_dirs["tfds_dir"]}', '--config.data.eval_subset=40',
       f'--workdir={workdir}', '--methods=aikd,tfkd', '--seeds=0', '--submit=slurm',
       '--slurm.cpus=1'], cwd=ROOT, env=on_cluster.env, capture_output=True, text=True,
      timeout=300)
  assert submitted.returncode == 0, submitted.stderr
  jobs = slurm.job_ids(str(workdir))
  assert f'sweep: submitted cells 0 as SLURM job {jobs[0]}' in submitted.stderr
  assert (f'sweep: submitted cells 1,2 as SLURM job {jobs[1]} '
          f'(--dependency=afterok:{jobs[0]}_0)') in submitted.stderr
  on_cluster.wait(jobs)
  plan = plan_lib.read(str(workdir))
  superior, students = plan.cells[0], plan.cells[1:]
  record = read_json(sup_dir / 'cell.json')
  assert (record['state'], record['exit_code']) == ('failed', 4)
  assert 'belongs to a different config' in record['message']
  for cell in students:
    assert not os.path.exists(cell.workdir), f'{cell.name} ran'
  states = _comp_states(on_cluster)
  assert states[record['job']['SLURM_JOB_ID']] == 'FAILED', states
  assert states[jobs[1]] == 'CANCELLED', states  # the students' array, never started
  status = subprocess.run([sys.executable, '-m', 'aikd_jax.sweep', f'--workdir={workdir}',
                           '--status'], cwd=ROOT, env=on_cluster.env, capture_output=True,
                          text=True, timeout=120)
  assert '3 cells: 0 done' in status.stdout and '1 failed' in status.stdout, status.stdout
  assert f'failed: cell 0 {superior.name}: ' in status.stdout
