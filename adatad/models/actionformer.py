"""ActionFormer detector part of AdaTAD: projection (conv embedding + transformer pyramid), identity
FPN neck with per-level LayerNorm, and shared classification / regression heads.

Recipe: docs/recipe.md section 6 (OpenTAD `Conv1DTransformerProj`, `FPNIdentity`,
`ActionFormerHead`). Labels, losses and decoding live in assigner.py, losses.py and postprocess.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adatad.models.layers_1d import (
    ChannelLayerNorm,
    MaskedConvModule,
    Scale,
    TransformerBlock,
    init_conv_,
)
from adatad.models.position_embedding import position_table_for, sinusoid_position_table

# Regression range of each pyramid level, in grid units of that level's input positions.
DEFAULT_REGRESSION_RANGES: tuple[tuple[float, float], ...] = (
    (0, 4), (4, 8), (8, 16), (16, 32), (32, 64), (64, 10000),
)


class Conv1DTransformerProj(nn.Module):
    """arch = (#embedding convs, #stem blocks at stride 1, #branch blocks each halving T).

    Returns one feature map per level: 1 + arch[2] levels (768, 384, ..., 24 for T=768).
    use_abs_pe adds a fixed sinusoid table of `max_seq_len` positions after the embedding convs
    (`pos_embed`, a non-persistent buffer: OpenTAD's checkpoints do not hold it either);
    input_pdrop drops whole input channels (Dropout1d) while training.
    """

    def __init__(self, in_channels: int, out_channels: int = 512, arch: Sequence[int] = (2, 2, 5),
                 n_head: int = 4, mha_win_size: int | Sequence[int] = -1, path_pdrop: float = 0.1,
                 proj_pdrop: float = 0.0, kernel_size: int = 3, use_abs_pe: bool = False,
                 max_seq_len: int = 768, input_pdrop: float = 0.0):
        super().__init__()
        if len(arch) != 3:
            raise ValueError(f"arch must have 3 entries (convs, stem, branch), got {tuple(arch)}")
        self.use_abs_pe = use_abs_pe
        self.max_seq_len = max_seq_len
        self.input_drop = nn.Dropout1d(input_pdrop) if input_pdrop > 0 else None
        if use_abs_pe:
            # Built on the CPU (the float32 division as OpenTAD's), then moved to the device being built on.
            table = sinusoid_position_table(max_seq_len, out_channels)
            self.register_buffer("pos_embed", table.to(torch.empty(0).device), persistent=False)
        n_levels = 1 + arch[2]
        win = [mha_win_size] * n_levels if isinstance(mha_win_size, int) else list(mha_win_size)
        if len(win) != n_levels:
            raise ValueError(f"mha_win_size needs {n_levels} entries for arch {tuple(arch)}, got {len(win)}")
        self.embed = nn.ModuleList(
            MaskedConvModule(in_channels if i == 0 else out_channels, out_channels, kernel_size, norm=True, act=True)
            for i in range(arch[0]))
        self.stem = nn.ModuleList(
            TransformerBlock(out_channels, n_head, stride=1, window_size=win[0], path_pdrop=path_pdrop,
                             proj_pdrop=proj_pdrop)
            for _ in range(arch[1]))
        self.branch = nn.ModuleList(
            TransformerBlock(out_channels, n_head, stride=2, window_size=win[1 + i], path_pdrop=path_pdrop,
                             proj_pdrop=proj_pdrop)
            for i in range(arch[2]))

    def forward(self, x: Tensor, mask: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        # The input is NOT zeroed at padded positions, as in OpenTAD: its detector feeds the
        # projection the backbone features of the edge-replicated padding frames and each masked
        # conv masks only its output. So the padding next to the boundary reaches the last valid
        # positions through the k=3 embedding convs (and from there, through global attention, every
        # output of the window) -- which OpenTAD's trained weights expect. Padded positions
        # themselves are zero after the first conv and masked out of attention as keys.
        if self.input_drop is not None:
            x = self.input_drop(x)
        for layer in self.embed:
            x, mask = layer(x, mask)
        if self.use_abs_pe:  # after the embedding convs, zero at padding (OpenTAD)
            x = x + position_table_for(self.pos_embed, x.shape[-1], self.training) * mask[:, None].to(x.dtype)
        for block in self.stem:
            x, mask = block(x, mask)
        feats, masks = [x], [mask]
        for block in self.branch:
            x, mask = block(x, mask)
            feats.append(x)
            masks.append(mask)
        return feats, masks


class FPNIdentity(nn.Module):
    """Neck without top-down fusion: one LayerNorm(eps 1e-6) per level."""

    def __init__(self, channels: int, num_levels: int):
        super().__init__()
        self.norms = nn.ModuleList(ChannelLayerNorm(channels, eps=1e-6) for _ in range(num_levels))

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        return [norm(x) for norm, x in zip(self.norms, feats, strict=True)]


class ClsRegHeads(nn.Module):
    """Classification and regression towers shared over levels; a learnable Scale per level."""

    def __init__(self, in_channels: int, num_classes: int, num_levels: int, feat_channels: int = 512,
                 num_convs: int = 2, cls_prior_prob: float = 0.01):
        super().__init__()

        def tower() -> nn.ModuleList:
            return nn.ModuleList(
                MaskedConvModule(in_channels if i == 0 else feat_channels, feat_channels, 3, norm=True, act=True)
                for i in range(num_convs))

        self.cls_convs, self.reg_convs = tower(), tower()
        self.cls_head = nn.Conv1d(feat_channels, num_classes, 3, padding=1)
        self.reg_head = nn.Conv1d(feat_channels, 2, 3, padding=1)
        init_conv_(self.cls_head)
        init_conv_(self.reg_head)
        if cls_prior_prob > 0:  # start every point at p(action) = cls_prior_prob: stable early focal loss
            nn.init.constant_(self.cls_head.bias, -math.log((1 - cls_prior_prob) / cls_prior_prob))
        self.scales = nn.ModuleList(Scale(1.0) for _ in range(num_levels))

    def forward(self, feats: list[Tensor], masks: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        cls_out, reg_out = [], []
        for level, (x, mask) in enumerate(zip(feats, masks, strict=True)):
            c, r = x, x
            for conv in self.cls_convs:
                c, _ = conv(c, mask)
            for conv in self.reg_convs:
                r, _ = conv(r, mask)
            cls_out.append(self.cls_head(c).transpose(1, 2))  # (B, T_l, K)
            reg_out.append(torch.relu(self.scales[level](self.reg_head(r))).transpose(1, 2))  # (B, T_l, 2)
        return cls_out, reg_out


class ActionFormerHead(nn.Module):
    """Everything after the backbone: features (B, C, T) + mask -> per-level logits and offsets.

    Outputs per level l (stride 2**l): cls logits (B, T_l, K), regression offsets (B, T_l, 2) >= 0 in
    stride units (distance to start, distance to end), and the level mask (B, T_l) bool; with
    `pad_to` T is that length and the added positions are masked out.
    All learnt state is in parameters; the only buffer is the optional position table, a constant
    rebuilt from its formula (not saved), so EMA copies and state dicts are complete.
    """

    def __init__(self, in_channels: int, num_classes: int, embed_dim: int = 512, arch: Sequence[int] = (2, 2, 5),
                 n_head: int = 4, mha_win_size: int | Sequence[int] = -1, max_seq_len: int = 768,
                 path_pdrop: float = 0.1, feat_channels: int = 512, head_num_convs: int = 2,
                 cls_prior_prob: float = 0.01,
                 regression_ranges: Sequence[tuple[float, float]] | None = None,
                 use_abs_pe: bool = False, input_pdrop: float = 0.0, proj_pdrop: float = 0.0,
                 pad_to: int | None = None):
        super().__init__()
        num_levels = 1 + arch[2]
        self.num_classes = num_classes
        self.max_seq_len = max_seq_len  # the position table's length (only used with use_abs_pe)
        # OpenTAD's `ActionFormer.pad_data`: shorter features are zero-padded to this length, mask
        # False, before the projection (Ego4D: 1,800 positions -> 2,048); None: never.
        self.pad_to = pad_to
        self.strides: list[int] = [2**i for i in range(num_levels)]
        ranges = DEFAULT_REGRESSION_RANGES if regression_ranges is None else regression_ranges
        if len(ranges) != num_levels:
            raise ValueError(f"regression_ranges needs {num_levels} entries for arch {tuple(arch)}, got {len(ranges)}")
        self.regression_ranges: list[tuple[float, float]] = [(float(lo), float(hi)) for lo, hi in ranges]
        self.projection = Conv1DTransformerProj(in_channels, embed_dim, arch, n_head=n_head,
                                                mha_win_size=mha_win_size, path_pdrop=path_pdrop,
                                                proj_pdrop=proj_pdrop, use_abs_pe=use_abs_pe,
                                                max_seq_len=max_seq_len, input_pdrop=input_pdrop)
        self.neck = FPNIdentity(embed_dim, num_levels)
        self.heads = ClsRegHeads(embed_dim, num_classes, num_levels, feat_channels=feat_channels,
                                 num_convs=head_num_convs, cls_prior_prob=cls_prior_prob)

    def forward(self, feats: Tensor, masks: Tensor) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        if feats.dim() != 3 or masks.shape != (feats.shape[0], feats.shape[2]):
            raise ValueError(f"ActionFormerHead expects feats (B, C, T) and masks (B, T); "
                             f"got {tuple(feats.shape)} and {tuple(masks.shape)}")
        masks = masks.bool()
        extra = (self.pad_to or 0) - feats.shape[-1]
        if extra > 0:  # zeros, not the backbone's features of repeated frames: those end at T
            feats = F.pad(feats, (0, extra))
            masks = F.pad(masks, (0, extra), value=False)
        level_feats, level_masks = self.projection(feats, masks)
        level_feats = self.neck(level_feats)
        cls_logits, reg_offsets = self.heads(level_feats, level_masks)
        return cls_logits, reg_offsets, level_masks
