"""The package's imports flow one way, as ../shared/STYLE.md draws them.

A user who only runs inference (predict, serve, export) never imports training code, and the lower layers
(config, models, data) never reach up. The allowed edges are written here once; a new import that crosses a
layer fails this test with the file and line, so the layering is a decision rather than an accident.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import resnetkit

PACKAGE = Path(resnetkit.__file__).parent
UTILITIES = {"files", "device", "__version__"}   # leaf modules any layer may use

# What each top-level module may import of ours, besides the utilities.
ALLOWED: dict[str, set[str]] = {
    "config": set(),
    "files": set(),
    "device": set(),
    "models": {"config"},
    "data": {"config"},
    "evaluate": {"config", "data", "models"},
    "infer": {"config", "data", "models"},
    "export": {"config", "data", "models", "infer"},
    "serve": {"config", "data", "models", "infer", "export"},
    # `resnetkit prune` is a training task over export's pruning
    "train": {"config", "data", "models", "evaluate", "export"},
    "reproduce": {"config", "data", "models", "evaluate", "train"},
    "__init__": {"config", "models"},
    "cli": {"config", "data", "models", "evaluate", "infer", "export", "serve", "train", "reproduce"},
}


def _layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported_layers(source: str, rel_path: Path) -> list[tuple[str, int]]:
    """Top-level resnetkit modules imported by one file (its path inside the package), with line numbers;
    imports inside functions count too."""
    rel_dir = list(rel_path.parts[:-1])
    found = []
    for node in ast.walk(ast.parse(source, filename=str(rel_path))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.level:
            base = rel_dir[:len(rel_dir) - (node.level - 1)]
            if node.module:
                names.append(".".join(base + [node.module]))
            else:
                names.extend(".".join(base + [alias.name]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "resnetkit":
            names.append(node.module.partition(".")[2] or "__init__")
        elif isinstance(node, ast.Import):
            names.extend(alias.name.partition(".")[2] or "__init__" for alias in node.names
                         if alias.name.split(".")[0] == "resnetkit")
        found.extend((name.split(".")[0], node.lineno) for name in names if name)
    return found


def test_every_layer_is_known() -> None:
    layers = {_layer(path) for path in PACKAGE.rglob("*.py")}
    assert layers <= set(ALLOWED), f"new top-level modules need a place in ALLOWED: {sorted(layers - set(ALLOWED))}"


def test_imports_flow_one_way() -> None:
    crossings = []
    for path in sorted(PACKAGE.rglob("*.py")):
        layer = _layer(path)
        for target, line in _imported_layers(path.read_text(), path.relative_to(PACKAGE)):
            if target != layer and target not in UTILITIES and target not in ALLOWED[layer]:
                crossings.append(f"{path.relative_to(PACKAGE)}:{line}: {layer} imports {target}")
    assert not crossings, "imports against the layering:\n" + "\n".join(crossings)


def test_the_checker_sees_a_crossing() -> None:
    """The test above can fail: upward imports written each way Python allows are found, lazy ones too."""
    source = ("from ..train import loop\nimport resnetkit.serve\nfrom resnetkit.reproduce import x\n"
              "def f():\n    from .. import evaluate\n    from .blocks import BasicBlock\n")
    found = _imported_layers(source, Path("models/probe.py"))
    assert found == [("train", 1), ("serve", 2), ("reproduce", 3), ("evaluate", 5), ("models", 6)]


def test_inference_imports_no_training_code() -> None:
    code = ("import sys, resnetkit, resnetkit.infer, resnetkit.export, resnetkit.serve.app\n"
            "print(sorted(m for m in sys.modules if m.startswith(('resnetkit.train', 'resnetkit.reproduce'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout
