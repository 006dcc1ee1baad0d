"""Models: TimeSformer (RGB / flow / omni), STLT (layout) and the frozen ensemble teacher."""
from mmkd_jax.models.ensemble import ensemble_logits
from mmkd_jax.models.registry import MODALITY_KEYS, MODELS, build_model, model_inputs
from mmkd_jax.models.stlt import STLT
from mmkd_jax.models.timesformer import TimeSformer

__all__ = ["MODALITY_KEYS", "MODELS", "STLT", "TimeSformer", "build_model", "ensemble_logits",
           "model_inputs"]
