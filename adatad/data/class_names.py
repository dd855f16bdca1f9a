"""The class names of a model, in its index order: resolved in one place for every command.

A model's output index i means the i-th line of the class map it was trained with. Where that map
is found depends on what is at hand, so the sources are tried in one fixed order: a class map the
user names; the config's `data.class_map_file`; the labels of annotations the user names; the
labels of the config's `data.annotation_file` (sorted, as OpenTAD writes its `category_idx.txt`).
The training's own files come before user-named annotations because they define the order the
model learnt. The count must equal the model's `model.head.num_classes`, except for a class-agnostic
run (`data.class_agnostic`: a 1-class head whose detections get their classes from a video classifier).

A trained file that stores its class names (this project's checkpoints) decides: its names are the
model's, for `test.py` and `detect.py` alike. A class map at hand (the user's or the config's) must
list the same names in the same order, or the command stops with one line; annotation labels are then
not a source (a file may hold a subset of the classes), and ground truth is indexed by the stored names.
"""

from __future__ import annotations

from dataclasses import dataclass

from adatad.config import Config, ConfigError
from adatad.data.annotations import load_class_names
from adatad.locations import as_path


class ClassNamesError(ConfigError):
    """No class names, or a count that does not fit the model (one line naming the source)."""


@dataclass(frozen=True)
class ClassNames:
    names: list[str]
    source: str  # where they came from, for the console ("the config's class map <path>", ...)


def resolve_class_names(cfg: Config, class_map: str | None = None, annotations: str | None = None,
                        hint: str = "", stored: list[str] | None = None) -> ClassNames:
    """The first source that exists (module docstring), checked against `model.head.num_classes`.

    `class_map` / `annotations`: files the user named (e.g. `detect.py --class-map / --annotations`);
    `hint` ends the message when no source exists (what the user can pass instead); `stored`: the
    class names a trained file holds (they win; a class map found must agree with them).
    Raises ClassNamesError (a ConfigError), or AnnotationError for an unreadable file.
    """
    if stored:
        return _stored_names(cfg, class_map, list(stored))
    d = cfg.data
    candidates: list[tuple[str, str, str | None]] = []  # (source, annotation file, class map file)
    if class_map:
        if not as_path(class_map).is_file():
            raise ClassNamesError(f"--class-map {class_map}: file not found")
        candidates.append((f"--class-map {class_map}", class_map, class_map))
    config_map = cfg.resolve_path(d.class_map_file) if d.class_map_file else None
    if config_map and as_path(config_map).is_file():
        candidates.append((f"the config's class map {config_map}", config_map, config_map))
    if annotations:
        candidates.append((f"the labels of --annotations {annotations}", annotations, None))
    config_annotations = cfg.resolve_path(d.annotation_file)
    if as_path(config_annotations).is_file():
        candidates.append((f"the labels of {config_annotations}", config_annotations, None))
    if not candidates:
        raise ClassNamesError(f"no class names: data.class_map_file ({d.class_map_file}) and data.annotation_file "
                              f"({d.annotation_file}) do not exist here" + (f"; {hint}" if hint else ""))
    source, annotation_file, map_file = candidates[0]
    names = load_class_names(annotation_file, map_file)
    if d.class_agnostic:  # a 1-class head (config-checked); the names are what a video classifier assigns
        return ClassNames(names, source)
    if len(names) != cfg.model.head.num_classes:
        raise ClassNamesError(f"{source}: {len(names)} classes, but the model has "
                              f"model.head.num_classes={cfg.model.head.num_classes}")
    return ClassNames(names, source)


def _stored_names(cfg: Config, class_map: str | None, stored: list[str]) -> ClassNames:
    """A trained file's own names, after checking the class map at hand (if any) lists the same ones."""
    if class_map and not as_path(class_map).is_file():
        raise ClassNamesError(f"--class-map {class_map}: file not found")
    config_map = cfg.resolve_path(cfg.data.class_map_file) if cfg.data.class_map_file else None
    for source, path in ((f"--class-map {class_map}", class_map),
                         (f"the config's class map {config_map}", config_map)):
        if path and as_path(path).is_file():
            names = load_class_names(path, path)
            if names != stored:
                raise ClassNamesError(f"{source}: {len(names)} classes {names[:3]}... differ from the {len(stored)} "
                                      f"the checkpoint was trained with {stored[:3]}... (same names, same order "
                                      "expected; without a class map the checkpoint's own names are used)")
            break
    return ClassNames(stored, "the checkpoint")
