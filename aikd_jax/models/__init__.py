"""Model zoo: `create(arch, num_classes, **options)` and `load(directory)`."""
from etils import epath

from aikd_jax.models import cifar_densenet  # noqa: F401  (registers architectures)
from aikd_jax.models import densenet  # noqa: F401
from aikd_jax.models import preact_resnet  # noqa: F401
from aikd_jax.models import resnet  # noqa: F401
from aikd_jax.models.critic import Critic
from aikd_jax.models.registry import create, names, register

__all__ = ['Critic', 'create', 'load', 'names', 'register']


def load(directory: str):
  """Returns `(module, variables)` of an exported model or of a finished run's phase folder.

  `directory` is either an exported model (`model.json` + `variables/`, as written by
  `aikd_jax.tools.import_torch` or at the end of a phase) or a phase folder such as
  `WORKDIR/superior`, whose export lives in `WORKDIR/superior/model`. Then
  `module.apply(variables, images_nhwc, train=False)` gives the logits.
  """
  from aikd_jax import checkpointing  # pylint: disable=g-import-not-at-top (keeps orbax lazy)
  directory = epath.Path(directory)  # a local folder or gs://...
  if not (directory / checkpointing.MODEL_JSON).exists():
    directory = directory / checkpointing.MODEL_DIR
  meta, variables = checkpointing.load_model(directory)
  module = create(meta['arch'], meta['num_classes'], **meta['options'])
  return module, variables
