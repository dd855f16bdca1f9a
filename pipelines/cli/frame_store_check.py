"""A config's frame store checked before a command starts: one line per problem with the command that fixes it."""

from __future__ import annotations

from adatad.config import Config
from pipelines.cli.hints import prepare_frames_command


def frame_store_problems(cfg: Config, records: list, config: str | None, overrides: list[str] | None = None,
                         videos: list[str] | None = None) -> list[str]:
    """When `data.frame_store` is set: every reason it cannot serve `records` under `cfg`, one line each
    ending with the command that fixes it (empty: it serves them, or no store is set)."""
    from adatad.data.frame_store.check import check_store

    if not cfg.data.frame_store:
        return []
    root = cfg.resolve_path(cfg.data.frame_store)
    report = check_store(root, records, cfg.data)
    return report.lines(frame_store_fix(cfg, report.mismatch, root, config, overrides, videos))


def frame_store_fix(cfg: Config, mismatch: bool, root: str, config: str | None, overrides: list[str] | None,
                    videos: list[str] | None = None) -> str:
    """The command that builds what a store check found missing: into `root`, or, when `root` holds
    another grid or frame size, into a sibling folder named for this config's (then point at it)."""
    if not mismatch:
        return prepare_frames_command(config, root, overrides, videos)
    from adatad.data.frame_store.spec import spec_for_config

    other = f"{root.rstrip('/')}-{spec_for_config(cfg.data).tag()}"
    return f"{prepare_frames_command(config, other, overrides, videos)}, then --set data.frame_store={other}"

