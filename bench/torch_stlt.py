"""PyTorch STLT, the baseline's layout teacher, in the authors' module naming.

Written from the BMVC'21 paper (not copied): the parameter names are those of
gorjanradevski/revisiting-spatial-temporal-layouts, so `mmkd_jax.convert.stlt_from_torch` loads
its state dict, which is how the benchmark gives both frameworks the same weights. Sequence-first
`nn.TransformerEncoder`s, as in the authors' code.
"""
from __future__ import annotations

import torch
from torch import nn

CLS, PAD = 3, 0
REGULAR, EMPTY, EXTRACT = 2, 3, 4


def _encoder(d: int, heads: int, ff: int, layers: int, dropout: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(d, heads, ff, dropout=dropout, activation="gelu")
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


class CategoryBoxEmbeddings(nn.Module):
    def __init__(self, d: int, dropout: float):
        super().__init__()
        self.category_embeddings = nn.Embedding(4, d, padding_idx=0)
        self.box_embedding = nn.Linear(4, d)
        self.layer_norm = nn.LayerNorm(d, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, boxes: torch.Tensor, cats: torch.Tensor) -> torch.Tensor:
        x = self.category_embeddings(cats) + self.box_embedding(boxes)
        return self.dropout(self.layer_norm(x))


class SpatialTransformer(nn.Module):
    def __init__(self, d: int, heads: int, ff: int, layers: int, dropout: float):
        super().__init__()
        self.category_box_embeddings = CategoryBoxEmbeddings(d, dropout)
        self.transformer = _encoder(d, heads, ff, layers, dropout)

    def forward(self, boxes: torch.Tensor, cats: torch.Tensor) -> torch.Tensor:
        """(B, F, 1+K, 4), (B, F, 1+K) -> the frame-cls token of every frame (B, F, D)."""
        b, f, n = cats.shape
        x = self.category_box_embeddings(boxes, cats).flatten(0, 1).transpose(0, 1)
        x = self.transformer(x, src_key_padding_mask=(cats == PAD).flatten(0, 1))
        return x[0].reshape(b, f, -1)


class FramesEmbeddings(nn.Module):
    def __init__(self, d: int, heads: int, ff: int, layers: int, positions: int, dropout: float):
        super().__init__()
        self.layout_embedding = SpatialTransformer(d, heads, ff, layers, dropout)
        self.position_embeddings = nn.Embedding(positions, d)
        self.frame_type_embedding = nn.Embedding(5, d, padding_idx=0)
        self.layer_norm = nn.LayerNorm(d, eps=1e-12)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("position_ids", torch.arange(positions)[None])

    def forward(self, boxes, cats, types):
        x = self.layout_embedding(boxes, cats)
        x = x + self.position_embeddings(self.position_ids[:, :x.shape[1]])
        return self.dropout(self.layer_norm(x + self.frame_type_embedding(types)))


class Backbone(nn.Module):
    def __init__(self, d, heads, ff, spatial, temporal, positions, dropout):
        super().__init__()
        self.frames_embeddings = FramesEmbeddings(d, heads, ff, spatial, positions, dropout)
        self.transformer = _encoder(d, heads, ff, temporal, dropout)

    def forward(self, boxes, cats, types):
        x = self.frames_embeddings(boxes, cats, types).transpose(0, 1)  # (F, B, D)
        n = x.shape[0]
        causal = torch.triu(torch.full((n, n), float("-inf"), device=x.device), diagonal=1)
        # Saying so spares PyTorch its check that the mask is causal, a `.item()` that breaks
        # the torch.compile graph; the result is the same (checked: max difference 0.0).
        return self.transformer(x, mask=causal, is_causal=True)


class PredictionHead(nn.Module):
    def __init__(self, d: int, classes: int):
        super().__init__()
        self.fc1, self.layer_norm = nn.Linear(d, d), nn.LayerNorm(d, eps=1e-12)
        self.fc2 = nn.Linear(d, classes)

    def forward(self, x):
        return self.fc2(self.layer_norm(nn.functional.gelu(self.fc1(x))))


class Stlt(nn.Module):
    """Boxes (B, T, K, 4) and categories (B, T, K) -> logits (B, classes)."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_dim: int, spatial_layers: int,
                 temporal_layers: int, num_classes: int, max_positions: int,
                 dropout: float = 0.1):
        super().__init__()
        self.backbone = Backbone(hidden_size, num_heads, mlp_dim, spatial_layers,
                                 temporal_layers, max_positions, dropout)
        self.prediction_head = PredictionHead(hidden_size, num_classes)

    def forward(self, boxes: torch.Tensor, cats: torch.Tensor) -> torch.Tensor:
        b, t, k = cats.shape
        # The dataset side of the authors' code: a frame-cls box first in every frame, frame
        # types, and an extract frame (cls box only) appended.
        cls_box = torch.tensor([0.0, 0.0, 1.0, 1.0], device=boxes.device).expand(b, t + 1, 1, 4)
        pad_frame = torch.zeros(b, 1, k, 4, device=boxes.device, dtype=boxes.dtype)
        boxes = torch.cat([cls_box.to(boxes.dtype), torch.cat([boxes, pad_frame], 1)], 2)
        types = torch.where((cats != PAD).any(-1), REGULAR, EMPTY)
        types = torch.cat([types, torch.full((b, 1), EXTRACT, device=cats.device)], 1)
        cats = torch.cat([cats, torch.zeros(b, 1, k, dtype=cats.dtype, device=cats.device)], 1)
        cats = torch.cat([torch.full((b, t + 1, 1), CLS, dtype=cats.dtype, device=cats.device),
                          cats], 2)
        out = self.backbone(boxes, cats, types)
        return self.prediction_head(out[t])  # the extract frame
