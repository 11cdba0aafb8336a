"""A whole run: phase 1 (superior, plain CE), then phase 2 (student, configured method).

A finished phase (its results.json exists) is skipped; a half-finished one resumes.
"""
import json
import os

from absl import logging
import jax
import ml_collections

from aikd_jax import checkpointing, evaluation, methods, models, sharding
from aikd_jax.data import datasets
from aikd_jax.data.pipeline import Pipeline
from aikd_jax.errors import UserError
from aikd_jax.train import loop, steps

# Keys that may change between a run and its resumption without changing its results.
_RESUMABLE_KEYS = {'log_every_steps', 'checkpoint.max_to_keep', 'data.tfds_dir',
                   'data.manual_dir', 'eval_batch_size', 'fast_compile'}
_CHOICES = {'aikd.critic_norm': ('batch', 'layer', 'none'),
            'aikd.critic_input': ('logits', 'probs'), 'dtype': ('float32', 'bfloat16')}


def _flatten(d: dict, prefix: str = '') -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def validate(config) -> None:
  """Fails fast, with one line, on values that would only break later."""
  methods.get(config.method, config)
  datasets.get(config.data.name)
  if config.model.arch not in models.names():
    raise UserError(f'unknown model.arch {config.model.arch!r}; known: {", ".join(models.names())}')
  flat = _flatten(config.to_dict())
  for key, allowed in _CHOICES.items():
    if flat[key] not in allowed:
      raise UserError(f'{key} must be one of {allowed}, got {flat[key]!r}')
  if config.num_epochs < 1 or config.batch_size < 1:
    raise UserError('num_epochs and batch_size must be positive')


def _check_or_write_config(config, workdir: str) -> None:
  """Writes DIR/config.json once; refuses a workdir made by a different config."""
  path = os.path.join(workdir, 'config.json')
  current = json.loads(config.to_json_best_effort(sort_keys=True))
  if os.path.exists(path):
    with open(path) as f:
      saved = _flatten(json.load(f))
    now = _flatten(current)
    differ = sorted(k for k in set(saved) | set(now)
                    if saved.get(k) != now.get(k) and k not in _RESUMABLE_KEYS)
    if differ:
      raise UserError(f'workdir {workdir} belongs to a different config (differs in: '
                      f'{", ".join(differ)}); use a new --workdir')
  elif jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(path + '.tmp', 'w') as f:  # atomic: other processes may be reading it
      json.dump(current, f, indent=2, sort_keys=True)
    os.replace(path + '.tmp', path)


def superior_config(config) -> ml_collections.ConfigDict:
  """Phase 1 trains with plain CE under its own seed (`superior_seed`, default seed + 1)."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.method = 'baseline'
  c.seed = config.seed + 1 if config.superior_seed is None else config.superior_seed
  return c


def _is_finished(phase_dir: str) -> bool:
  return os.path.exists(os.path.join(phase_dir, 'results.json'))


def _read_results(phase_dir: str) -> dict:
  with open(os.path.join(phase_dir, 'results.json')) as f:
    return json.load(f)


def load_superior(config, model_dir: str, num_classes: int) -> dict:
  """The exported superior's variables, after checking that it fits the student."""
  meta = checkpointing.read_model_meta(model_dir)
  expected = {'arch': config.model.arch, 'num_classes': num_classes,
              'width': int(config.model.width)}
  found = {'arch': meta['arch'], 'num_classes': meta['num_classes'],
           'width': meta['options'].get('width', expected['width'])}
  if found != expected:
    bad = ', '.join(f'{k} {found[k]!r} (student: {expected[k]!r})'
                    for k in expected if found[k] != expected[k])
    raise UserError(f'the superior in {model_dir} does not fit the student: {bad}')
  return checkpointing.load_model(model_dir)[1]


def _evaluate_imported_superior(config, model_dir: str, superior_dir: str, mesh) -> None:
  """With `superior_init`, phase 1 only scores the given superior on the test set."""
  pipeline = Pipeline(config)
  variables = load_superior(config, model_dir, pipeline.num_classes)
  model = models.create(config.model.arch, pipeline.num_classes, **loop.model_options(config))
  logits, labels = loop.eval_logits(jax.jit(steps.make_eval_step(model)),
                                    jax.device_put(variables, sharding.replicated(mesh)),
                                    pipeline, mesh)
  metrics = evaluation.classification_metrics(logits, labels, pipeline.num_classes)
  results = dict(metrics, epochs=0, steps=0, seed=None, method='imported',
                 arch=config.model.arch, dataset=config.data.name, train_time_s=0.0,
                 images_per_s=0.0, source=os.path.abspath(model_dir))
  loop.write_results(superior_dir, results, logits, labels, 'superior (imported)')


def _superior_paths(config, workdir: str) -> tuple[str, str]:
  """(phase folder with results.json, exported model folder) of the superior."""
  if config.superior_init:
    return os.path.join(workdir, 'superior'), config.superior_init
  superior_dir = os.path.join(config.superior_workdir or workdir, 'superior')
  return superior_dir, os.path.join(superior_dir, 'model')


def _run_superior(config, workdir: str, mesh, stop_requested) -> str:
  """Makes sure a finished superior exists; returns its exported model folder."""
  superior_dir, model_dir = _superior_paths(config, workdir)
  if _is_finished(superior_dir):
    return model_dir
  if config.superior_init:
    _evaluate_imported_superior(config, model_dir, superior_dir, mesh)
  elif config.superior_workdir:
    raise UserError(f'superior_workdir {config.superior_workdir} has no finished superior '
                    f'({superior_dir}/results.json is missing); finish that run first')
  else:
    sup_config = superior_config(config)
    phase = loop.Phase('superior', superior_dir, sup_config, methods.get('baseline', sup_config))
    loop.train_phase(phase, Pipeline(sup_config), mesh, stop_requested)
  return model_dir


def run(config, workdir: str, stop_requested=lambda: False) -> dict:
  """Trains both phases (skipping finished ones) and returns their results."""
  validate(config)
  _check_or_write_config(config, workdir)
  mesh = sharding.make_mesh()
  logging.info('mesh: %d devices over %d processes', jax.device_count(), jax.process_count())
  superior_model = _run_superior(config, workdir, mesh, stop_requested)
  student_dir = os.path.join(workdir, 'student')
  if not _is_finished(student_dir):
    pipeline = Pipeline(config)
    method = methods.get(config.method, config)
    superior = (load_superior(config, superior_model, pipeline.num_classes)
                if method.uses_superior else None)
    phase = loop.Phase('student', student_dir, config, method, superior)
    loop.train_phase(phase, pipeline, mesh, stop_requested)
  return {'superior': _read_results(_superior_paths(config, workdir)[0]),
          'student': _read_results(student_dir)}


def summary(results: dict, config, workdir: str) -> str:
  """A side-by-side table of both phases and where their outputs are."""
  keys = [('top1_err', 'top-1 err %'), ('top5_err', 'top-5 err %'), ('f1_macro', 'F1 %'),
          ('ece', 'ECE %'), ('ece_ts', 'ECE (TS) %')]
  sup, stu = results['superior'], results['student']
  lines = [f'{"":14s}{"superior":>12s}{"student (" + stu["method"] + ")":>22s}']
  lines += [f'{label:14s}{sup[k]:12.2f}{stu[k]:22.2f}' for k, label in keys]
  superior_dir = _superior_paths(config, workdir)[0]
  student_dir = os.path.join(workdir, 'student')
  lines += ['', f'results:              {superior_dir}/results.json, {student_dir}/results.json',
            f'reliability diagrams: {superior_dir}/reliability.png, {student_dir}/reliability.png',
            f'TensorBoard logs:     tensorboard --logdir {workdir}']
  return '\n'.join(lines)
