"""A whole run: phase 1 (superior, plain CE), then phase 2 (student, configured method).

The config is read and checked once (`config.parse`, `preflight`); only then is the
workdir locked and written. A finished phase (its results.json reads back) is skipped; a
half-finished one resumes. Phase 1 runs when the method needs a superior, or when
`train_superior='always'` (the paper's Baseline row).

`run_pack` trains one phase of several runs that differ only in their seed as one program
(train/seeds.py): each run keeps its workdir and outputs, the pack's checkpoints go to
the pack's folder, and each workdir's pack.json keeps packed and unpacked runs apart.
"""
import contextlib
import dataclasses
import json

from absl import logging
from etils import epath
import jax

from aikd_jax import checkpointing, console, distributed, methods, models, preflight
from aikd_jax import results
from aikd_jax import paths, sharding, shared_workdir
from aikd_jax import config as config_lib
from aikd_jax import workdir_lock
from aikd_jax.data import datasets
from aikd_jax.data.pipeline import Pipeline
from aikd_jax.errors import ConfigError, WorkdirError
from aikd_jax.train import loop


def superior_config(config: config_lib.RunConfig) -> config_lib.RunConfig:
  """Phase 1 trains with plain CE under its own seed (`superior_seed`, default seed + 1),
  without batch augmentation unless `superior_augment='same'`."""
  seed = config.seed + 1 if config.superior_seed is None else config.superior_seed
  augment = config.augment
  if config.superior_augment == 'none':
    augment = dataclasses.replace(augment, cutout=0, mixup=0.0, cutmix=0.0)
  return dataclasses.replace(config, method='baseline', seed=seed, augment=augment)


def _results_path(phase_dir: str) -> str:
  return paths.join(phase_dir, results.RESULTS_JSON)


def finished_results(phase_dir: str) -> dict | None:
  """A finished phase's results.json, else None; a damaged one is moved aside (None).

  The phase then resumes from its last checkpoint (saved after the last epoch), so only
  the final evaluation runs again.
  """
  path = _results_path(phase_dir)
  if not epath.Path(path).exists():
    return None
  try:
    return preflight.read_json(path, 'results')
  except WorkdirError:
    if jax.process_index() == 0:
      epath.Path(path).replace(path + '.damaged')
      logging.warning('%s is damaged; moved it to %s.damaged and finishing the phase again',
                      path, path)
    return None


def _read_results(phase_dir: str) -> dict:
  return preflight.read_json(_results_path(phase_dir), 'results')


def _superior_paths(config, workdir: str) -> tuple[str, str]:
  """(phase folder with results.json, exported model folder) of the superior."""
  if config.superior_init:
    return paths.join(workdir, 'superior'), paths.absolute(config.superior_init)
  superior_dir = paths.join(paths.absolute(config.superior_workdir or workdir), 'superior')
  return superior_dir, paths.join(superior_dir, checkpointing.MODEL_DIR)


def _wants_superior(config, method) -> bool:
  return method.needs_superior or config.train_superior == 'always'


def _expected_model(config, num_classes: int) -> dict:
  return {'arch': config.model.arch, 'num_classes': num_classes, 'width': config.model.width}


def _preflight(config, workdir: str, method) -> None:
  """Every check that needs the outside world but not the data; nothing is written."""
  spec = datasets.get(config.data.name)
  preflight.check_devices(config, jax.local_device_count())
  preflight.check_augment(config, spec.image_shape[0])
  model = models.create(config.model.arch, spec.num_classes, **loop.model_options(config))
  preflight.check_model(config, model, spec.image_shape, method)
  preflight.check_workdir(config, workdir)
  expected = _expected_model(config, spec.num_classes)
  if config.model.init:
    checkpointing.check_model(config.model.init, {'arch': config.model.arch}, 'model.init')
  if config.superior_init and _wants_superior(config, method):
    checkpointing.check_model(config.superior_init, expected, 'superior_init')
  if config.superior_workdir and _wants_superior(config, method):
    superior_dir, model_dir = _superior_paths(config, workdir)
    if not epath.Path(_results_path(superior_dir)).exists():
      raise WorkdirError(_no_superior_message(config, superior_dir))
    preflight.read_json(_results_path(superior_dir), 'results')  # damaged: one line, untouched
    checkpointing.check_model(model_dir, expected, 'superior_workdir')


def _no_superior_message(config, superior_dir: str) -> str:
  return (f'superior_workdir {config.superior_workdir} has no finished superior '
          f'({_results_path(superior_dir)} is missing); finish that run first')


def load_superior(config, model_dir: str, num_classes: int) -> dict:
  """The exported superior's variables, after checking that it fits the student."""
  return checkpointing.load_model(model_dir, expected=_expected_model(config, num_classes),
                                  key='the superior')[1]


def _run_superior(config, workdir: str, pipeline, mesh, stop_requested) -> tuple[str, dict]:
  """Makes sure a finished superior exists; returns (its exported model folder, results)."""
  superior_dir, model_dir = _superior_paths(config, workdir)
  done = finished_results(superior_dir)
  if done is not None:
    return model_dir, done
  if config.superior_workdir:
    raise WorkdirError(_no_superior_message(config, superior_dir))
  sup_config = superior_config(config)
  phase = loop.Phase('superior', superior_dir, sup_config, methods.create(sup_config))
  if config.superior_init:  # phase 1 only scores the given superior on the test set
    variables = load_superior(config, model_dir, pipeline.num_classes)
    loop.score_phase(phase, variables, model_dir, pipeline, mesh)
  else:
    loop.train_phase(phase, pipeline.reseeded(sup_config.seed), mesh, stop_requested)
  return model_dir, _read_results(superior_dir)


def _checked(raw_config, workdir: str):
  """(config, method), every check that does not read the data done. Writes nothing."""
  config = config_lib.parse(raw_config)
  distributed.check_same_config(config.to_dict(), preflight.RESUMABLE_KEYS)
  method = methods.create(config)
  _preflight(config, workdir, method)  # first: reading the data can take minutes
  return config, method


def prepare(raw_config, workdir: str):
  """Reads and checks everything; returns (config, pipeline, method). Writes nothing."""
  config, method = _checked(raw_config, workdir)
  return config, Pipeline(config), method  # the Pipeline checks the batch against the data


def run(raw_config, workdir: str, stop_requested=lambda: False,
        shared_timeout_s: float = shared_workdir.TIMEOUT_S) -> dict:
  """Trains both phases (skipping finished ones) and returns their results.

  `raw_config` is the `ConfigDict` of the command line; it is checked before the
  workdir is touched. `workdir` is a local folder or an object-store URL (gs://...).
  With several processes, every one must see the same workdir: checked first, within
  `shared_timeout_s` seconds (WorkdirError otherwise).
  """
  workdir = paths.absolute(workdir)
  config, pipeline, method = prepare(raw_config, workdir)
  _check_not_packed(workdir)
  with _opened(workdir, config, shared_timeout_s):
    return _train(config, workdir, pipeline, method, stop_requested)


@contextlib.contextmanager
def _opened(workdir: str, config, shared_timeout_s: float = shared_workdir.TIMEOUT_S):
  """The checked workdir, locked, with its log file and config.json (process 0 writes)."""
  with workdir_lock.held(workdir, enabled=jax.process_index() == 0):
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    console.log_to_workdir(workdir, jax.process_index())
    shared_workdir.check(workdir, shared_timeout_s)
    preflight.write_config(config, workdir)
    yield


def run_superior_only(raw_config, workdir: str, stop_requested=lambda: False) -> dict:
  """Trains (or skips, or resumes) only phase 1 into WORKDIR/superior; returns its results.

  A sweep's shared superior: its students name WORKDIR with `superior_workdir`.
  """
  workdir = paths.absolute(workdir)
  config, pipeline, _ = prepare(raw_config, workdir)
  _check_not_packed(workdir)
  with _opened(workdir, config):
    return _run_superior(config, workdir, pipeline, sharding.make_mesh(), stop_requested)[1]


def _train(config, workdir, pipeline, method, stop_requested) -> dict:
  mesh = sharding.make_mesh()
  logging.info('mesh: %d devices over %d processes', jax.device_count(), jax.process_count())
  out = {}
  if _wants_superior(config, method):
    superior_model, out['superior'] = _run_superior(config, workdir, pipeline, mesh,
                                                    stop_requested)
  student_dir = paths.join(workdir, 'student')
  out['student'] = finished_results(student_dir)
  if out['student'] is None:
    superior = info = None
    if method.needs_superior:
      superior = load_superior(config, superior_model, pipeline.num_classes)
      info = _superior_info(config, workdir, results_of_superior=out.get('superior'))
    phase = loop.Phase('student', student_dir, config, method, superior, info)
    loop.train_phase(phase, pipeline, mesh, stop_requested)
    out['student'] = _read_results(student_dir)
  return out


def _superior_info(config, workdir: str, results_of_superior: dict) -> dict:
  """Where the student's superior came from, for its results.json."""
  phase_dir, model_dir = _superior_paths(config, workdir)
  return {'dir': paths.absolute(phase_dir), 'model': paths.absolute(model_dir),
          'seed': results_of_superior.get('seed'),
          'top1_err': results_of_superior.get('top1_err')}


def summary(results: dict, config, workdir: str) -> str:
  """A side-by-side table of the phases and where their outputs are."""
  keys = [('top1_err', 'top-1 err %'), ('top5_err', 'top-5 err %'), ('f1_macro', 'F1 %'),
          ('ece', 'ECE %'), ('ece_ts', 'ECE (TS) %')]
  stu, sup = results['student'], results.get('superior')
  dirs = [paths.join(workdir, 'student')]
  head = f'{"":14s}' + (f'{"superior":>12s}' if sup else '')
  lines = [head + f'{"student (" + stu["method"] + ")":>22s}']
  for k, label in keys:
    lines.append(f'{label:14s}' + (f'{sup[k]:12.2f}' if sup else '') + f'{stu[k]:22.2f}')
  if sup:
    dirs.insert(0, _superior_paths(config, workdir)[0])
  lines += ['', 'results:              ' + ', '.join(f'{d}/results.json' for d in dirs),
            'reliability diagrams: ' + ', '.join(f'{d}/reliability.png' for d in dirs),
            f'TensorBoard logs:     tensorboard --logdir {workdir}']
  return '\n'.join(lines)


# -- a pack: runs that differ only in their seed, trained as one program ---------------

PACK_JSON = 'pack.json'
_PACK_MAY_DIFFER = frozenset({'seed', 'superior_seed', 'superior_workdir'})


def _pack_marker(workdir: str) -> dict | None:
  path = paths.join(workdir, PACK_JSON)
  return preflight.read_json(path, 'pack.json') if epath.Path(path).exists() else None


def _check_not_packed(workdir: str) -> None:
  """An unpacked run refuses a workdir that a pack trains (its checkpoints are elsewhere)."""
  marker = _pack_marker(workdir)
  if marker is not None:
    raise WorkdirError(f'{workdir} is one seed of a pack trained as one program (checkpoints '
                       f'in {marker.get("pack_dir")}): run it with python -m aikd_jax.sweep '
                       '--pack_seeds, or use another --workdir')


def _check_pack(configs: list, method, superior_only: bool) -> None:
  for config in configs[1:]:
    differ = preflight.differing_keys(configs[0].to_dict(), config.to_dict(),
                                      _PACK_MAY_DIFFER | preflight.RESUMABLE_KEYS)
    if differ:
      raise ConfigError('the runs of a pack may differ only in their seed; '
                                   f'these differ in: {", ".join(differ)}')
  if superior_only:
    return
  c = configs[0]
  if c.train_superior == 'always' and not method.needs_superior:
    raise ConfigError("train_superior='always' cannot be packed: pack the "
                                 'superiors as their own cells')
  if method.needs_superior and not (c.superior_workdir or c.superior_init):
    raise ConfigError('a packed student needs finished superiors '
                                 '(superior_workdir or superior_init): pack them first')


def _check_member(workdir: str, pack_dir: str) -> None:
  """Refuses a pack's member workdir that an unpacked run (config.json without pack.json)
  or another pack started. Writes nothing."""
  marker = _pack_marker(workdir)
  if marker is None and epath.Path(paths.join(workdir, preflight.CONFIG_JSON)).exists():
    raise WorkdirError(f'{workdir} holds a run started unpacked; finish it without '
                       '--pack_seeds, or delete it to train it in a pack')
  if marker is not None and marker.get('pack_dir') != pack_dir:
    raise WorkdirError(f'{workdir} belongs to another pack ({marker.get("pack_dir")}); '
                       'use another --workdir')


def _claim(workdir: str, pack_dir: str, seed: int) -> None:
  """Marks `workdir` as a member of the pack in `pack_dir` (pack.json)."""
  if _pack_marker(workdir) is None and jax.process_index() == 0:
    paths.write_text_atomic(paths.join(workdir, PACK_JSON),
                            json.dumps({'pack_dir': pack_dir, 'seed': seed}, indent=2))


def run_pack(raw_configs: list, workdirs: list[str], pack_dir: str, *, superior_only: bool,
             stop_requested=lambda: False) -> list[dict]:
  """Trains the student phase (or, with `superior_only`, phase 1) of runs that differ only
  in their seed as one program; returns each run's results of that phase.

  A student's superior must be finished already (`superior_workdir`, or `superior_init`,
  which is scored into its workdir as an unpacked run does).
  """
  workdirs, pack_dir = [paths.absolute(w) for w in workdirs], paths.absolute(pack_dir)
  checked = [_checked(raw, w) for raw, w in zip(raw_configs, workdirs)]
  configs, method = [c for c, _ in checked], checked[0][1]
  _check_pack(configs, method, superior_only)
  for workdir in workdirs:
    _check_member(workdir, pack_dir)
  pipeline = Pipeline(configs[0])
  with contextlib.ExitStack() as stack:
    for workdir in [pack_dir, *workdirs]:
      stack.enter_context(workdir_lock.held(workdir, enabled=jax.process_index() == 0))
    epath.Path(pack_dir).mkdir(parents=True, exist_ok=True)
    console.log_to_workdir(pack_dir, jax.process_index())
    shared_workdir.check(pack_dir)
    for config, workdir in zip(configs, workdirs):
      epath.Path(workdir).mkdir(parents=True, exist_ok=True)
      _claim(workdir, pack_dir, config.seed)
      preflight.write_config(config, workdir)
    return _train_pack(configs, workdirs, pack_dir, pipeline, method, superior_only,
                       stop_requested)


def _train_pack(configs, workdirs, pack_dir, pipeline, method, superior_only,
                stop_requested) -> list[dict]:
  mesh = sharding.make_mesh()
  name = 'superior' if superior_only else 'student'
  done = [finished_results(paths.join(w, name)) for w in workdirs]
  if all(d is not None for d in done):
    return done
  if superior_only:
    phase_configs = [superior_config(c) for c in configs]
    phases = [loop.Phase(name, paths.join(w, name), c, methods.create(c))
              for c, w in zip(phase_configs, workdirs)]
  else:
    phase_configs = configs
    phases = [_student_phase(c, w, pipeline, method, mesh, stop_requested)
              for c, w in zip(configs, workdirs)]
  pipelines = [pipeline.reseeded(c.seed) for c in phase_configs]
  loop.train_pack(phases, pipelines, mesh, paths.join(pack_dir, name), stop_requested)
  return [_read_results(p.directory) for p in phases]


def _student_phase(config, workdir, pipeline, method, mesh, stop_requested) -> loop.Phase:
  superior = info = None
  if method.needs_superior:  # finished already (_check_pack): read, or an import scored
    model_dir, done = _run_superior(config, workdir, pipeline, mesh, stop_requested)
    superior = load_superior(config, model_dir, pipeline.num_classes)
    info = _superior_info(config, workdir, results_of_superior=done)
  return loop.Phase('student', paths.join(workdir, 'student'), config, method, superior, info)
