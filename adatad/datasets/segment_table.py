"""The user's segments, per video, as read from a CSV or a THUMOS json (before any video is opened).

Why a table of its own: `pipelines/prepare_dataset.py` must report every problem of its input at
once, so the readers collect problems beside what they could read instead of raising at the
first one; the videos are probed afterwards and the table is checked against them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SPLITS = ("train", "test")  # the values a split column may hold (exact, lower case)


@dataclass(frozen=True)
class Segment:
    """One labelled segment in seconds; `where` names its source (file and row) for messages."""

    start: float
    end: float
    label: str
    where: str


@dataclass
class VideoRows:
    """Everything the input says about one video (by the name written in the input)."""

    name: str
    where: str  # the first row naming the video
    segments: list[Segment] = field(default_factory=list)
    unlabelled_at: str | None = None  # a row listing the video without a segment
    split: str | None = None  # "train" / "test" from the split column (or the json's subset)
    rejected: int = 0  # its rows already reported as problems (so "no segments" is not said again)
    zero_length: int = 0  # segments with start = end, dropped (a released json has them)


@dataclass
class SegmentTable:
    """Videos in input order, plus the problems (one line each) and notes met while reading."""

    source: str
    # A released annotation file (json), not the user's own table: segments outside the decoded video
    # are clipped or dropped with a note, as the loaders do, instead of refused.
    released: bool = False
    videos: dict[str, VideoRows] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def video(self, name: str, where: str) -> VideoRows:
        """The entry of `name`, created at its first mention."""
        if name not in self.videos:
            self.videos[name] = VideoRows(name=name, where=where)
        return self.videos[name]

    def labels(self) -> list[str]:
        """Every label used, sorted (the class map's order, as OpenTAD builds category_idx.txt)."""
        return sorted({s.label for v in self.videos.values() for s in v.segments})
