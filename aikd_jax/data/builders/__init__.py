"""Our own TFDS builders. Importing this package registers them with TFDS."""
from aikd_jax.data.builders import fashion_mnist_local  # noqa: F401  (registers the builder)
