"""Input pipeline: dataset registry, TFDS builders, augmentation, host-local batches.

`datasets` is light (no TensorFlow); import `aikd_jax.data.pipeline` for `Pipeline`.
"""
