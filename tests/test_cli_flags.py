"""The commands' flags and printed commands, across all of them (README, "Flags"):

- every `--help` shows its docstring's examples line for line, as typed, with the interpreter that runs;
- old flag spellings still work (`--out` of a folder is `--out-dir`, tune's `--name` is `--run-name`,
  check_data's `--threads` is `--workers`, prepare_dataset's `--name` is `--dataset-name`);
- `--cluster` exactly where a command runs Ray;
- no printed command spells a bare `python` (it fails outside the venv on the first import).
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

from pipelines.cli.args import rename_flags
from pipelines.cli.hints import fetch_weights_command, python_command, resume_command
from tests.conftest import REPO
from tests.test_structure import COMMANDS, PIPELINES, imported_modules


def _parser(name: str):
    return importlib.import_module(f"pipelines.{name}").build_parser()


def _examples(doc: str) -> list[str]:
    """The docstring's example lines: `python pipelines/...` and the lines a trailing backslash continues."""
    lines, continued = [], False
    for line in doc.splitlines():
        if re.match(r"\s+python pipelines/", line) or continued:
            lines.append(line)
        continued = line.endswith("\\") and (continued or bool(re.match(r"\s+python pipelines/", line)))
    return lines


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_renders_every_example_as_typed(name: str) -> None:
    module = importlib.import_module(f"pipelines.{name}")
    examples = _examples(module.__doc__)
    assert examples, f"{name}: no example in its docstring"
    shown = _parser(name).format_help().splitlines()
    for line in examples:
        assert re.sub(r"^(\s+)python ", rf"\g<1>{python_command()} ", line) in shown, (name, line)


@pytest.mark.parametrize(("name", "argv", "dest", "value"), [
    ("test", ["--checkpoint", "c.pt", "--out", "results/x"], "out_dir", "results/x"),
    ("test", ["--checkpoint", "c.pt", "--out=results/x"], "out_dir", "results/x"),
    ("prepare_dataset", ["--videos", "v", "--segments", "s.csv", "--out", "data/x"], "out_dir", Path("data/x")),
    ("prepare_dataset", ["--videos", "v", "--segments", "s.csv", "--out-dir", "d", "--name", "x"], "dataset_name", "x"),
    ("make_synthetic", ["--out", "data/x", "--demo"], "out_dir", Path("data/x")),
    ("tune", ["--sweep", "s.yaml", "--name", "mine"], "run_name", "mine"),
    ("check_data", ["--threads", "3"], "workers", 3),
])
def test_old_flag_spellings_still_work(name: str, argv: list[str], dest: str, value) -> None:
    assert getattr(_parser(name).parse_args(argv), dest) == value


def test_old_spellings_are_hidden_and_values_are_left_alone() -> None:
    shown = _parser("check_data").format_help()
    assert "[--workers WORKERS]" in shown and "--threads THREADS" not in shown  # named in its help text only
    assert rename_flags(["--out", "--out", "--", "--out"], {"--out": "--out-dir"}) == ["--out-dir", "--out-dir", "--",
                                                                                      "--out"]
    assert rename_flags(["--set", "x.out=1", "--outer"], {"--out": "--out-dir"}) == ["--set", "x.out=1", "--outer"]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_cluster_flag_exactly_where_ray_runs(name: str) -> None:
    runs_ray = any(m.startswith("pipelines.ray_layer") for m in imported_modules(PIPELINES / f"{name}.py"))
    flags = {s for action in _parser(name)._actions for s in action.option_strings}
    assert ("--cluster" in flags) == runs_ray, name


def _non_doc_strings(path: Path) -> list[str]:
    """String constants of a file, docstrings left out (their examples are rewritten for --help)."""
    tree = ast.parse(path.read_text())
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and node.body
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docs]


def test_no_printed_command_spells_a_bare_python() -> None:
    offenders = {str(p.relative_to(REPO)): s for folder in ("pipelines", "adatad") for p in (REPO / folder).rglob("*.py")
                 for s in _non_doc_strings(p) if re.search(r"(^|[\s:'\"`])python pipelines/", s)}
    assert offenders == {}
    py = python_command()
    assert resume_command("run-1").startswith(f"{py} pipelines/train.py --resume --run-name run-1")
    assert fetch_weights_command("c.yaml", ["train.lr=1", "model.backbone.checkpoint=/w.pth"]) == (
        f"{py} pipelines/fetch_weights.py --config c.yaml --set model.backbone.checkpoint=/w.pth")
