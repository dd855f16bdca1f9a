"""Split videos (never segments) into train and test, stratified by class, reproducibly from a seed.

Why videos: segments of one video share scene, actors and camera; splitting segments would put
near-copies on both sides and inflate the test mAP. Why stratified: a class missing from the
test set has no AP, one missing from the training set is never learnt.

Method (iterative stratification, as Sechidis et al. 2011 describe for multi-label data): classes
are visited rarest first, and each still unplaced video of the class goes to test while test
still wants that class (round(fraction x its videos), at least 1, at most all but 1) and has
room (round(fraction x labelled videos)); a video carrying a class seen in only one video always
trains. A final pass tops test up to its size without taking a class's last training video.
The video order is shuffled by the seed; several shuffles are tried and the split that leaves
the fewest classes on one side only (then: closest to the wanted sizes) wins. Videos without
segments (background) are split by the same fraction on their own.

Test is never empty: when every labelled video carries a class seen in that video only (two
videos of one class each, say), no stratified split can test anything, so the split falls back
to moving one video to test (the one whose classes lose the fewest training videos, by the seed)
and says so in a note; an empty test set would stop every validation.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np

TRIES = 64


@dataclass(frozen=True)
class Split:
    train: tuple[str, ...]  # sorted video names
    test: tuple[str, ...]
    notes: tuple[str, ...]  # one line per class that is not on both sides

    def of(self, video: str) -> str:
        return "test" if video in self.test else "train"


def _counts(labels: Mapping[str, Collection[str]], videos: Collection[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in videos:
        for c in labels[v]:
            counts[c] = counts.get(c, 0) + 1
    return counts


def _one_try(labels: Mapping[str, Collection[str]], videos: list[str], fraction: float,
             rng: np.random.Generator) -> set[str]:
    order = [videos[i] for i in rng.permutation(len(videos))]
    count = _counts(labels, videos)
    want = {c: min(max(round(fraction * n), 1), n - 1) if n >= 2 else 0 for c, n in count.items()}
    room = min(max(round(fraction * len(videos)), 1), len(videos) - 1)
    classes = sorted(sorted(count), key=lambda c: (count[c], rng.random()))
    test: set[str] = set()
    have = dict.fromkeys(count, 0)
    placed: set[str] = set()
    for c in classes:
        for v in order:
            if v in placed or c not in labels[v]:
                continue
            placed.add(v)
            if have[c] < want[c] and len(test) < room and all(count[k] >= 2 for k in labels[v]):
                test.add(v)
                for k in labels[v]:
                    have[k] += 1
    for v in order:  # top up test without taking any class's last training video
        if len(test) >= room:
            break
        if v not in test and all(count[k] - have[k] >= 2 for k in labels[v]):
            test.add(v)
            for k in labels[v]:
                have[k] += 1
    return test


def _score(labels: Mapping[str, Collection[str]], videos: list[str], test: set[str], fraction: float
           ) -> tuple[int, int, float]:
    count, have = _counts(labels, videos), _counts(labels, test)
    one_sided = sum(1 for c, n in count.items() if n >= 2 and have.get(c, 0) in (0, n))
    room = min(max(round(fraction * len(videos)), 1), len(videos) - 1)
    spread = sum(abs(have.get(c, 0) - fraction * n) for c, n in count.items())
    return one_sided, abs(len(test) - room), spread


def stratified_split(labels: Mapping[str, Collection[str]], test_fraction: float, seed: int,
                     tries: int = TRIES) -> Split:
    """Train/test split of the videos in `labels` (video -> its class names; empty = background).

    Raises ValueError for a fraction outside (0, 1), a negative seed or fewer than 2 labelled videos.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"--test-fraction {test_fraction}: expected a number in (0, 1)")
    if seed < 0:
        raise ValueError(f"--seed {seed}: expected an integer >= 0")
    labelled = sorted(v for v, ls in labels.items() if ls)
    background = sorted(v for v, ls in labels.items() if not ls)
    if len(labelled) < 2:
        raise ValueError(f"{len(labelled)} video(s) with segments: a train/test split needs at least 2 (add "
                         "labelled videos, or give each video its split with --split-column)")
    best: tuple[tuple[int, int, float], set[str]] | None = None
    for t in range(tries):
        test = _one_try(labels, labelled, test_fraction, np.random.default_rng([seed, t]))
        score = _score(labels, labelled, test, test_fraction)
        if best is None or score < best[0]:
            best = (score, test)
        if score[:2] == (0, 0) and score[2] <= 0.5 * len(_counts(labels, labelled)):
            break  # every class on both sides, test at its size, per-class counts within rounding
    test = set(best[1])
    fallback = [] if test else [_fallback_test_video(labels, labelled, np.random.default_rng([seed, tries + 1]))]
    test.update(fallback)
    rng = np.random.default_rng([seed, tries])  # background videos: their own stream
    test.update(background[i] for i in rng.permutation(len(background))[: round(test_fraction * len(background))])
    train = tuple(v for v in sorted(labels) if v not in test)
    notes = [f"no stratified split has a test video (every video carries a class found in no other video): "
             f"video '{v}' ({', '.join(sorted(labels[v]))}) moved to the test set" for v in fallback]
    return Split(train, tuple(sorted(test)), tuple(notes + coverage_notes(labels, set(test), stratified=True)))


def _fallback_test_video(labels: Mapping[str, Collection[str]], videos: list[str], rng: np.random.Generator) -> str:
    """The video whose move to test leaves the fewest classes without a training video (ties: by the seed)."""
    count = _counts(labels, videos)
    order = [videos[i] for i in rng.permutation(len(videos))]
    return min(order, key=lambda v: sum(count[c] == 1 for c in labels[v]))


def coverage_notes(labels: Mapping[str, Collection[str]], test: Collection[str], stratified: bool = False
                   ) -> list[str]:
    """One line per class that is not in both sets (why it matters, and whether a split could help)."""
    count, have = _counts(labels, labels), _counts(labels, [v for v in test if v in labels])
    notes = []
    for c in sorted(count):
        n, t = count[c], have.get(c, 0)
        if n == 1:
            side = "test" if t else "training"
            notes.append(f"class '{c}' is in 1 video only, in the {side} set: "
                         + ("its AP is never measured" if not t else "the model never sees it in training"))
        elif t == 0 or t == n:
            side, missing = ("training", "test") if t == 0 else ("test", "training")
            why = "; no split of these videos found puts it in both" if stratified else ""
            notes.append(f"class '{c}' ({n} videos) is in the {side} set only, none in the {missing} set{why}")
    return notes
