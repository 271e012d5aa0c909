"""The package's layering: lower layers never import the stages or the commands above them.

A small AST walk over every module, so a new upward or private import fails here, not in review.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "edgekd"
LOWER = ("verify", "report", "models", "train", "audio", "data", "export")
UPPER = ("edgekd.stages", "edgekd.build", "edgekd.evaluate", "edgekd.cli")


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every `from edgekd... import names` in a file, lazy imports included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        (node.module, [a.name for a in node.names])
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "edgekd"
    ]


def _is_upper(module: str) -> bool:
    return any(module == u or module.startswith(u + ".") for u in UPPER)


def upward_imports(package: Path = PACKAGE) -> list[str]:
    out = []
    for path in sorted(package.rglob("*.py")):
        layer = path.relative_to(package).parts[0]
        if layer in LOWER:
            out += [f"{path.relative_to(package)} imports {m}" for m, _ in _imports(path) if _is_upper(m)]
    return out


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_imports(package: Path = PACKAGE) -> list[str]:
    """`from edgekd.x import _name`, and `x._name` on a module imported as `from edgekd import x`."""
    out = []
    for path in sorted(package.rglob("*.py")):
        modules = set()
        for module, names in _imports(path):
            out += [f"{path.relative_to(package)} imports {module}.{n}" for n in names if _private(n)]
            modules |= set(names)
        tree = ast.parse(path.read_text(), filename=str(path))
        out += [
            f"{path.relative_to(package)} uses {node.value.id}.{node.attr}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and _private(node.attr)
        ]
    return out


BUILDERS = ("build.py", "build_wakeword.py")  # the builds that run the stages (classifier, wake word)


def stage_imports(package: Path = PACKAGE) -> list[str]:
    """Stages are leaves that meet only at artifacts: only the builds import them, and none imports
    another (what two stages share lives in a lower layer)."""
    out = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        if rel.as_posix() in BUILDERS:
            continue
        out += [f"{rel} imports {m}" for m, _ in _imports(path) if m.startswith("edgekd.stages")]
    return out


def test_lower_layers_never_import_stages_build_evaluate_or_cli() -> None:
    assert upward_imports() == []


def test_stages_are_imported_only_by_the_builds() -> None:
    assert stage_imports() == []


def test_no_module_imports_a_private_name_of_another() -> None:
    assert private_imports() == []


def test_the_checks_catch_what_they_forbid(tmp_path: Path) -> None:
    (tmp_path / "verify").mkdir()
    (tmp_path / "verify" / "bad.py").write_text(
        "def f():\n    from edgekd.stages.distill import make_student\n"
        "from edgekd.verify.parity import _gate\nfrom edgekd.build_dir import BuildDir\n"
        "from edgekd.verify import tflite_info\nn = tflite_info._count_macs\n"
    )
    assert upward_imports(tmp_path) == ["verify/bad.py imports edgekd.stages.distill"]
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "b.py").write_text("from edgekd.stages.a import x\n")
    assert stage_imports(tmp_path) == [
        "stages/b.py imports edgekd.stages.a",
        "verify/bad.py imports edgekd.stages.distill",
    ]
    assert private_imports(tmp_path) == [
        "verify/bad.py imports edgekd.verify.parity._gate",
        "verify/bad.py uses tflite_info._count_macs",
    ]
