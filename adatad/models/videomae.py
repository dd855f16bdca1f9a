"""VideoMAE ViT encoder with optional adapters, and loading of real VideoMAE checkpoints.

The encoder runs one 16-frame chunk per batch item; adapters see how many chunks form one video
so that their temporal conv can cross chunk boundaries (docs/recipe.md §4 and §5). One class builds
the five backbones of OpenTAD's AdaTAD zoo (VideoMAE-S/B/L/H, VideoMAEv2-g; `VIDEOMAE_VARIANTS`).
Checkpoints come from a local file in the original layout (MCG-NJU VideoMAE, OpenGVLab VideoMAEv2)
or the mmaction2 layout (also OpenTAD's converted `*_my.pth`); all are converted to this module's
key names by a plain function (`adatad.models.videomae_keys`), and every file is read and checked
through `adatad.models.weights`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from adatad.models.adapter import Grid, build_adapter
from adatad.models.ladder import LadderNetwork
from adatad.models.videomae_keys import (
    convert_videomae_state_dict,
    describe_vit,
    unwrap_state_dict,
    videomae_layout,
)
from adatad.models.weights import (
    MISSING,
    WeightsError,
    cast_like,
    describe_misfit,
    key_listing,
    read_torch_file,
    shapes_of,
)

# The sizes of OpenTAD's AdaTAD zoo (docs/recipe.md §4 "Backbones"); anything not named keeps the
# constructor's default (patch 16, MLP 4 x embed_dim). VideoMAEv2-g's MLP is 48/11 x 1408 = 6144,
# given as a whole number so that no float ratio has to round to it.
VIDEOMAE_VARIANTS: dict[str, dict[str, int]] = {
    "S": {"embed_dim": 384, "depth": 12, "num_heads": 6},
    "B": {"embed_dim": 768, "depth": 12, "num_heads": 12},
    "L": {"embed_dim": 1024, "depth": 24, "num_heads": 16},
    "H": {"embed_dim": 1280, "depth": 32, "num_heads": 16},
    "g": {"embed_dim": 1408, "depth": 40, "num_heads": 16, "patch_size": 14, "mlp_hidden_dim": 6144},
}


def sinusoid_table(num_positions: int, dim: int) -> Tensor:
    """VideoMAE's fixed 1-D table over the flattened (t, h, w) token index, shape (num_positions, dim).

    angle(p, j) = p / 10000^(2*floor(j/2)/dim); sin on even dims, cos on odd dims. Computed in
    float64 and cast to float32 like the reference. (timm's sincos helpers build 2-D tables with a
    different layout, so this one is written here.)
    """
    j = torch.arange(dim, dtype=torch.float64)
    inv_freq = torch.pow(10000.0, -(j - j % 2) / dim)
    angles = torch.arange(num_positions, dtype=torch.float64)[:, None] * inv_freq[None, :]
    angles[:, 0::2] = angles[:, 0::2].sin()
    angles[:, 1::2] = angles[:, 1::2].cos()
    return angles.float()


def resize_pos_table(table: Tensor, src_grid: Grid, dst_hw: tuple[int, int]) -> Tensor:
    """Bicubic resize of every temporal slice of a (t*h*w, C) table to (t*H'*W', C)."""
    t, h, w = src_grid
    if (h, w) == tuple(dst_hw):
        return table
    c = table.shape[-1]
    slices = table.reshape(t, h, w, c).permute(0, 3, 1, 2)
    slices = F.interpolate(slices, size=tuple(dst_hw), mode="bicubic", align_corners=False)
    return slices.permute(0, 2, 3, 1).reshape(-1, c)


class PatchEmbed3d(nn.Module):
    """Tubelet embedding: Conv3d with kernel = stride = (tubelet, p, p); tokens in (t, h, w) order.

    A side that is not a multiple of p is floored, its last pixels unused (160 px at patch 14 gives
    11 x 11 tokens from 154 px), as OpenTAD's unpadded PatchEmbed does.
    """

    def __init__(self, embed_dim: int, patch_size: int, tubelet_size: int, in_chans: int = 3) -> None:
        super().__init__()
        size = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=size, stride=size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class VideoMAEAttention(nn.Module):
    """Self-attention with VideoMAE's bias layout.

    timm's Attention has a single optional qkv bias; VideoMAE stores learnable `q_bias` and `v_bias`
    while k's bias is fixed at zero, so this small module keeps that layout (and its key names).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        n, length, dim = x.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias)
        q, k, v = qkv.reshape(n, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(n, length, dim))


class Block(nn.Module):
    """Pre-norm ViT block, then the adapter (sequential, after the FFN residual); a block without
    an adapter is the plain frozen ViT block, as in OpenTAD."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden_dim: int, drop_path: float,
                 adapter: nn.Module | None = None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = VideoMAEAttention(dim, num_heads)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_hidden_dim, act_layer=nn.GELU)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.adapter = adapter

    def forward(self, x: Tensor, grid: Grid, chunks_per_video: int = 1) -> Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        if self.adapter is not None:
            x = self.adapter(x, grid, chunks_per_video)
        return x


class VideoMAEBackbone(nn.Module):
    """VideoMAE ViT encoder (no final norm: features are the raw last-block tokens).

    `mlp_hidden_dim` (None = int(embed_dim * mlp_ratio)) sets the MLP width directly, for sizes
    whose width is not a round multiple (VideoMAEv2-g: 6144 = 48/11 x 1408). `adapter_layers`
    (None = every block) lists the blocks that get an adapter (VideoMAEv2-g at 224 px: 20..39).
    `adapter_type="ladder"` puts those adapters beside the ViT instead (`ladders.adapters.N` reads
    block `adapter_layers[N]`; OpenTAD's side-tuning, `adatad.models.ladder`): the blocks keep no
    adapter, run without autograd, and the features are the ladder's sum.
    """

    def __init__(
        self,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        mlp_hidden_dim: int | None = None,
        patch_size: int = 16,
        tubelet_size: int = 2,
        chunk_frames: int = 16,
        pretrain_img_size: int = 224,
        drop_path_rate: float = 0.1,
        adapter_type: str | None = "tia",
        adapter_layers: Sequence[int] | None = None,
        adapter_mlp_ratio: float = 0.25,
    ) -> None:
        super().__init__()
        if chunk_frames % tubelet_size:
            raise ValueError(f"chunk_frames {chunk_frames} is not a multiple of tubelet_size {tubelet_size}")
        if pretrain_img_size < patch_size:
            raise ValueError(f"pretrain_img_size {pretrain_img_size} is smaller than patch_size {patch_size}")
        hidden = int(embed_dim * mlp_ratio) if mlp_hidden_dim is None else mlp_hidden_dim
        if hidden < 1:
            raise ValueError(f"MLP hidden size {hidden} < 1 (mlp_ratio {mlp_ratio}, mlp_hidden_dim {mlp_hidden_dim})")
        self.embed_dim, self.depth, self.mlp_hidden_dim = embed_dim, depth, hidden
        self.patch_size, self.tubelet_size, self.chunk_frames = patch_size, tubelet_size, chunk_frames
        side = pretrain_img_size // patch_size
        self.pretrain_grid: Grid = (chunk_frames // tubelet_size, side, side)
        self.patch_embed = PatchEmbed3d(embed_dim, patch_size, tubelet_size)
        # Not learnable and not saved: rebuilt from the formula, resized per input size on demand.
        self.register_buffer("pos_table", sinusoid_table(self.pretrain_grid[0] * side * side, embed_dim),
                             persistent=False)
        self._pos_cache: dict[tuple, Tensor] = {}

        layers = range(depth) if adapter_layers is None else adapter_layers
        bad = [i for i in layers if not 0 <= i < depth]
        if bad:
            raise ValueError(f"adapter_layers {bad} out of range for depth {depth}")
        ladder = adapter_type == "ladder"
        if ladder and len(set(layers)) != len(list(layers)):
            raise ValueError(f"adapter_layers {list(layers)} name a block twice")
        with_adapter = set(layers) if adapter_type and not ladder else set()
        self.adapter_layers = sorted(with_adapter)
        self.ladder_layers: list[int] = sorted(layers) if ladder else []
        rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()  # also when built on meta
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, hidden, rates[i],
                  build_adapter(adapter_type, embed_dim, adapter_mlp_ratio) if i in with_adapter else None)
            for i in range(depth)
        )
        # Registered after the blocks: the state dict lists the blocks first, as OpenTAD's does.
        self.ladders = LadderNetwork(embed_dim, len(self.ladder_layers), adapter_mlp_ratio) if ladder else None
        self._init_vit_weights()

    def _init_vit_weights(self) -> None:
        """Reference init for a ViT trained from scratch; adapters keep their own (identity) init."""
        for name, m in self.named_modules():
            if "adapter" in name:
                continue
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def pretrain_table(self) -> Tensor:
        """The (t*h*w, C) sinusoid table of the pretraining grid, on the CPU, from the formula.

        What OpenTAD saves as `pos_embed`; computed here so a model built on the meta device (for
        key shapes only) still yields it without materialising the ViT.
        """
        t, h, w = self.pretrain_grid
        with torch.device("cpu"):
            return sinusoid_table(t * h * w, self.embed_dim)

    def grid_for(self, height: int, width: int) -> Grid:
        """Token grid (t, h, w) of one chunk at this spatial size (sides floored to whole patches)."""
        if min(height, width) < self.patch_size:
            raise ValueError(f"frames of {height}x{width} px are smaller than one {self.patch_size}-px patch")
        return (self.pretrain_grid[0], height // self.patch_size, width // self.patch_size)

    def describe(self) -> str:
        """One line naming the architecture, for errors about weights that do not fit it."""
        return (f"{self.embed_dim}-d, {self.depth} blocks, patch {self.patch_size}, "
                f"tubelet {self.tubelet_size}, MLP {self.mlp_hidden_dim}")

    def pos_embed(self, grid: Grid) -> Tensor:
        """(1, t*h*w, C) sinusoid table resized to `grid`, cached per size and device."""
        key = (grid, self.pos_table.device, self.pos_table.dtype)
        if key not in self._pos_cache:
            # A normal tensor even when first built under inference_mode, so training can reuse it.
            with torch.inference_mode(False), torch.no_grad():
                table = self.pos_table.clone()
                self._pos_cache[key] = resize_pos_table(table, self.pretrain_grid, grid[1:])[None]
        return self._pos_cache[key]

    def forward_tokens(self, x: Tensor, chunks_per_video: int = 1, use_checkpoint: bool = False) -> Tensor:
        """x: (N, 3, chunk_frames, H, W) normalised chunks, a video's chunks contiguous -> (N, L, C).

        With `use_checkpoint`, every block whose input needs grad is recomputed in backward; block 0
        sees the frozen patch embedding's output (no grad) and therefore is not checkpointed.
        """
        if x.ndim != 5 or x.shape[1] != 3 or x.shape[2] != self.chunk_frames:
            raise ValueError(f"expected chunks (N, 3, {self.chunk_frames}, H, W), got {tuple(x.shape)}")
        if x.shape[0] % chunks_per_video:
            raise ValueError(f"{x.shape[0]} chunks are not a multiple of chunks_per_video={chunks_per_video}")
        grid = self.grid_for(x.shape[3], x.shape[4])
        x = self.patch_embed(x)
        # The table stays float32: under AMP the residual stream is then float32 from here on, as in
        # OpenTAD (its buffer is added without a cast), while the blocks' matmuls still run in fp16.
        x = x + self.pos_embed(grid)
        if self.ladders is not None:
            return self._forward_ladder(x, grid, chunks_per_video, use_checkpoint)
        for block in self.blocks:
            if use_checkpoint and x.requires_grad:
                x = checkpoint(block, x, grid, chunks_per_video, use_reentrant=False)
            else:
                x = block(x, grid, chunks_per_video)
        return x

    def _forward_ladder(self, x: Tensor, grid: Grid, chunks_per_video: int, use_checkpoint: bool) -> Tensor:
        """The frozen ViT without autograd (OpenTAD's `forward_vit` is `torch.no_grad`), keeping the
        listed blocks' outputs, then the side network. Blocks after the last listed one are not run:
        their output is never used (OpenTAD runs and discards them)."""
        wanted = set(self.ladder_layers)
        feats = []
        with torch.no_grad():
            for index, block in enumerate(self.blocks[: self.ladder_layers[-1] + 1]):
                x = block(x, grid, chunks_per_video)
                if index in wanted:
                    feats.append(x)
        return self.ladders(feats, grid, chunks_per_video, use_checkpoint=use_checkpoint)

    def forward(self, x: Tensor, chunks_per_video: int = 1) -> Tensor:
        return self.forward_tokens(x, chunks_per_video)


def build_videomae(variant: str = "S", **kwargs) -> VideoMAEBackbone:
    """VideoMAEBackbone for a named size ("S", "B", "L", "H", "g"); kwargs override anything else."""
    if variant not in VIDEOMAE_VARIANTS:
        raise ValueError(f"unknown VideoMAE variant {variant!r}; expected one of {sorted(VIDEOMAE_VARIANTS)}")
    return VideoMAEBackbone(**{**VIDEOMAE_VARIANTS[variant], **kwargs})


# ----------------------------------------------------------------------------------------------
# Checkpoints



@dataclass
class LoadReport:
    missing: list[str]        # model keys the file did not provide (adapters are expected here)
    unexpected: list[str]     # converted file keys the model has no place for
    dropped: list[str] = field(default_factory=list)  # decoder/head/pos_embed keys discarded on purpose
    layout: str = ""          # the file's key layout and wrapper (`videomae_layout`)


def load_videomae_checkpoint(model: VideoMAEBackbone, path: str | os.PathLike,
                             strict_backbone: bool = True) -> LoadReport:
    """Load VideoMAE weights from a local file into `model` (adapters keep their init).

    Raises WeightsError for a missing path or a file that is not a checkpoint, has no matching
    tensors, has shape mismatches, or (strict_backbone) lacks backbone keys / has keys this
    architecture does not know. Never leaves the backbone silently random.
    """
    path = os.fspath(path)
    try:
        obj = read_torch_file(path)
    except WeightsError as exc:
        if exc.reason == MISSING:
            raise WeightsError(f"VideoMAE checkpoint not found: {path}", MISSING) from None
        raise WeightsError(f"{path} is not a loadable PyTorch checkpoint: {exc.reason}") from None
    state = unwrap_state_dict(obj)
    if not isinstance(state, Mapping) or not any(isinstance(v, Tensor) for v in state.values()):
        raise WeightsError(f"{path} holds no state dict of tensors (found {type(state).__name__})")
    layout = videomae_layout(obj)
    state = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    converted, dropped = convert_videomae_state_dict(state)

    own = shapes_of(model)
    missing = [k for k in own if k not in converted]
    unexpected = [k for k in converted if k not in own]
    shared = {k: own[k] for k in converted if k in own}  # what gets loaded, in either mode
    # Which ViT the file holds against which one the config builds (e.g. an H file for the g).
    versus = f" (file: {describe_vit(converted)}, {layout}; model: {model.describe()})"
    misfit = describe_misfit(shared, {k: converted[k] for k in shared})  # shapes and dtypes only
    if misfit:
        raise WeightsError(f"{path} does not fit this VideoMAE architecture: {misfit}{versus}")
    backbone_keys = [k for k in own if "adapter" not in k]
    if not any(k in converted for k in backbone_keys):
        raise WeightsError(f"{path} contains no VideoMAE backbone weights (keys e.g. {key_listing(list(state))})")
    if strict_backbone:
        # Every backbone key is required; adapters are not (a VideoMAE file has none), but those the
        # file has must fit like any other key.
        required = {k: v for k, v in own.items() if "adapter" not in k or k in converted}
        problem = describe_misfit(required, converted)
        if problem:
            raise WeightsError(f"{path} does not fit this VideoMAE architecture: {problem}{versus}")
    model.load_state_dict(cast_like(shared, converted), strict=False)
    return LoadReport(missing=missing, unexpected=unexpected, dropped=dropped, layout=layout)
