"""The layout's promises, read from the source: which part may import which (README, "Where things are")."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from support import ROOT

# Folder -> the cnnserve modules its code may import (prefixes), and the third-party roots it must not.
RULES = {
    "client": (("cnnserve._proto", "cnnserve.protocol", "cnnserve.client"), ("tensorflow", "keras", "onnxruntime")),
    "server": (
        ("cnnserve._proto", "cnnserve.protocol", "cnnserve.repository", "cnnserve.service", "cnnserve.server")
        + ("cnnserve.autocomplete",),  # the ONNX type table of the config completion
        ("tensorflow", "keras", "tf2onnx"),
    ),
    "explainer": (
        ("cnnserve._proto", "cnnserve.protocol", "cnnserve.repository", "cnnserve.service", "cnnserve.explainer")
        + ("cnnserve.training.registry",),  # the variants' Grad-CAM layers (no TensorFlow at import)
        ("onnxruntime",),
    ),
    "cnnserve/service": (("cnnserve._proto", "cnnserve.protocol", "cnnserve.service"), ("tensorflow", "onnxruntime")),
    "cnnserve/protocol.py": (("cnnserve._proto",), ("tensorflow", "onnxruntime")),
    "cnnserve/repository.py": (
        ("cnnserve._proto", "cnnserve.protocol", "cnnserve.service.errors", "cnnserve.autocomplete"),
        ("tensorflow", "onnxruntime"),
    ),
    # Reads a bare model.onnx with onnxruntime (imported where a config is completed, never at import).
    "cnnserve/autocomplete.py": (("cnnserve._proto", "cnnserve.protocol"), ("tensorflow", "keras")),
}


def imports(path) -> set[str]:
    """Every module ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("part", sorted(RULES))
def test_each_part_imports_only_what_the_layout_allows(part):
    allowed, forbidden = RULES[part]
    where = ROOT / part
    files = [where] if where.suffix == ".py" else sorted(where.rglob("*.py"))
    assert files, f"{part} has no Python files"
    wrong = {}
    for path in files:
        for module in imports(path):
            root = module.split(".")[0]
            if (root == "cnnserve" and module != "cnnserve" and not module.startswith(allowed)) or root in forbidden:
                wrong.setdefault(str(path.relative_to(ROOT)), []).append(module)
    assert not wrong, f"imports outside what {part} may use: {wrong}"


@pytest.mark.parametrize(
    "package, folder",
    [
        ("cnnserve.client", "client"),
        ("cnnserve.client.bench", "client/bench"),
        ("cnnserve.server", "server"),
        ("cnnserve.server.grpc", "server/grpc"),
        ("cnnserve.explainer", "explainer"),
        ("cnnserve.training", "training"),
        ("cnnserve.export", "export"),
        ("cnnserve.service", "cnnserve/service"),
    ],
)
def test_each_folder_is_the_package_the_readme_names(package, folder):
    module = importlib.import_module(package)
    assert Path(module.__file__).resolve().parent == ROOT / folder
