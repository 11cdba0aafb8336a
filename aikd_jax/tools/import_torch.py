r"""Imports a PyTorch state_dict (.pth) as an exported aikd_jax model.

  python -m aikd_jax.tools.import_torch --arch resnet50 --num-classes 200 \
      --input model.pth --output DIR [--width N]

`convert_state_dict` is pure numpy (no torch); only the CLI reads the .pth with torch.

Naming rule: a Flax variable path maps to a torch key by joining the module names
with '.', turning every '_' into '.', and renaming the leaf (kernel/scale -> weight, bias -> bias,
mean -> running_mean, var -> running_var). Example: `layer1_0/downsample_0/kernel` is
`layer1.0.downsample.0.weight`. Layouts: conv OIHW -> HWIO, Linear (out, in) ->
(in, out). `num_batches_tracked` is ignored and a DataParallel `module.` prefix is
stripped. `--width` must be the width the torch model was built with (base width
64 for ResNets, growth rate 32 for DenseNets; see each model's docstring).
"""
import argparse
import sys

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from aikd_jax import models
from aikd_jax.errors import UserError

TORCH_MISSING = 'torch is needed to read .pth files: pip install torch (optional extra)'

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
  try:
    module = models.create(arch, num_classes, **options)
  except ValueError as e:
    raise UserError(str(e)) from None
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
    raise UserError(f'state_dict key {unmapped[0]!r} does not map to any parameter of '
                    f'{what}{more}')
  missing = [k for k in expected if k not in sd]
  if missing:
    collection, path, _ = expected[missing[0]]
    more = f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''
    raise UserError(f'Flax variable {collection}/{"/".join(path)} of {what} has no torch key '
                    f'{missing[0]!r} in the state_dict{more}')


def convert_state_dict(arch: str, num_classes: int, state_dict: dict,
                       width: int | None = None) -> dict:
  """Returns {'params', 'batch_stats'} (float32 numpy) for a torch state_dict of numpy arrays.

  Raises UserError (one line) for a key that does not map, a Flax variable with no
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
      raise UserError(f'state_dict key {key!r} has shape {tuple(value.shape)} but {what} '
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
    raise UserError(f'{path} holds no state_dict of tensors')
  return tensors


def read_pth(path: str) -> dict[str, np.ndarray]:
  """Reads a .pth state_dict as numpy arrays (needs torch)."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError(TORCH_MISSING) from None
  try:
    obj = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f'cannot read {path}: {type(e).__name__}: {str(e).splitlines()[0]}') from None
  tensors = _unwrap(obj, path)
  return {k: (v.detach().float() if v.is_floating_point() else v.detach()).numpy()
          for k, v in tensors.items()}


def _parse(argv):
  parser = argparse.ArgumentParser(
      prog='python -m aikd_jax.tools.import_torch',
      description='Convert a PyTorch state_dict into an exported aikd_jax model.')
  parser.add_argument('--arch', required=True, help=f'one of: {", ".join(models.names())}')
  parser.add_argument('--num-classes', type=int, required=True)
  parser.add_argument('--input', required=True, help='the .pth file')
  parser.add_argument('--output', required=True, help='directory for the exported model')
  parser.add_argument('--width', type=int, default=None,
                      help='base width the torch model was built with (default: the standard one)')
  return parser.parse_args(argv)


def main(argv=None) -> int:
  args = _parse(argv)
  from aikd_jax import checkpointing  # pylint: disable=g-import-not-at-top (keeps orbax lazy)
  try:
    state_dict = read_pth(args.input)
    variables = convert_state_dict(args.arch, args.num_classes, state_dict, args.width)
    options = {} if args.width is None else {'width': args.width}
    checkpointing.save_model(args.output, arch=args.arch, num_classes=args.num_classes,
                             options=options, variables=variables)
  except UserError as e:
    print(str(e), file=sys.stderr)
    return 1
  n = sum(a.size for a in jax.tree.leaves(variables['params']))
  print(f'wrote {args.output}: {args.arch}, {args.num_classes} classes, {n:,} parameters')
  return 0


if __name__ == '__main__':
  sys.exit(main())
