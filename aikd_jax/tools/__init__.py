"""Command-line tools (`python -m aikd_jax.tools.<name>`)."""
