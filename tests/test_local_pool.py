"""`--submit=local`: cells as parallel subprocesses; SIGTERM stops each with a checkpoint and
the same command resumes; a student starts only after its superior is done."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from aikd_jax import plan as plan_lib
from tests.runs import ROOT, read_json

pytestmark = pytest.mark.slow


def _command(data_dirs, workdir):
  return [sys.executable, '-m', 'aikd_jax.sweep', '--config=configs/demo.py:smoke',
          f'--config.data.manual_dir={data_dirs["manual_dir"]}',
          f'--config.data.tfds_dir={data_dirs["tfds_dir"]}', '--config.data.train_subset=96',
          '--config.data.eval_subset=40', '--config.num_epochs=12', f'--workdir={workdir}',
          '--methods=baseline,aikd', '--seeds=0', '--submit=local', '--parallel=2']


def test_a_stopped_local_pool_resumes_and_respects_dependencies(data_dirs, tmp_path):
  workdir = tmp_path / 'sweep'
  proc = subprocess.Popen(_command(data_dirs, workdir), cwd=ROOT, stderr=subprocess.PIPE,
                          text=True)
  superior_log = workdir / 'superior' / 'seed0' / 'log.txt'
  deadline = time.monotonic() + 300
  while not (superior_log.exists() and re.search(r'superior epoch \d+/12 step',
                                                 superior_log.read_text())):
    assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err
  assert 'sweep: stopping 2 running cells: each saves a checkpoint' in err
  plan = plan_lib.read(str(workdir))
  superior, baseline, aikd = plan.cells
  assert plan_lib.record(superior)['state'] == 'stopped'
  assert plan_lib.state(superior) == 'partial' and plan_lib.state(aikd) == 'pending'
  again = subprocess.run(_command(data_dirs, workdir), cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
  assert again.returncode == 0, again.stderr
  assert [plan_lib.state(c) for c in plan.cells] == ['done'] * 3
  assert 'resumed at epoch' in superior_log.read_text()
  assert (read_json(os.path.join(aikd.workdir, 'cell.json'))['started']
          >= read_json(os.path.join(superior.workdir, 'cell.json'))['ended'])
  for line in ('sweep: start cell 2 aikd seed 0 on slot', 'sweep: done cell 2 aikd seed 0 in'):
    assert line in again.stderr, again.stderr
  assert re.search(r'ETA \d+:\d\d:\d\d', again.stderr)
  assert os.path.exists(workdir / 'logs' / 'cell2.log')
