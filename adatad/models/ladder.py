"""Side network of OpenTAD's AdaTAD† rows (`VisionTransformerLadder`, `opentad/models/backbones/vit_ladder.py`).

Why a side network: the adapters sit beside the frozen ViT instead of inside it, so the ViT runs
without autograd (no block is recomputed or back-propagated) and training holds only the block
outputs the adapters read. Each listed block's output feeds one adapter; the adapters' outputs are
summed onto the last listed block's output (docs/recipe.md, "OpenTAD model zoo (EPIC-Kitchens-100,
Ego4D-MQ, side-tuning)"). The adapter is the TIA's branch without its residual: the sum is the
residual, and a fresh network (zero up-projections) returns that last block's output exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from adatad.models.adapter import Grid, TemporalAdapter


class LadderAdapter(TemporalAdapter):
    """gamma * up(z + PW(DW(z))), z = GELU(down(x)): OpenTAD's ladder `Adapter` (same parameter names)."""

    def forward(self, x: Tensor, grid: Grid, chunks_per_video: int) -> Tensor:
        return self.branch(x, grid, chunks_per_video)


class LadderNetwork(nn.Module):
    """`adapters.N` for the N-th listed block; forward: feats[-1] + sum_N adapters[N](feats[N])."""

    def __init__(self, embed_dim: int, count: int, mlp_ratio: float = 0.25) -> None:
        super().__init__()
        if count < 1:
            raise ValueError(f"a ladder needs at least one adapter, got {count}")
        self.adapters = nn.ModuleList(LadderAdapter(embed_dim, mlp_ratio) for _ in range(count))

    def forward(self, feats: Sequence[Tensor], grid: Grid, chunks_per_video: int,
                use_checkpoint: bool = False) -> Tensor:
        """feats: the listed blocks' outputs (N, L, C), in block order, without autograd history.

        With `use_checkpoint` each adapter is recomputed in backward (OpenTAD's `with_cp`): only its
        input, which the list holds anyway, stays alive between forward and backward.
        """
        if len(feats) != len(self.adapters):
            raise ValueError(f"the ladder has {len(self.adapters)} adapters but got {len(feats)} block outputs")
        out = feats[-1]
        for adapter, feat in zip(self.adapters, feats, strict=True):
            if use_checkpoint:
                out = out + checkpoint(adapter, feat, grid, chunks_per_video, use_reentrant=False)
            else:
                out = out + adapter(feat, grid, chunks_per_video)
        return out
