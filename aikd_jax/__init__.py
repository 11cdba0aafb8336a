"""aikd_jax: adversarial self-knowledge distillation (AI-KD) in JAX/Flax."""
