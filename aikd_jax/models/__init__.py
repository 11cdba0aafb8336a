"""Model zoo. `create(arch, num_classes, **options)` returns a Flax module."""
from aikd_jax.models import preact_resnet  # noqa: F401  (registers architectures)
from aikd_jax.models.critic import Critic
from aikd_jax.models.registry import create, names, register

__all__ = ['Critic', 'create', 'names', 'register']
