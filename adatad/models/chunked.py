"""Run the VideoMAE backbone over a long window as 16-frame chunks and pool to a feature sequence.

A 768-frame window becomes 48 chunks; the ViT sees each chunk as one batch item while the adapters
mix time across all chunks of a video. The tubelet features (one per 2 frames) are resized to one per
position by linear interpolation (align_corners=False), OpenTAD's ``Interpolate``: with
``frames_per_position = s`` a window of N positions has N * s frames and N * s / 2 tubelets, so
s = 1 upsamples, s = 2 is the identity, s = 4 averages tubelet pairs. docs/recipe.md §2 (chunking,
pooling) and §4 (freezing).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adatad.models.videomae import VideoMAEBackbone


class ChunkedEncoder(nn.Module):
    """(B, 3, T, H, W) normalised frames -> (B, C, T / frames_per_position) float32 features, one per
    position; T = n_chunks * chunk_frames."""

    def __init__(self, backbone: VideoMAEBackbone, use_checkpoint: bool = True, freeze_backbone: bool = True,
                 frames_per_position: int = 1) -> None:
        super().__init__()
        if frames_per_position < 1:
            raise ValueError(f"frames_per_position must be >= 1, got {frames_per_position}")
        self.backbone = backbone
        self.frames_per_position = frames_per_position
        self.use_checkpoint = use_checkpoint
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            for name, param in backbone.named_parameters():
                if "adapter" not in name:
                    param.requires_grad_(False)
        self.train(True)

    @property
    def out_channels(self) -> int:
        return self.backbone.embed_dim

    def frozen_modules(self) -> list[nn.Module]:
        """patch_embed and every block child except its adapter and drop-path modules; with a side
        network (ladder) the drop-path modules too, as OpenTAD's ladder puts whole blocks in eval mode."""
        if not self.freeze_backbone:
            return []
        ladder = self.backbone.ladders is not None
        modules: list[nn.Module] = [self.backbone.patch_embed]
        for block in self.backbone.blocks:
            modules += [m for name, m in block.named_children()
                        if name != "adapter" and (ladder or not name.startswith("drop_path"))]
        return modules

    def train(self, mode: bool = True) -> ChunkedEncoder:
        """Frozen parts stay in eval mode; adapters and DropPath follow `mode` (as the reference does)."""
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        b, c, t, h, w = x.shape
        size, s = self.backbone.chunk_frames, self.frames_per_position
        if c != 3 or t % math.lcm(size, s):  # whole chunks, whole positions
            raise ValueError(f"expected frames (B, 3, T, H, W) with T a multiple of {math.lcm(size, s)}, "
                             f"got {tuple(x.shape)}")
        n = t // size
        # (B, 3, n*16, H, W) -> (B*n, 3, 16, H, W): chunk k of video b becomes item b*n + k.
        chunks = x.reshape(b, c, n, size, h, w).transpose(1, 2).reshape(b * n, c, size, h, w)
        use_cp = self.use_checkpoint and torch.is_grad_enabled()
        tokens = self.backbone.forward_tokens(chunks, chunks_per_video=n, use_checkpoint=use_cp)
        steps = self.backbone.pretrain_grid[0]  # temporal tokens per chunk (8)
        pooled = tokens.reshape(b * n, steps, -1, tokens.shape[-1]).mean(2)  # mean over h', w'
        # Cast before the interpolation (the reference casts after): same values, fp32 interpolation.
        feats = pooled.reshape(b, n * steps, -1).transpose(1, 2).float()  # (B, C, T/2)
        # One feature per position; called even when the size already fits (s = 2), as the reference does.
        return F.interpolate(feats, size=t // s, mode="linear", align_corners=False)
