"""Makes the repository root importable for pytest (configs/, aikd_jax/)."""
