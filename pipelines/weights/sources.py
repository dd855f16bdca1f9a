"""Where the pretrained backbone files the configs name are published, and how each is checked.

The table lists the files OpenTAD's AdaTAD configs train from (`configs/adatad/README.md` in
OpenTAD, "Prepare the pretrained VideoMAE checkpoints", and the EPIC and Ego4D sections), under the
names the configs give them (`model.backbone.checkpoint: pretrained/<file>`). A file is found by its
name, so a config that moves it (`--set model.backbone.checkpoint=/abs/<file>`) still finds its source.

Hashes: mmaction2's release names end in the first 8 hex digits of the file's sha256
(`..._20221013-229dbb03.pth`), so those are checked against that prefix; OpenTAD's Google Drive
copies publish no hash, so `fetch_weights.py` records the sha256 of what it downloaded beside the
file (`<file>.sha256`) and checks the file against that record on every later run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

OPENTAD_README = "https://github.com/sming256/OpenTAD/blob/main/configs/adatad/README.md"
VIDEOMAEV2_FORM = "https://github.com/OpenGVLab/VideoMAEv2/blob/master/docs/MODEL_ZOO.md#model-weight-links"
MMACTION2 = "https://download.openmmlab.com/mmaction/v1.0/recognition/videomae/"


def drive_url(file_id: str) -> str:
    """A Google Drive file's direct download (`confirm=t` skips the "cannot scan for viruses" page
    that large files get; the server answers Range requests, so a download resumes)."""
    return f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"


@dataclass(frozen=True)
class WeightSource:
    """One published backbone file."""

    file: str  # the name OpenTAD's configs give it under pretrained/
    model: str  # what it is, for people
    url: str | None  # None: not downloadable (see `how`)
    published_at: str  # the page that links it
    sha256: str | None = None  # a full digest, or the leading hex digits a release name carries
    how: tuple[str, ...] = ()  # what to do instead, where there is no URL

    @property
    def hash_note(self) -> str:
        if self.sha256 is None:
            return "none published (recorded on download)"
        return self.sha256 if len(self.sha256) == 64 else f"{self.sha256}... (prefix in the file name)"


def release_hash_prefix(name: str) -> str | None:
    """The sha256 prefix an mmaction2 release name ends in (`..._20221013-229dbb03.pth` -> `229dbb03`)."""
    found = re.search(r"_\d{8}-([0-9a-f]{8})\.pth$", name)
    return found.group(1) if found else None


_B = "vit-base-p16_videomae-k400-pre_16x4x1_kinetics-400_20221013-860a3cd3.pth"
_L = "vit-large-p16_videomae-k400-pre_16x4x1_kinetics-400_20221013-229dbb03.pth"
_G = "vit-giant-p14_videomaev2-hybrid_pt_1200e_k710_ft_my.pth"
_EPIC = "https://github.com/sming256/OpenTAD/blob/main/configs/adatad/README.md#epic-kitchens-results"
_EGO4D = "https://github.com/sming256/OpenTAD/blob/main/configs/adatad/README.md#ego4d-mq-results"

SOURCES: tuple[WeightSource, ...] = (
    WeightSource("vit-small-p16_videomae-k400-pre_16x4x1_kinetics-400_my.pth",
                 "VideoMAE-S, K400 pre-trained and fine-tuned (converted by OpenTAD)",
                 drive_url("1BH5BZmdImaZesUfqtW23eBGC341Gui1D"), OPENTAD_README),
    WeightSource(_B, "VideoMAE-B, K400 pre-trained and fine-tuned (mmaction2 release)", MMACTION2 + _B,
                 OPENTAD_README, release_hash_prefix(_B)),
    WeightSource(_L, "VideoMAE-L, K400 pre-trained and fine-tuned (mmaction2 release)", MMACTION2 + _L,
                 OPENTAD_README, release_hash_prefix(_L)),
    WeightSource("vit-huge-p16_videomae-k400-pre_16x4x1_kinetics-400_my.pth",
                 "VideoMAE-H, K400 pre-trained and fine-tuned (converted by OpenTAD)",
                 drive_url("1wWXs7xpkVkQ2cJnvRVKnWZ86QswZC1UI"), OPENTAD_README),
    WeightSource(_G, "VideoMAEv2-g, hybrid pre-trained, K710 fine-tuned", None, VIDEOMAEV2_FORM, how=(
        "OpenGVLab does not allow VideoMAEv2's weights to be redistributed, so nothing can download them:",
        f"  1. request them with the form linked at {VIDEOMAEV2_FORM} (the file: vit_g_hybrid_pt_1200e_k710_ft.pth);",
        "  2. save that file as {dest}: it loads as it is (OpenGVLab's keys under `module`, "
        "adatad/models/videomae_keys.py), or convert it first as OpenTAD does "
        "(tools/model_converters/convert_videomaev2.py vit_g_hybrid_pt_1200e_k710_ft.pth {dest}).",
    )),
    WeightSource("vit-large-p16_videomae-epic_noun.pth",
                 "VideoMAE-L, InternVideo1 pre-training, fine-tuned on EPIC-KITCHENS nouns (OpenTAD)",
                 drive_url("1nRuzJI4ej90vFsKCBSugRVOmxrR8urwW"), _EPIC),
    WeightSource("vit-large-p16_videomae-epic_verb.pth",
                 "VideoMAE-L, InternVideo1 pre-training, fine-tuned on EPIC-KITCHENS verbs (OpenTAD)",
                 drive_url("1h7oLiNN5LTXau4HWmmzS_ekvuNdZkp-b"), _EPIC),
    WeightSource("vit-large-p16_videomae_k700_mq_ft_internvideo.pth",
                 "VideoMAE-L, InternVideo1 K700 pre-training, fine-tuned on Ego4D verbs and MQ (OpenTAD)",
                 drive_url("1MYyXdBCxbGsHWiRPf1gWSjLc56Tsk3cZ"), _EGO4D),
)


def source_for(path: str | Path) -> WeightSource | None:
    """The published source of the file a config names, found by its file name."""
    name = Path(path).name
    return next((s for s in SOURCES if s.file == name), None)
