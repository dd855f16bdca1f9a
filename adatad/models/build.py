"""Config -> model: the one place that reads `ModelConfig` and calls the model constructors."""

from __future__ import annotations

import contextlib

import torch

from adatad.config import Config
from adatad.models.actionformer import ActionFormerHead
from adatad.models.chunked import ChunkedEncoder
from adatad.models.detector import AdaTAD
from adatad.models.losses import DetectionLoss
from adatad.models.videomae import VideoMAEBackbone, load_videomae_checkpoint
from adatad.models.weights import load_weights


def build_model(cfg: Config, device: torch.device | str | None = None) -> AdaTAD:
    """AdaTAD for `cfg`; loads the configured VideoMAE checkpoint (never silently random).

    device="meta" builds every tensor without memory or values, for key and shape checks of the
    large backbones (VideoMAEv2-g: 1.1 B parameters); the VideoMAE file is then not read, as a meta
    tensor cannot hold its values. Other devices build there directly.
    """
    meta = device is not None and torch.device(device).type == "meta"
    with torch.device(device) if device is not None else contextlib.nullcontext():
        return _build(cfg, load_backbone=not meta)


def _build(cfg: Config, load_backbone: bool) -> AdaTAD:
    b, h = cfg.model.backbone, cfg.model.head
    backbone = VideoMAEBackbone(
        embed_dim=b.embed_dim,
        depth=b.depth,
        num_heads=b.num_heads,
        mlp_ratio=b.mlp_ratio,
        mlp_hidden_dim=b.mlp_hidden_dim,
        patch_size=b.patch_size,
        tubelet_size=b.tubelet_size,
        chunk_frames=b.chunk_frames,
        pretrain_img_size=b.pretrain_img_size,
        drop_path_rate=b.drop_path_rate,
        adapter_type=None if b.adapter_type == "none" else b.adapter_type,
        adapter_layers=b.adapter_layers,
        adapter_mlp_ratio=b.adapter_mlp_ratio,
    )
    if b.checkpoint and load_backbone:
        load_videomae_checkpoint(backbone, cfg.resolve_path(b.checkpoint))
    encoder = ChunkedEncoder(backbone, use_checkpoint=b.activation_checkpointing, freeze_backbone=True,
                             frames_per_position=cfg.data.frames_per_position)
    head = ActionFormerHead(
        in_channels=b.embed_dim,
        num_classes=h.num_classes,
        embed_dim=h.embed_dim,
        arch=h.arch,
        n_head=h.n_head,
        mha_win_size=h.mha_win_size,
        max_seq_len=position_table_length(cfg),
        path_pdrop=h.path_pdrop,
        feat_channels=h.feat_channels,
        head_num_convs=h.num_convs,
        cls_prior_prob=h.cls_prior_prob,
        regression_ranges=h.regression_ranges,
        use_abs_pe=h.use_abs_pe,
        input_pdrop=h.input_pdrop,
        proj_pdrop=h.proj_pdrop,
        pad_to=position_table_length(cfg),  # pads only when model.head.max_seq_len > data.window_size
    )
    criterion = DetectionLoss(
        num_classes=h.num_classes,
        strides=head.strides,
        regression_ranges=h.regression_ranges,
        center_sample_radius=h.center_sample_radius,
        focal_alpha=h.focal_alpha,
        focal_gamma=h.focal_gamma,
        init_loss_norm=h.init_loss_norm,
        loss_norm_momentum=h.loss_norm_momentum,
        label_smoothing=h.label_smoothing,
        loss_weight=h.loss_weight,
        filter_similar_gt=h.filter_similar_gt,
    )
    return AdaTAD(encoder, head, criterion)


def position_table_length(cfg: Config) -> int:
    """Positions of the projection's absolute position table, and the length shorter features are padded
    to: model.head.max_seq_len, else the window."""
    h = cfg.model.head
    return h.max_seq_len if h.max_seq_len is not None else cfg.data.window_size


def model_from_checkpoint(state: dict, use_ema: bool = True) -> tuple[AdaTAD, Config]:
    """The one way to rebuild a trained detector from a checkpoint dict: this project's saved file
    (`adatad.engine.state.read_checkpoint`) or what `adatad.models.trained.read_trained` returns for any
    trained file, OpenTAD's included.

    The dict holds every weight, so neither the VideoMAE file nor `model.init_from` is read again
    (the returned config says checkpoint=None, init_from=None); the EMA weights (what validation
    used) are taken when present; weights that do not fit are one WeightsError line.
    """
    from adatad.config import WEIGHTS_FROM_TRAINED_FILE, config_from_dict, deep_merge
    from adatad.models.checkpoint_ema import chosen_weights

    cfg = config_from_dict(deep_merge(state["config"], WEIGHTS_FROM_TRAINED_FILE))
    model = build_model(cfg)
    weights, _ = chosen_weights(state, use_ema, "checkpoint")
    load_weights(model, weights, "checkpoint", misfit="does not fit the model it describes")
    return model.eval(), cfg
