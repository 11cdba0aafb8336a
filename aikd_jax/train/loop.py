"""One training phase: epochs, evaluation, snapshots, checkpoints, summaries.

Side effects live here (and in run.py); the steps it drives are pure (steps.py).
"""
import dataclasses
import json
import time
from typing import Callable

from absl import logging
from clu import metric_writers, periodic_actions
from flax import traverse_util
import jax
import numpy as np

from aikd_jax import checkpointing, evaluation, methods, models, paths, results, sharding
from aikd_jax import throughput
from aikd_jax.errors import ConfigError, NonFiniteLossError, OutOfSpaceError
from aikd_jax.errors import is_out_of_space
from aikd_jax.methods import base
from aikd_jax.train import seeds as seeds_lib
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
  superior_info: dict | None = None  # where the superior came from, for results.json


def model_options(config) -> dict:
  return {'width': config.model.width, 'dtype': config.dtype}


def hparams(config) -> dict[str, bool | int | float | str]:
  """The phase's hyper-parameters for TensorBoard's HParams tab, one scalar per config key.

  Keys are dotted (`optim.lr`); sequences become JSON text (`optim.lr_milestones`:
  '[150, 225]'); unset keys (None) are left out. Of the method groups only the phase's
  own method's is kept.
  """
  plain = config.to_dict()
  own = methods.registration(config.method).group
  for group in set(config.methods) - {own}:
    del plain[group]
  flat = traverse_util.flatten_dict(plain, sep='.')
  return {k: json.dumps(v) if isinstance(v, (list, tuple)) else v
          for k, v in sorted(flat.items()) if v is not None}


def load_init_weights(config) -> dict | None:
  """The variables named by `config.model.init` (an exported model), or None."""
  if not config.model.init:
    return None
  return checkpointing.load_model(config.model.init, expected={'arch': config.model.arch},
                                  key='model.init')[1]


def _check_finite(pending: list[tuple[int, dict]], where: str = '') -> None:
  """Raises on the first step whose metrics hold a NaN or Inf, naming the term (and
  `where`: the seed of a pack)."""
  for step, metrics in pending:
    for name, value in metrics.items():
      if not np.isfinite(value):
        raise NonFiniteLossError(f'non-finite {name} ({value}) at step {step}{where}; the '
                                 'last good checkpoint is kept')


def _mean_metrics(pending: list[tuple[int, dict]]) -> dict:
  # Per-step values are kept (not a running clu Average) to name the first bad step.
  return {k: float(np.mean([m[k] for _, m in pending])) for k in pending[0][1]}


def evaluate(eval_step, variables, pipeline, mesh, with_features: bool = True,
             seeds=seeds_lib.Solo(0)) -> list:
  """[(metrics, logits, penultimate features, labels)] of every test example once, one
  entry per seed of `seeds` (`eval_step` and `variables` carry its seed axis).

  Padding is dropped. Features (None unless `with_features`) are copied to the host only
  when asked for: only the final evaluation writes them.
  """
  logits, features, labels = [], [], []
  for batch in pipeline.eval_batches():
    batch = sharding.to_global(batch, mesh)
    keep = sharding.to_host(batch['mask'])
    z, f = eval_step(variables, batch['image'])
    logits.append(sharding.to_host(z)[..., keep, :])
    if with_features:
      features.append(sharding.to_host(f)[..., keep, :])
    labels.append(sharding.to_host(batch['label'])[keep])
  labels = np.concatenate(labels)
  logits = seeds.unstack(np.concatenate(logits, axis=-2))
  features = (seeds.unstack(np.concatenate(features, axis=-2)) if with_features
              else [None] * seeds.count)
  return [(evaluation.classification_metrics(z, labels, pipeline.num_classes), z, f, labels)
          for z, f in zip(logits, features)]


class _Trainer:
  """Holds the jitted functions and writers of one phase, or of a pack of phases that
  differ only in their seed (`seeds.py`): one state with a seed axis, one checkpoint in
  `checkpoint_dir`, and each seed's summaries and outputs in its own phase folder."""

  def __init__(self, phases: list[Phase], pipelines: list, mesh, stop_requested,
               checkpoint_dir: str):
    self.phases, self.pipelines, self.mesh = phases, pipelines, mesh
    self.pipeline = pipeline = pipelines[0]
    self.config = config = phases[0].config
    self.seeds = seeds_lib.of([p.config.seed for p in phases])
    self.stop_requested = stop_requested
    self.spe = pipeline.steps_per_epoch
    self.total_steps = config.num_epochs * self.spe
    self.model = models.create(config.model.arch, pipeline.num_classes, **model_options(config))
    method = self.method = phases[0].method
    repl = sharding.replicated(mesh)
    init = lambda key, pretrained: state_lib.create_state(
        key, model=self.model, method=method, optim=config.optim,
        image_shape=pipeline.image_shape, num_classes=pipeline.num_classes,
        num_train_examples=pipeline.num_train_examples, steps_per_epoch=self.spe,
        pretrained=pretrained)
    self.state = jax.jit(lambda pretrained: self.seeds.init(init, pretrained),
                         out_shardings=repl)(load_init_weights(config))
    train_step = self.seeds.step(lambda seed: steps.make_train_step(
        model=self.model, method=method, augment=config.augment, seed=seed,
        num_classes=pipeline.num_classes, steps_per_epoch=self.spe))
    self.train_step = jax.jit(train_step, out_shardings=(repl, repl), donate_argnums=(0,))
    self.eval_step = jax.jit(self.seeds.map_variables(steps.make_eval_step(self.model)))
    self.compiled_step = None  # compiled at the first batch (XLA's FLOP count comes with it)
    self.compile_s = 0.0  # compile time inside the current log window (not a step's time)
    self.flops_per_step = None
    self.profile = throughput.profile_action(phases[0].directory, config.profile_steps)
    self.best = [(float('inf'), 0)] * self.seeds.count  # per seed: (top-1 error, epoch)
    self.end_epoch = None  # compiled only for a method that has an end-of-epoch update
    if type(method).end_epoch is not base.Method.end_epoch:
      end_epoch = lambda state: state.replace(method=method.end_epoch(
          state.method, state_lib.variables_of(state.student)))
      self.end_epoch = jax.jit(self.seeds.map(end_epoch), out_shardings=repl,
                               donate_argnums=(0,))
    superiors = [p.superior for p in phases]
    self.superior = (jax.device_put(self.seeds.stack(superiors), repl) if superiors[0]
                     else None)
    self.ckpt = checkpointing.TrainCheckpointer(paths.join(checkpoint_dir, 'checkpoints'),
                                                config.checkpoint.max_to_keep)
    self.writers = [metric_writers.create_default_writer(  # gs:// goes through tf.io.gfile
        paths.absolute(p.directory), just_logging=jax.process_index() > 0, asynchronous=True)
                    for p in phases]
    for writer, phase in zip(self.writers, phases):  # each start: one event file each
      writer.write_hparams(hparams(phase.config))
    self.report = periodic_actions.ReportProgress(
        num_train_steps=self.total_steps, writer=self.writers[0],
        every_steps=config.log_every_steps)
    self.train_time_s = 0.0

  def _seed(self, k: int) -> str:
    """' seed 2' for the k-th seed of a pack; '' for a solo run (its logs stay as before)."""
    return f' seed {self.seeds.seeds[k]}' if self.seeds.count > 1 else ''

  def _name(self, k: int) -> str:
    """The phase's name in log lines and errors: 'student', or 'student seed 2' in a pack."""
    return self.phases[k].name + self._seed(k)

  # -- checkpoints ---------------------------------------------------------------------
  def restore(self) -> tuple[int, int]:
    """Restores the newest readable checkpoint; returns (epoch, step inside the epoch)."""
    restored = self.ckpt.restore_latest(self.state)
    if restored is None:
      return 0, 0
    self.state, meta = restored
    self.train_time_s = float(meta['train_time_s'])
    self.best = list(zip(np.atleast_1d(meta['best_top1_err']).astype(float).tolist(),
                         np.atleast_1d(meta['best_epoch']).astype(int).tolist()))
    self.flops_per_step = meta.get('flops_per_step')
    logging.info('%s: resumed at epoch %d, step %d of the epoch', self._name(0),
                 meta['epoch'], meta['step_in_epoch'])
    return int(meta['epoch']), int(meta['step_in_epoch'])

  def save(self, epoch: int, step_in_epoch: int) -> None:
    errors, epochs = [b[0] for b in self.best], [b[1] for b in self.best]
    solo = self.seeds.count == 1  # a solo checkpoint's meta keeps its scalar fields
    meta = {'epoch': epoch, 'step_in_epoch': step_in_epoch, 'train_time_s': self.train_time_s,
            'best_top1_err': errors[0] if solo else errors,
            'best_epoch': epochs[0] if solo else epochs,
            'flops_per_step': self.flops_per_step}
    if not solo:
      meta['seeds'] = list(self.seeds.seeds)
    self.ckpt.save(epoch * self.spe + step_in_epoch, self.state, meta)

  # -- training ------------------------------------------------------------------------
  def _step(self, batch):
    """One train step, compiled at the first call; logs XLA's FLOPs per step once."""
    if self.compiled_step is None:
      start = time.perf_counter()
      self.compiled_step = self.train_step.lower(self.state, batch, self.superior).compile()
      self.compile_s = time.perf_counter() - start
      self.flops_per_step = throughput.step_flops(self.compiled_step)
      if self.seeds.count > 1:
        check_pack_fits(self.compiled_step, self.seeds.count)
      logging.info('%s: global batch %d over %d devices, %.3g model FLOPs per step (XLA)',
                   self._name(0), self.config.batch_size * self.seeds.count,
                   jax.device_count(), self.flops_per_step or float('nan'))
    return self.compiled_step(self.state, batch, self.superior)

  def throughput(self, steps: int, seconds: float) -> dict:
    """images/s per device (every seed's images), FLOPs per step and MFU (None where the
    peak is unknown)."""
    peak = throughput.device_peak_flops(jax.devices()[0].device_kind, self.config.dtype)
    return throughput.throughput_summary(
        global_batch=self.config.batch_size * self.seeds.count,
        step_time_s=seconds / max(steps, 1), num_devices=jax.device_count(),
        flops_per_step=self.flops_per_step, peak=peak)

  def _log_train(self, pending, epoch, since: float) -> float:
    """Logs the steps of a window that began at `since`; returns when it ended.

    The window ends once its steps are done on the device, not when they were dispatched.
    """
    jax.block_until_ready(pending[-1][1])
    now = time.perf_counter()
    seconds, self.compile_s = now - since - self.compile_s, 0.0
    per_seed = [(s, self.seeds.unstack(jax.device_get(m))) for s, m in pending]
    rates = self.throughput(len(pending), seconds)
    for k, writer in enumerate(self.writers):
      mine = [(s, ms[k]) for s, ms in per_seed]
      _check_finite(mine, f' ({self._seed(k).strip()})' if self._seed(k) else '')
      step, means = mine[-1][0], _mean_metrics(mine)
      writer.write_scalars(step, {f'train/{name}': v for name, v in means.items()})
      writer.write_scalars(step, {f'throughput/{name}': v for name, v in rates.items()
                                  if v is not None})
      logging.info('%s epoch %d/%d step %d/%d: %s', self._name(k), epoch + 1,
                   self.config.num_epochs, step, self.total_steps,
                   ', '.join(f'{name} {v:.4g}' for name, v in sorted(means.items())))
    return now

  def _should_stop(self, step: int) -> bool:
    """SIGTERM on one host; across hosts, JAX's preemption sync point (all agree)."""
    if jax.process_count() > 1:
      return self.ckpt.reached_preemption(step)
    return self.stop_requested()

  def _batches(self, epoch: int, start_step: int):
    """The epoch's global batches from `start_step`: each seed's own, stacked in a pack."""
    paired = self.method.batch == 'paired'
    per_seed = [p.train_batches(epoch, start_step, paired=paired) for p in self.pipelines]
    stacked = (self.seeds.stack(list(batches)) for batches in zip(*per_seed))
    return sharding.prefetch_to_device(stacked, self.mesh, self.seeds.batch_spec)

  def train_epoch(self, epoch: int, start_step: int) -> None:
    pending, t0 = [], time.perf_counter()
    t_log = t0
    for i, batch in enumerate(self._batches(epoch, start_step), start=start_step):
      self.state, metrics = self._step(batch)
      step = epoch * self.spe + i + 1
      pending.append((step, metrics))
      self.report(step)
      if self.profile is not None:
        self.profile(step)
      if step % self.config.log_every_steps == 0 or i + 1 == self.spe:
        t_log, pending = self._log_train(pending, epoch, t_log), []
      if self._should_stop(step) and i + 1 < self.spe:
        if pending:
          self._log_train(pending, epoch, t_log)
        self.train_time_s += time.perf_counter() - t0
        self.save(epoch, i + 1)
        self.ckpt.wait()
        raise Preempted(f'{self._name(0)}: saved at step {step} and stopped on request')
    self.train_time_s += time.perf_counter() - t0

  # -- evaluation ----------------------------------------------------------------------
  def evaluate(self, epoch: int) -> list:
    """[(metrics, logits, features, labels)] per seed on the test set; tracks each seed's
    best epoch. Features come with the last epoch's evaluation only (None before)."""
    with self.report.timed('eval'):
      finals = evaluate(self.eval_step, state_lib.variables_of(self.state.student),
                        self.pipeline, self.mesh,
                        with_features=epoch + 1 == self.config.num_epochs, seeds=self.seeds)
    for k, (metrics, *_) in enumerate(finals):
      if metrics['top1_err'] < self.best[k][0]:
        self.best[k] = (float(metrics['top1_err']), epoch + 1)
      self.writers[k].write_scalars((epoch + 1) * self.spe,
                                    {f'eval/{m}': v for m, v in metrics.items()})
      logging.info('%s epoch %d/%d eval: %s', self._name(k), epoch + 1,
                   self.config.num_epochs, ', '.join(f'{m} {v:.4g}' for m, v in metrics.items()))
    return finals

  def close(self):
    self.ckpt.close()
    for writer in self.writers:
      writer.flush()
      writer.close()


def check_pack_fits(compiled, count: int) -> None:
  """Refuses a pack whose compiled step needs more memory than a device has, naming how
  many seeds fit (XLA's memory analysis; devices that do not say their limit pass)."""
  try:
    analysis = compiled.memory_analysis()
    limit = (jax.local_devices()[0].memory_stats() or {}).get('bytes_limit')
  except Exception:  # pylint: disable=broad-except  (a backend without the analysis)
    return
  if analysis is None:
    return
  needed = (analysis.argument_size_in_bytes + analysis.output_size_in_bytes
            + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)
  fit = seeds_lib.seeds_that_fit(needed, limit, count)
  if fit is not None and fit < count:
    raise ConfigError(
        f'a pack of {count} seeds needs about {needed / 2**30:.1f} GiB per device and the '
        f'device has {limit / 2**30:.1f} GiB: at most {fit} seeds fit; pack fewer seeds '
        '(--seeds) or run them unpacked')


def _finish(phase: Phase, pipeline, variables, final, *, source: str | None = None,
            **training) -> dict:
  """Writes a finished phase's outputs from its final evaluation `final`; returns results.

  A trained phase's model is exported first; a scored one's stays at `source`. results.json
  comes last (the done marker). `training`: steps, train_time_s, best (and throughput).
  """
  metrics, logits, features, labels = final
  config = phase.config
  if source is None:
    checkpointing.save_model(paths.join(phase.directory, checkpointing.MODEL_DIR),
                             arch=config.model.arch, num_classes=pipeline.num_classes,
                             options=model_options(config), variables=variables)
  out = results.phase_results(phase=phase.name, config=config, metrics=metrics,
                              superior=phase.superior_info, **training)
  if source is not None:
    out.update(method='imported', seed=None, source=source)
  results.write(phase.directory, out, logits, labels, features,
                f'{phase.name} ({"imported" if source else phase.method.name})')
  return out


def score_phase(phase: Phase, variables: dict, source: str, pipeline, mesh) -> dict:
  """Scores given weights (the exported model at `source`) as a finished phase of 0 epochs.

  Nothing trains and nothing is exported: the phase's results say method 'imported', seed
  None and `source` (e.g. a superior given with `superior_init`).
  """
  phase = dataclasses.replace(phase, config=dataclasses.replace(phase.config, num_epochs=0))
  model = models.create(phase.config.model.arch, pipeline.num_classes,
                        **model_options(phase.config))
  (final,) = evaluate(jax.jit(steps.make_eval_step(model)),
                      jax.device_put(variables, sharding.replicated(mesh)), pipeline, mesh)
  return _finish(phase, pipeline, None, final, source=paths.absolute(source), steps=0,
                 train_time_s=0.0, best=(final[0]['top1_err'], 0))


def _state_megabytes(state) -> float:
  return sum(x.nbytes for x in jax.tree.leaves(state) if hasattr(x, 'nbytes')) / 2**20


def train_phase(phase: Phase, pipeline, mesh, stop_requested=lambda: False) -> dict:
  """Trains (or resumes) one phase to the end and returns its results.json content."""
  return train_pack([phase], [pipeline], mesh, phase.directory, stop_requested)[0]


def train_pack(phases: list[Phase], pipelines: list, mesh, checkpoint_dir: str,
               stop_requested=lambda: False) -> list[dict]:
  """Trains (or resumes) phases that differ only in their seed as one program (one phase:
  a plain run); checkpoints go to `checkpoint_dir`. Returns each phase's results."""
  trainer = None
  try:  # the trainer too: its summary writer and checkpoint folder are the first writes
    trainer = _Trainer(phases, pipelines, mesh, stop_requested, checkpoint_dir)
    return _train(trainer)
  except Exception as e:  # pylint: disable=broad-except
    if not is_out_of_space(e):
      raise
    need = (f': a checkpoint needs about {_state_megabytes(trainer.state):.0f} MB'
            if trainer is not None else '')
    raise OutOfSpaceError(
        f'no space left on the device holding {checkpoint_dir}{need}; free space and run '
        'the same command to resume from the last checkpoint') from e
  finally:
    try:
      if trainer is not None:
        trainer.close()
    except Exception as e:  # pylint: disable=broad-except
      if not is_out_of_space(e):
        raise


def _train(trainer: _Trainer) -> list[dict]:
  config = trainer.config
  epoch, start_step = trainer.restore()
  finals = None
  for epoch in range(epoch, config.num_epochs):
    trainer.train_epoch(epoch, start_step)
    start_step = 0
    if trainer.end_epoch is not None:
      trainer.state = trainer.end_epoch(trainer.state)
    finals = trainer.evaluate(epoch)
    trainer.save(epoch + 1, 0)
  if finals is None:  # restored after the last epoch, before results were written
    finals = trainer.evaluate(config.num_epochs - 1)
  trainer.ckpt.wait()
  steps_done = config.num_epochs * trainer.spe
  rates = trainer.throughput(steps_done, trainer.train_time_s)
  variables = trainer.seeds.unstack(state_lib.variables_of(trainer.state.student))
  return [_finish(phase, trainer.pipeline, v, final, steps=steps_done,
                  train_time_s=trainer.train_time_s, best=best, throughput=rates)
          for phase, v, final, best in zip(trainer.phases, variables, finals, trainer.best)]
