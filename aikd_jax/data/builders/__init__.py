"""Our own TFDS builders. Importing this package registers them with TFDS."""
from aikd_jax.data.builders import fashion_mnist_local  # noqa: F401  (registers the builder)
from aikd_jax.data.builders import fgvc_aircraft  # noqa: F401
from aikd_jax.data.builders import mit67  # noqa: F401
from aikd_jax.data.builders import tiny_imagenet  # noqa: F401

# Builders that read archives the user downloads by hand (`manual.py` prepares them).
MANUAL_BUILDERS = ('fgvc_aircraft', 'mit67', 'tiny_imagenet')
