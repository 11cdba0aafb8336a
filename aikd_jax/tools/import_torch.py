r"""Imports a PyTorch state_dict (.pth) as an exported aikd_jax model.

  python -m aikd_jax.tools.import_torch --arch resnet50 --num_classes 200 \
      --input model.pth --output DIR [--width N] [--overwrite]

An --output that holds anything is refused unless --overwrite is given; the model is
written beside it and renamed into place (checkpointing.save_model), model.json last.
Every failure is one `error:` line of ours (never torch's text), exit status by kind.

`convert_state_dict` is pure numpy (no torch); only the CLI reads the .pth with torch.

Naming rule: a Flax variable path maps to a torch key by joining the module names
with '.', turning every '_' into '.', and renaming the leaf (kernel/scale -> weight, bias -> bias,
mean -> running_mean, var -> running_var). Example: `layer1_0/downsample_0/kernel` is
`layer1.0.downsample.0.weight`. Layouts: conv OIHW -> HWIO, Linear (out, in) ->
(in, out). `num_batches_tracked` is ignored and a DataParallel `module.` prefix is
stripped. `--width` must be the width the torch model was built with (base width
64 for ResNets, growth rate 32 for DenseNets; see each model's docstring).
"""
import logging as py_logging
import os

from absl import flags
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from aikd_jax import cli, models, paths
from aikd_jax.errors import ConfigError, DataError, OutOfSpaceError, UserError, WorkdirError
from aikd_jax.errors import is_out_of_space

TORCH_MISSING = 'torch is needed to read .pth files: pip install torch (optional extra)'
_RESAVE = 'save the weights again with torch.save(model.state_dict(), PATH)'

_LEAF_NAMES = {
    ('params', 'kernel'): 'weight',
    ('params', 'scale'): 'weight',
    ('params', 'bias'): 'bias',
    ('batch_stats', 'mean'): 'running_mean',
    ('batch_stats', 'var'): 'running_var',
}
_IGNORED_SUFFIXES = ('num_batches_tracked',)


def torch_key(arch: str, collection: str, path: tuple[str, ...]) -> str:
  """The torch state_dict key of the Flax variable `collection/path`."""
  *modules, leaf = path
  del arch  # one rule for every architecture
  modules = [m.replace('_', '.') for m in modules]
  return '.'.join(modules + [_LEAF_NAMES[(collection, leaf)]])


def _to_flax_layout(array: np.ndarray) -> np.ndarray:
  if array.ndim == 4:  # conv OIHW -> HWIO
    return array.transpose(2, 3, 1, 0)
  if array.ndim == 2:  # linear (out, in) -> (in, out)
    return array.T
  return array


def _torch_shape(flax_shape: tuple[int, ...]) -> tuple[int, ...]:
  if len(flax_shape) == 4:
    return tuple(flax_shape[i] for i in (3, 2, 0, 1))
  if len(flax_shape) == 2:
    return flax_shape[::-1]
  return tuple(flax_shape)


def _abstract_variables(arch: str, num_classes: int, options: dict) -> dict:
  if num_classes < 1:
    raise ConfigError(f'--num-classes must be at least 1, got {num_classes}')
  try:
    module = models.create(arch, num_classes, **options)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  x = jnp.zeros((1, 32, 32, 3), jnp.float32)  # every model pools globally
  return jax.eval_shape(lambda: module.init(jax.random.key(0), x, train=False))


def _expected_keys(arch: str, abstract: dict) -> dict[str, tuple[str, tuple[str, ...], tuple]]:
  """torch key -> (collection, Flax path, Flax shape)."""
  expected = {}
  for collection in ('params', 'batch_stats'):
    flat = traverse_util.flatten_dict(dict(abstract.get(collection, {})))
    for path, leaf in flat.items():
      expected[torch_key(arch, collection, path)] = (collection, path, tuple(leaf.shape))
  return expected


def _clean(state_dict: dict) -> dict[str, np.ndarray]:
  """Strips a DataParallel `module.` prefix and drops `num_batches_tracked`."""
  out = {}
  for key, value in state_dict.items():
    if key.startswith('module.'):
      key = key[len('module.'):]
    if key.endswith(_IGNORED_SUFFIXES):
      continue
    out[key] = np.asarray(value)
  return out


def _describe(arch, num_classes, options):
  width = f', width {options["width"]}' if 'width' in options else ''
  return f'{arch} ({num_classes} classes{width})'


def _check_keys(sd: dict, expected: dict, what: str) -> None:
  unmapped = [k for k in sd if k not in expected]
  if unmapped:
    more = f' (and {len(unmapped) - 1} more unmapped keys)' if len(unmapped) > 1 else ''
    raise ConfigError(f'state_dict key {unmapped[0]!r} does not map to any parameter of '
                    f'{what}{more}')
  missing = [k for k in expected if k not in sd]
  if missing:
    collection, path, _ = expected[missing[0]]
    more = f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''
    raise ConfigError(f'Flax variable {collection}/{"/".join(path)} of {what} has no torch key '
                    f'{missing[0]!r} in the state_dict{more}')


def convert_state_dict(arch: str, num_classes: int, state_dict: dict,
                       width: int | None = None) -> dict:
  """Returns {'params', 'batch_stats'} (float32 numpy) for a torch state_dict of numpy arrays.

  Raises ConfigError (one line) for a key that does not map, a Flax variable with no
  torch key, or a shape that does not fit.
  """
  options = {} if width is None else {'width': int(width)}
  what = _describe(arch, num_classes, options)
  abstract = _abstract_variables(arch, num_classes, options)
  expected = _expected_keys(arch, abstract)
  sd = _clean(state_dict)
  _check_keys(sd, expected, what)
  flat = {'params': {}, 'batch_stats': {}}
  for key, value in sd.items():  # the state_dict's order: the first bad key is reported
    collection, path, shape = expected[key]
    if tuple(value.shape) != _torch_shape(shape):
      raise ConfigError(f'state_dict key {key!r} has shape {tuple(value.shape)} but {what} '
                      f'expects {_torch_shape(shape)} (Flax {collection}/{"/".join(path)} '
                      f'{shape})')
    flat[collection][path] = np.ascontiguousarray(_to_flax_layout(value), dtype=np.float32)
  return {c: traverse_util.unflatten_dict(f) for c, f in flat.items()}


def _unwrap(obj, path: str) -> dict:
  """The state_dict inside a loaded .pth (a bare state_dict or a training checkpoint)."""
  import torch  # pylint: disable=g-import-not-at-top
  if isinstance(obj, dict):
    for key in ('state_dict', 'model_state_dict', 'net', 'model'):
      if isinstance(obj.get(key), dict):
        obj = obj[key]
        break
  tensors = {k: v for k, v in obj.items() if torch.is_tensor(v)} if isinstance(obj, dict) else {}
  if not tensors:
    raise DataError(f'{path} holds no state_dict of tensors: {_RESAVE}')
  return tensors


def _check_input_file(path: str) -> None:
  """One line for an --input that cannot be a .pth: missing, a folder, empty."""
  if not os.path.exists(path):
    raise DataError(f'--input {path} does not exist: give the path of the .pth file')
  if not os.path.isfile(path):
    raise DataError(f'--input {path} is not a file: give the path of the .pth file')
  if os.path.getsize(path) == 0:
    raise DataError(f'--input {path} is empty (0 bytes): copy or download it again, or {_RESAVE}')


def _load_error(path: str, error: Exception) -> DataError:
  """Our own line for a failed torch.load; torch's text (and its advice) is not shown."""
  import pickle  # pylint: disable=g-import-not-at-top
  if isinstance(error, pickle.UnpicklingError):
    return DataError(f'{path} holds Python objects besides tensors (a pickled model or '
                     f'optimizer?), which are not loaded for safety: {_RESAVE}')
  return DataError(f'cannot read {path}: not a file written by torch.save, or truncated or '
                   f'damaged; copy or download it again, or {_RESAVE}')


def read_pth(path: str) -> dict[str, np.ndarray]:
  """Reads a .pth state_dict as numpy arrays (needs torch); DataError on a bad file."""
  _check_input_file(path)
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ConfigError(TORCH_MISSING) from None
  try:
    obj = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    raise _load_error(path, e) from None
  tensors = _unwrap(obj, path)
  return {k: (v.detach().float() if v.is_floating_point() else v.detach()).numpy()
          for k, v in tensors.items()}


def check_finite(state_dict: dict[str, np.ndarray], path: str) -> None:
  """DataError naming the first floating tensor with NaN or Inf values."""
  for key, value in state_dict.items():
    if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
      raise DataError(f'{path}: tensor {key!r} holds NaN or Inf values (a diverged or damaged '
                      'checkpoint); import one with finite weights')


def check_output(output: str, overwrite: bool) -> None:
  """WorkdirError unless --output can be written and is absent, an empty folder, or (with
  --overwrite) an exported model: --overwrite never replaces anything else."""
  from aikd_jax import checkpointing  # pylint: disable=g-import-not-at-top (keeps orbax lazy)
  problem = paths.folder_problem(output)
  if problem:
    raise WorkdirError(f'--output {output} cannot be written: {problem}; nothing was changed')
  out = paths.resolve(output)  # a local folder or gs://...
  if os.path.islink(out) and not out.is_dir():
    raise WorkdirError(f'--output {output} is a file, not a folder: give a folder path')
  entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
  if entries and not overwrite:
    raise WorkdirError(f'--output {output} already holds files (an exported model?); nothing '
                       'was changed: choose a new folder, or add --overwrite to replace it')
  exported = (checkpointing.MODEL_JSON, checkpointing.VARIABLES)
  others = [e for e in entries if e != exported[0] and e.split('.')[0] != exported[1]]
  if others:
    raise WorkdirError(f'--output {output} holds files that are not an exported model (e.g. '
                       f'{others[0]}); --overwrite replaces only an exported model '
                       f'({" + ".join(exported)}): nothing was changed, choose another folder')


_FLAGS = ('arch', 'num_classes', 'input', 'output', 'overwrite', 'width')


def _define_flags(values) -> None:
  define = lambda kind, name, default, text: kind(name, default, text, flag_values=values)
  define(flags.DEFINE_string, 'arch', None, f'One of: {", ".join(models.names())}.')
  define(flags.DEFINE_integer, 'num_classes', None, 'Classes of the model\'s head.')
  define(flags.DEFINE_string, 'input', None, 'The .pth file.')
  define(flags.DEFINE_string, 'output', None, 'Folder for the exported model; must not exist '
         'or be empty.')
  define(flags.DEFINE_bool, 'overwrite', False, 'Replace an existing --output (the old one is '
         'removed only once the new one is complete).')
  define(flags.DEFINE_integer, 'width', None, 'Base width the torch model was built with '
         '(default: the standard one).')
  flags.DEFINE_alias('num-classes', 'num_classes', flag_values=values)  # the old spelling
  flags.mark_flags_as_required(['arch', 'num_classes', 'input', 'output'], flag_values=values)


def _check_args(args) -> None:
  if args.num_classes < 1:
    raise ConfigError(f'--num_classes must be at least 1, got {args.num_classes}')
  if args.width is not None and args.width < 1:
    raise ConfigError(f'--width must be at least 1, got {args.width}')
  check_output(args.output, args.overwrite)


def _write(args, variables) -> None:
  from aikd_jax import checkpointing  # pylint: disable=g-import-not-at-top (keeps orbax lazy)
  options = {} if args.width is None else {'width': args.width}
  try:
    paths.resolve(args.output).parent.mkdir(parents=True, exist_ok=True)
    checkpointing.save_model(args.output, arch=args.arch, num_classes=args.num_classes,
                             options=options, variables=variables)
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (TensorStore: ValueError, not OSError)
    if is_out_of_space(e):
      raise OutOfSpaceError(f'no space left on the device holding --output {args.output}; '
                            'nothing was replaced: free space and run again') from None
    if not isinstance(e, OSError):
      raise
    raise WorkdirError(f'cannot write --output {args.output}: {e.strerror}; nothing was '
                       'replaced') from None


def _main(cli_args) -> int:
  args = cli_args.options(*_FLAGS)
  _check_args(args)
  state_dict = read_pth(args.input)
  check_finite(state_dict, args.input)
  variables = convert_state_dict(args.arch, args.num_classes, state_dict, args.width)
  _write(args, variables)
  n = sum(a.size for a in jax.tree.leaves(variables['params']))
  print(f'wrote {args.output}: {args.arch}, {args.num_classes} classes, {n:,} parameters')
  return 0


COMMAND = cli.Command('aikd_jax.tools.import_torch', __doc__, _define_flags, _main)


def main(argv: list) -> int:
  """The command on `argv` (without the program's name); returns the exit status."""
  return cli.main(COMMAND, argv)


def run() -> None:
  """The `python -m aikd_jax.tools.import_torch` process."""
  # Orbax's and TensorStore's threads print their own tracebacks after a failed write (a
  # full disk): they go nowhere (this command has no log file); our one line is what counts.
  py_logging.disable(py_logging.CRITICAL)
  cli.run(COMMAND)


if __name__ == '__main__':
  run()
