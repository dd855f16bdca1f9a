"""Masked 1-D layers of the ActionFormer projection and head (channels-first tensors, (B, C, T)).

Padding masks travel with every feature map: (B, T) bool, True = real position. Each layer zeroes
the padded positions of its output and attention never attends to them. A k=3 conv still reads the
input on both sides of a valid position, so what its caller leaves at padded input positions reaches
the valid positions next to the boundary (the projection's first conv does so on purpose, as OpenTAD).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import Tensor, nn


def resize_mask(mask: Tensor, length: int) -> Tensor:
    """Nearest-neighbour resize of a (B, T) bool mask to (B, length) (how strided layers shrink masks)."""
    if mask.shape[-1] == length:
        return mask
    return F.interpolate(mask[:, None].float(), size=length, mode="nearest")[:, 0].bool()


def apply_mask(x: Tensor, mask: Tensor) -> Tensor:
    """Zero the padded positions of a (B, C, T) tensor."""
    return x * mask[:, None].to(x.dtype)


def init_conv_(conv: nn.Conv1d) -> None:
    """Kaiming-uniform(a=sqrt(5)) weight (PyTorch's default, restated for clarity) and zero bias."""
    nn.init.kaiming_uniform_(conv.weight, a=math.sqrt(5))
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel axis of a (B, C, T) tensor (parameters named as in nn.LayerNorm)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class MaskedConvModule(nn.Module):
    """Conv1d -> mask -> optional LayerNorm(eps 1e-6) -> optional ReLU -> mask.

    The conv has no bias when a norm follows (the norm's shift makes it redundant).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, bias: bool | None = None, norm: bool = False, act: bool = False):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                              groups=groups, bias=(not norm) if bias is None else bias)
        init_conv_(self.conv)
        self.norm = ChannelLayerNorm(out_channels, eps=1e-6) if norm else None
        self.act = nn.ReLU() if act else None

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        x = self.conv(x)
        mask = resize_mask(mask, x.shape[-1])
        x = apply_mask(x, mask)
        if self.norm is not None:
            x = self.norm(x)
        if self.act is not None:
            x = self.act(x)
        return apply_mask(x, mask), mask


class Scale(nn.Module):
    """One learnable scalar (per pyramid level of the regression head)."""

    def __init__(self, init_value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init_value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


class AffineDropPath(nn.Module):
    """Per-channel learnable scale (init 1e-4) followed by stochastic depth (timm DropPath).

    The tiny initial scale makes every residual branch start close to identity.
    """

    def __init__(self, channels: int, drop_prob: float = 0.0, init_scale: float = 1e-4):
        super().__init__()
        self.scale = nn.Parameter(torch.full((1, channels, 1), init_scale))
        self.drop_path = DropPath(drop_prob) if drop_prob > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.drop_path(self.scale * x)


class MaskedMHCA(nn.Module):
    """Multi-head conv attention: depthwise conv (k3, stride 1 or 2) + LN on q/k/v, 1x1 projections,
    masked scaled-dot-product attention (global, or local as a banded mask when window_size > 0)."""

    def __init__(self, channels: int, n_head: int, stride: int = 1, window_size: int = -1,
                 attn_pdrop: float = 0.0, proj_pdrop: float = 0.0):
        super().__init__()
        if channels % n_head != 0:
            raise ValueError(f"MaskedMHCA: channels={channels} must be divisible by n_head={n_head}")
        if stride not in (1, 2):
            raise ValueError(f"MaskedMHCA: stride must be 1 or 2, got {stride}")
        self.n_head = n_head
        self.window_size = window_size
        self.attn_pdrop = attn_pdrop

        def dw_conv() -> MaskedConvModule:
            return MaskedConvModule(channels, channels, 3, stride=stride, groups=channels, bias=False)

        self.query_conv, self.key_conv, self.value_conv = dw_conv(), dw_conv(), dw_conv()
        # Transformer-internal LayerNorms keep nn.LayerNorm's default eps (1e-5) as the reference does.
        self.query_norm = ChannelLayerNorm(channels)
        self.key_norm = ChannelLayerNorm(channels)
        self.value_norm = ChannelLayerNorm(channels)
        self.query = nn.Conv1d(channels, channels, 1)
        self.key = nn.Conv1d(channels, channels, 1)
        self.value = nn.Conv1d(channels, channels, 1)
        self.proj = nn.Conv1d(channels, channels, 1)
        self.proj_drop = nn.Dropout(proj_pdrop)
        for conv in (self.query, self.key, self.value, self.proj):
            init_conv_(conv)

    def _attn_mask(self, q_len: int, kv_mask: Tensor) -> Tensor:
        """(B, 1, Tq, Tk) or (B, 1, 1, Tk) bool mask, True = may attend."""
        allowed = kv_mask[:, None, None, :]
        if self.window_size > 0:
            half = self.window_size // 2
            pos = torch.arange(q_len, device=kv_mask.device)
            band = (pos[:, None] - pos[None, :]).abs() <= half
            allowed = allowed & band
        # A query row with no allowed key (padding far from any valid key) would give NaN; let it
        # attend everywhere instead -- its output is zeroed by the query mask anyway.
        return allowed | ~allowed.any(dim=-1, keepdim=True)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        B, C, _ = x.shape
        q, q_mask = self.query_conv(x, mask)
        k, kv_mask = self.key_conv(x, mask)
        v, _ = self.value_conv(x, mask)
        q = self.query(self.query_norm(q))
        k = self.key(self.key_norm(k))
        v = self.value(self.value_norm(v))

        def heads(t: Tensor) -> Tensor:  # (B, C, T) -> (B, nh, T, hd)
            return t.view(B, self.n_head, C // self.n_head, -1).transpose(2, 3)

        out = F.scaled_dot_product_attention(
            heads(q), heads(k), heads(v), attn_mask=self._attn_mask(q.shape[-1], kv_mask),
            dropout_p=self.attn_pdrop if self.training else 0.0)
        out = out.transpose(2, 3).reshape(B, C, -1)
        return apply_mask(self.proj_drop(self.proj(out)), q_mask), q_mask


class TransformerBlock(nn.Module):
    """Pre-LN transformer block on (B, C, T); stride 2 halves T (max-pool on the skip path)."""

    def __init__(self, channels: int, n_head: int, stride: int = 1, window_size: int = -1,
                 mlp_ratio: int = 4, path_pdrop: float = 0.0, attn_pdrop: float = 0.0, proj_pdrop: float = 0.0):
        super().__init__()
        self.ln1 = ChannelLayerNorm(channels)
        self.ln2 = ChannelLayerNorm(channels)
        self.attn = MaskedMHCA(channels, n_head, stride=stride, window_size=window_size,
                               attn_pdrop=attn_pdrop, proj_pdrop=proj_pdrop)
        self.pool_skip = nn.MaxPool1d(3, stride=2, padding=1) if stride > 1 else nn.Identity()
        hidden = mlp_ratio * channels
        self.mlp = nn.Sequential(
            nn.Conv1d(channels, hidden, 1), nn.GELU(), nn.Dropout(proj_pdrop),
            nn.Conv1d(hidden, channels, 1), nn.Dropout(proj_pdrop),
        )
        for m in self.mlp:
            if isinstance(m, nn.Conv1d):
                init_conv_(m)
        self.drop_path_attn = AffineDropPath(channels, path_pdrop)
        self.drop_path_mlp = AffineDropPath(channels, path_pdrop)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        out, out_mask = self.attn(self.ln1(x), mask)
        out = apply_mask(self.pool_skip(x), out_mask) + self.drop_path_attn(out)
        out = out + self.drop_path_mlp(apply_mask(self.mlp(self.ln2(out)), out_mask))
        return out, out_mask
