"""Adapters inserted after each ViT block (docs/recipe.md §5).

The temporal-informative adapter (TIA) mixes information along time across *all* chunks of a
video, which a 16-frame ViT chunk cannot do on its own. Both adapters start as an exact identity
(zero up-projection), so a fresh model reproduces the pre-trained VideoMAE features.
"""

from __future__ import annotations

import math

import torch
from timm.layers import trunc_normal_
from torch import Tensor, nn

Grid = tuple[int, int, int]  # (t, h, w) tokens of one chunk


class TemporalAdapter(nn.Module):
    """TIA: x + gamma * up(z + PW(DW(z))), z = GELU(down(x)), DW/PW convs along the video's time.

    Parameter names (down_proj, dwconv, conv, up_proj, gamma) follow the reference so that trained
    AdaTAD weights map one to one.
    """

    def __init__(self, embed_dim: int, mlp_ratio: float = 0.25, kernel_size: int = 3) -> None:
        super().__init__()
        hidden = int(embed_dim * mlp_ratio)
        self.hidden_dim = hidden
        self.down_proj = nn.Linear(embed_dim, hidden)
        self.act = nn.GELU()
        self.dwconv = nn.Conv1d(hidden, hidden, kernel_size, padding=kernel_size // 2, groups=hidden)
        self.conv = nn.Conv1d(hidden, hidden, 1)
        self.up_proj = nn.Linear(hidden, embed_dim)
        self.gamma = nn.Parameter(torch.ones(1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        trunc_normal_(self.down_proj.weight, std=0.02)
        nn.init.zeros_(self.down_proj.bias)
        nn.init.normal_(self.dwconv.weight, mean=0.0, std=math.sqrt(2.0 / self.dwconv.kernel_size[0]))
        nn.init.zeros_(self.dwconv.bias)
        nn.init.normal_(self.conv.weight, mean=0.0, std=math.sqrt(2.0 / self.hidden_dim))
        nn.init.zeros_(self.conv.bias)
        nn.init.zeros_(self.up_proj.weight)  # exact identity at the start of training
        nn.init.zeros_(self.up_proj.bias)
        nn.init.ones_(self.gamma)

    def forward(self, x: Tensor, grid: Grid, chunks_per_video: int) -> Tensor:
        """x: (videos*chunks, t*h*w, C) tokens in (t, h, w) order, chunks of a video contiguous."""
        return x + self.branch(x, grid, chunks_per_video)

    def branch(self, x: Tensor, grid: Grid, chunks_per_video: int) -> Tensor:
        """gamma * up(z + PW(DW(z))): what the adapter adds to its input (the side network's whole output)."""
        t, h, w = grid
        n, length, _ = x.shape
        if length != t * h * w or n % chunks_per_video:
            raise ValueError(
                f"adapter input {tuple(x.shape)} does not match grid {grid} x {chunks_per_video} chunks/video"
            )
        z = self.act(self.down_proj(x))
        videos, c = n // chunks_per_video, z.shape[-1]
        steps = chunks_per_video * t  # the time axis spans every chunk of the video
        seq = z.reshape(videos, steps, h, w, c).permute(0, 2, 3, 4, 1).reshape(videos * h * w, c, steps)
        d = self.conv(self.dwconv(seq))
        d = d.reshape(videos, h, w, c, steps).permute(0, 4, 1, 2, 3).reshape(n, length, c)
        return self.gamma * self.up_proj(z + d)


class PlainAdapter(nn.Module):
    """Ablation without temporal convs: x + gamma * up(GELU(down(x)))."""

    def __init__(self, embed_dim: int, mlp_ratio: float = 0.25) -> None:
        super().__init__()
        hidden = int(embed_dim * mlp_ratio)
        self.down_proj = nn.Linear(embed_dim, hidden)
        self.act = nn.GELU()
        self.up_proj = nn.Linear(hidden, embed_dim)
        self.gamma = nn.Parameter(torch.ones(1))
        trunc_normal_(self.down_proj.weight, std=0.02)
        nn.init.zeros_(self.down_proj.bias)
        nn.init.zeros_(self.up_proj.weight)
        nn.init.zeros_(self.up_proj.bias)

    def forward(self, x: Tensor, grid: Grid, chunks_per_video: int) -> Tensor:
        # grid / chunks_per_video are unused: same call signature as TemporalAdapter.
        return x + self.gamma * self.up_proj(self.act(self.down_proj(x)))


ADAPTER_TYPES: dict[str, type[nn.Module]] = {"tia": TemporalAdapter, "plain": PlainAdapter}


def build_adapter(adapter_type: str, embed_dim: int, mlp_ratio: float = 0.25) -> nn.Module:
    """Adapter by name ("tia" or "plain")."""
    if adapter_type not in ADAPTER_TYPES:
        raise ValueError(f"unknown adapter_type {adapter_type!r}; expected one of {sorted(ADAPTER_TYPES)}")
    return ADAPTER_TYPES[adapter_type](embed_dim, mlp_ratio)
