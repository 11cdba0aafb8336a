"""One training phase: epochs, evaluation, snapshots, checkpoints, summaries.

Side effects live here (and in run.py); the steps it drives are pure (steps.py).
"""
import dataclasses
import errno
import json
import os
import time
from typing import Callable

from absl import logging
from clu import metric_writers, periodic_actions
import jax
from jax.experimental import multihost_utils
import numpy as np

from aikd_jax import checkpointing, evaluation, models, plots, sharding
from aikd_jax.errors import ConfigError, NonFiniteLossError, OutOfSpaceError
from aikd_jax.train import state as state_lib
from aikd_jax.train import steps


class Preempted(Exception):
  """Raised after a checkpoint was saved because the job was asked to stop."""


@dataclasses.dataclass
class Phase:
  """What one phase trains: `config` (its seed and method) into `directory`."""
  name: str
  directory: str
  config: object
  method: object
  superior: dict | None = None  # frozen {'params', 'batch_stats'}, for the student phase


def model_options(config) -> dict:
  return {'width': config.model.width, 'dtype': config.dtype}


def load_init_weights(config) -> dict | None:
  """The variables named by `config.model.init` (an exported model), or None."""
  if not config.model.init:
    return None
  meta, variables = checkpointing.load_model(config.model.init)
  if meta['arch'] != config.model.arch:
    raise ConfigError(f'model.init {config.model.init} holds a {meta["arch"]}, '
                      f'not a {config.model.arch}: fix --config.model.init')
  return variables


def _check_finite(pending: list[tuple[int, dict]]) -> None:
  """Raises on the first step whose metrics hold a NaN or Inf, naming the term."""
  for step, metrics in pending:
    for name, value in metrics.items():
      if not np.isfinite(value):
        raise NonFiniteLossError(
            f'non-finite {name} ({value}) at step {step}; the last good checkpoint is kept')


def _mean_metrics(pending: list[tuple[int, dict]]) -> dict:
  # Per-step values are kept (not a running clu Average) to name the first bad step.
  return {k: float(np.mean([m[k] for _, m in pending])) for k in pending[0][1]}


def eval_logits(eval_step, variables, pipeline, mesh) -> tuple[np.ndarray, np.ndarray]:
  """Logits and labels of every test example exactly once (padding dropped)."""
  logits, labels = [], []
  for batch in pipeline.eval_batches():
    batch = sharding.to_global(batch, mesh)
    keep = sharding.to_host(batch['mask'])
    logits.append(sharding.to_host(eval_step(variables, batch['image']))[keep])
    labels.append(sharding.to_host(batch['label'])[keep])
  return np.concatenate(logits), np.concatenate(labels)


def write_results(directory: str, results: dict, logits, labels, title: str) -> None:
  """reliability.png, then results.json (written atomically: it marks a finished phase).

  Process 0 writes; every process waits until it has, so all of them see the phase end.
  """
  if jax.process_index() == 0:
    os.makedirs(directory, exist_ok=True)
    plots.reliability_diagram(logits, labels, os.path.join(directory, 'reliability.png'),
                              title=title)
    tmp = os.path.join(directory, 'results.json.tmp')
    with open(tmp, 'w') as f:
      json.dump(results, f, indent=2)
    os.replace(tmp, os.path.join(directory, 'results.json'))
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f'results written to {directory}')


class _Trainer:
  """Holds the jitted functions and writers of one phase."""

  def __init__(self, phase: Phase, pipeline, mesh, stop_requested: Callable[[], bool]):
    self.phase, self.pipeline, self.mesh = phase, pipeline, mesh
    self.config = config = phase.config
    self.stop_requested = stop_requested
    self.spe = pipeline.steps_per_epoch
    self.total_steps = config.num_epochs * self.spe
    self.model = models.create(config.model.arch, pipeline.num_classes, **model_options(config))
    method = phase.method
    repl = sharding.replicated(mesh)
    init = lambda key, pretrained: state_lib.create_state(
        key, model=self.model, method=method, optim=config.optim,
        image_shape=pipeline.image_shape, num_classes=pipeline.num_classes,
        num_train_examples=pipeline.num_train_examples, steps_per_epoch=self.spe,
        pretrained=pretrained)
    self.state = jax.jit(init, out_shardings=repl)(jax.random.key(config.seed),
                                                   load_init_weights(config))
    self.lr = state_lib.learning_rate_schedule(config.optim, self.spe)
    train_step = steps.make_train_step(model=self.model, method=method, augment=config.augment,
                                       seed=config.seed, num_classes=pipeline.num_classes,
                                       steps_per_epoch=self.spe, lr_schedule=self.lr)
    self.train_step = jax.jit(train_step, out_shardings=(repl, repl), donate_argnums=(0,))
    self.eval_step = jax.jit(steps.make_eval_step(self.model))
    end_epoch = lambda state: state.replace(method=method.end_epoch(
        state.method, state_lib.variables_of(state.student)))
    self.end_epoch = jax.jit(end_epoch, out_shardings=repl, donate_argnums=(0,))
    self.superior = jax.device_put(phase.superior, repl) if phase.superior else None
    self.ckpt = checkpointing.TrainCheckpointer(os.path.join(phase.directory, 'checkpoints'),
                                                config.checkpoint.max_to_keep)
    self.writer = metric_writers.create_default_writer(
        phase.directory, just_logging=jax.process_index() > 0, asynchronous=True)
    self.report = periodic_actions.ReportProgress(
        num_train_steps=self.total_steps, writer=self.writer,
        every_steps=config.log_every_steps)
    self.train_time_s = 0.0

  # -- checkpoints ---------------------------------------------------------------------
  def restore(self) -> tuple[int, int]:
    """Restores the newest readable checkpoint; returns (epoch, step inside the epoch)."""
    restored = self.ckpt.restore_latest(self.state)
    if restored is None:
      return 0, 0
    self.state, meta = restored
    self.train_time_s = float(meta['train_time_s'])
    logging.info('%s: resumed at epoch %d, step %d of the epoch', self.phase.name,
                 meta['epoch'], meta['step_in_epoch'])
    return int(meta['epoch']), int(meta['step_in_epoch'])

  def save(self, epoch: int, step_in_epoch: int) -> None:
    meta = {'epoch': epoch, 'step_in_epoch': step_in_epoch, 'train_time_s': self.train_time_s}
    self.ckpt.save(epoch * self.spe + step_in_epoch, self.state, meta)

  # -- training ------------------------------------------------------------------------
  def _log_train(self, pending, epoch):
    jax.block_until_ready(pending[-1][1])
    pending = [(s, jax.device_get(m)) for s, m in pending]
    _check_finite(pending)
    step, means = pending[-1][0], _mean_metrics(pending)
    self.writer.write_scalars(step, {f'train/{k}': v for k, v in means.items()})
    logging.info('%s epoch %d/%d step %d/%d: %s', self.phase.name, epoch + 1,
                 self.config.num_epochs, step, self.total_steps,
                 ', '.join(f'{k} {v:.4g}' for k, v in sorted(means.items())))

  def _should_stop(self, step: int) -> bool:
    """SIGTERM on one host; across hosts, JAX's preemption sync point (all agree)."""
    if jax.process_count() > 1:
      return self.ckpt.reached_preemption(step)
    return self.stop_requested()

  def train_epoch(self, epoch: int, start_step: int) -> None:
    pending, t0 = [], time.perf_counter()
    batches = self.pipeline.train_batches(epoch, start_step,
                                          paired=self.phase.method.batch == 'paired')
    batches = sharding.prefetch_to_device(batches, self.mesh)
    for i, batch in enumerate(batches, start=start_step):
      self.state, metrics = self.train_step(self.state, batch, self.superior)
      step = epoch * self.spe + i + 1
      pending.append((step, metrics))
      self.report(step)
      if step % self.config.log_every_steps == 0 or i + 1 == self.spe:
        self._log_train(pending, epoch)
        pending = []
      if self._should_stop(step) and i + 1 < self.spe:
        if pending:
          self._log_train(pending, epoch)
        self.train_time_s += time.perf_counter() - t0
        self.save(epoch, i + 1)
        self.ckpt.wait()
        raise Preempted(f'{self.phase.name}: saved at step {step} and stopped on request')
    self.train_time_s += time.perf_counter() - t0

  # -- evaluation ----------------------------------------------------------------------
  def evaluate(self, epoch: int) -> tuple[dict, np.ndarray, np.ndarray]:
    with self.report.timed('eval'):
      logits, labels = eval_logits(self.eval_step,
                                   state_lib.variables_of(self.state.student),
                                   self.pipeline, self.mesh)
      metrics = evaluation.classification_metrics(logits, labels, self.pipeline.num_classes)
    self.writer.write_scalars((epoch + 1) * self.spe, {f'eval/{k}': v for k, v in metrics.items()})
    logging.info('%s epoch %d/%d eval: %s', self.phase.name, epoch + 1, self.config.num_epochs,
                 ', '.join(f'{k} {v:.4g}' for k, v in metrics.items()))
    return metrics, logits, labels

  def close(self):
    self.ckpt.close()
    self.writer.flush()
    self.writer.close()


def _finish(trainer: _Trainer, metrics: dict, logits, labels) -> dict:
  """Exports the model, then writes the plot and results.json (the phase's done marker)."""
  phase, config = trainer.phase, trainer.config
  checkpointing.save_model(os.path.join(phase.directory, 'model'), arch=config.model.arch,
                           num_classes=trainer.pipeline.num_classes,
                           options=model_options(config),
                           variables=state_lib.variables_of(trainer.state.student))
  steps_done = config.num_epochs * trainer.spe
  results = dict(metrics, epochs=config.num_epochs, steps=steps_done, seed=config.seed,
                 method=phase.method.name, arch=config.model.arch, dataset=config.data.name,
                 train_time_s=trainer.train_time_s,
                 images_per_s=steps_done * config.batch_size / max(trainer.train_time_s, 1e-9))
  write_results(phase.directory, results, logits, labels,
                f'{phase.name} ({phase.method.name})')
  return results


def _out_of_space(error: BaseException) -> bool:
  """True if `error`, or an error it was raised from, is 'No space left on device'."""
  while error is not None:
    if getattr(error, 'errno', None) == errno.ENOSPC or 'No space left' in str(error):
      return True
    error = error.__cause__ or error.__context__
  return False


def _state_megabytes(state) -> float:
  return sum(x.nbytes for x in jax.tree.leaves(state) if hasattr(x, 'nbytes')) / 2**20


def train_phase(phase: Phase, pipeline, mesh, stop_requested=lambda: False) -> dict:
  """Trains (or resumes) one phase to the end and returns its results.json content."""
  trainer = _Trainer(phase, pipeline, mesh, stop_requested)
  try:
    return _train(trainer)
  except Exception as e:  # pylint: disable=broad-except
    if not _out_of_space(e):
      raise
    raise OutOfSpaceError(
        f'no space left on the device holding {phase.directory}: a checkpoint needs about '
        f'{_state_megabytes(trainer.state):.0f} MB; free space and run the same command '
        'to resume from the last checkpoint') from e
  finally:
    try:
      trainer.close()
    except Exception as e:  # pylint: disable=broad-except
      if not _out_of_space(e):
        raise


def _train(trainer: _Trainer) -> dict:
  config = trainer.config
  epoch, start_step = trainer.restore()
  final = None
  for epoch in range(epoch, config.num_epochs):
    trainer.train_epoch(epoch, start_step)
    start_step = 0
    trainer.state = trainer.end_epoch(trainer.state)
    final = trainer.evaluate(epoch)
    trainer.save(epoch + 1, 0)
  if final is None:  # restored after the last epoch, before results were written
    final = trainer.evaluate(config.num_epochs - 1)
  trainer.ckpt.wait()
  return _finish(trainer, *final)
