"""The house's layout rules, checked on the source: one room per job.

- `adatad/` (the library) imports no Ray, so it works in a notebook and is tested without a cluster;
- `pipelines/<command>.py` are the commands and nothing else: no file in `pipelines/` imports a
  command, so shared code lives in `pipelines/`'s packages or in `adatad/`;
- only `pipelines/ray_layer/` imports Ray, and every module there does.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PIPELINES = REPO / "pipelines"
COMMANDS = {"train", "test", "detect", "tune", "check_data", "prepare_dataset", "prepare_frames", "make_synthetic", "report",
            "score", "fetch_weights"}


def imported_modules(path: Path, package: str | None = None) -> set[str]:
    """Absolute module names a file imports (relative imports resolved against its package, by
    default the one its place in the tree gives)."""
    package = package if package is not None else ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pipelines import train`
    return names


def commands_imported_by(path: Path, package: str | None = None) -> set[str]:
    found = set()
    for name in imported_modules(path, package):
        parts = name.split(".")
        if parts[0] == "pipelines" and len(parts) > 1 and parts[1] in COMMANDS:
            found.add(parts[1])
        elif parts[0] in COMMANDS and len(parts) == 1:  # a bare `import train` from pipelines/ on sys.path
            found.add(parts[0])
    return found


def test_the_commands_are_the_python_files_of_pipelines() -> None:
    files = {p.stem for p in PIPELINES.glob("*.py") if p.stem not in ("__init__", "_bootstrap")}
    assert files == COMMANDS
    for name in COMMANDS:
        text = (PIPELINES / f"{name}.py").read_text()
        assert 'if __name__ == "__main__":' in text and "import _bootstrap" in text, name


def test_no_file_in_pipelines_imports_a_command() -> None:
    offenders = {str(p.relative_to(REPO)): sorted(commands_imported_by(p) - {p.stem})
                 for p in PIPELINES.rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_library_imports_no_ray() -> None:
    offenders = {str(p.relative_to(REPO)): sorted(n for n in imported_modules(p) if n.split(".")[0] == "ray")
                 for p in (REPO / "adatad").rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_only_the_ray_layer_imports_ray() -> None:
    """Ray lives in `pipelines/ray_layer/`; the commands and the other packages of `pipelines/` (CLI,
    runs, tracking, sweeps) reach it only through that package."""
    outside = [p for p in PIPELINES.rglob("*.py") if "ray_layer" not in p.parts]
    offenders = {str(p.relative_to(REPO)): sorted(n for n in imported_modules(p) if n.split(".")[0] == "ray")
                 for p in outside}
    assert {k: v for k, v in offenders.items() if v} == {}
    quiet = [p.name for p in (PIPELINES / "ray_layer").glob("*.py")
             if not any(n.split(".")[0] == "ray" for n in imported_modules(p))]
    assert quiet == [], "modules in pipelines/ray_layer that import no Ray belong elsewhere"


def test_the_import_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    """The scans above would pass vacuously if they could not see an import: check they can."""
    probe = tmp_path / "probe.py"  # read as if it were pipelines/ray_layer/probe.py; nothing is written to the tree
    probe.write_text("import ray.data\nfrom pipelines import train\nfrom pipelines.detect import main\n"
                     "from . import worker\n")
    assert commands_imported_by(probe, "pipelines.ray_layer") == {"train", "detect"}
    modules = imported_modules(probe, "pipelines.ray_layer")
    assert "ray.data" in modules and "pipelines.ray_layer.worker" in modules
