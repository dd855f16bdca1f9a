"""The training and test videos a config names, and the model's class names (what every run reads first)."""

from __future__ import annotations

from adatad.config import Config
from adatad.data.annotations import VideoRecord, load_annotations
from adatad.data.block_list import read_block_list
from adatad.data.check import fill_frame_counts
from adatad.data.class_names import resolve_class_names
from adatad.data.frame_store.check import fill_frame_counts_from_store


def load_subset(cfg: Config, subset: str, class_names: list[str]) -> list[VideoRecord]:
    """The videos of `subset` in the config's annotation file, labels indexed by `class_names`, minus
    the config's block list; file names, frame rate and training segments as the data keys say."""
    d = cfg.data
    blocked = read_block_list(cfg.resolve_path(d.block_list)) if d.block_list else frozenset()
    records, _ = load_annotations(cfg.resolve_path(d.annotation_file), cfg.resolve_path(d.video_dir), subset,
                                  class_names, d.video_ext, video_prefix=d.video_prefix, blocked=blocked,
                                  fixed_fps=d.fixed_fps, min_segment_fraction=d.min_segment_fraction)
    return records


def load_splits(cfg: Config) -> tuple[list[VideoRecord], list[VideoRecord], list[str]]:
    """(training videos, test videos, class names) of `cfg`."""
    class_names = resolve_class_names(cfg).names
    return (load_subset(cfg, cfg.data.train_subset, class_names),
            load_subset(cfg, cfg.data.test_subset, class_names), class_names)


def load_test_split(cfg: Config, stored_names: list[str] | None = None) -> tuple[list[VideoRecord], list[str]]:
    """The test videos alone (evaluating needs no training videos), and the class names (a trained
    file's own `stored_names` when it has them: `adatad.data.class_names`)."""
    class_names = resolve_class_names(cfg, stored=stored_names).names
    return load_subset(cfg, cfg.data.test_subset, class_names), class_names


def with_frame_counts(cfg: Config, records: list[VideoRecord]) -> list[VideoRecord]:
    """`records` whose json has no frame count (`frame` / `fps`) get one: from the frame store's entries
    when `data.frame_store` is set (no video file needed), else from the decoder."""
    if cfg.data.frame_store:
        return fill_frame_counts_from_store(records, cfg.resolve_path(cfg.data.frame_store))
    return fill_frame_counts(records)
