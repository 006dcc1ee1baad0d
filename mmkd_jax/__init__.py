"""mmkd_jax: multimodal knowledge distillation for video action recognition."""
