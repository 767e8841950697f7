"""The layout shows the pipeline: no import circles between modelparity's modules, the process
that runs a whole audit never imports a runtime, and docs/design.md names modules that exist."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import modelparity
from modelparity.backends import ENTRY_POINT_GROUP

PACKAGE = Path(modelparity.__file__).parent
ROOT = PACKAGE.parent.parent
RUNTIMES = ("onnxruntime", "openvino", "torch", "coremltools")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every modelparity module -> the modelparity modules it imports, anywhere in its body
    (function-level imports count: they close circles just the same)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            found.update(t for t in targets if t in modules and t != name)
        graph[name] = found
    return graph


def test_no_import_circles():
    graph = _imports()
    seen: dict[str, int] = {}  # 1: on the current path, 2: done
    circles = []

    def visit(name: str, path: list[str]) -> None:
        seen[name] = 1
        for target in sorted(graph[name]):
            # a package's __init__ re-exporting its own modules is not a circle through them
            if name.startswith(target + ".") or target.startswith(name + "."):
                continue
            if seen.get(target) == 1:
                circles.append(" -> ".join([*path[path.index(target):], target]))
            elif target not in seen:
                visit(target, [*path, target])
        seen[name] = 2

    for name in sorted(graph):
        if name not in seen:
            visit(name, [name])
    assert circles == []


def test_a_planted_circle_is_found(tmp_path, monkeypatch):
    """The check above can fail: two modules importing each other are reported."""
    graph = {"a": {"b"}, "b": {"a"}}
    monkeypatch.setattr(sys.modules[__name__], "_imports", lambda: graph)
    try:
        test_no_import_circles()
    except AssertionError as error:
        assert "a -> b -> a" in str(error)
    else:
        raise AssertionError("the planted circle was not found")


def test_the_audit_process_never_imports_a_runtime(tmp_path):
    # a PyTorch model (exported in a child), run on ONNX Runtime, OpenVINO, PyTorch and the
    # emulations, with the fix variants: every runtime there is, each in its worker
    script = (
        "import sys\n"
        "from modelparity import audit\n"
        "result = audit('modelparity.demo.models:mlp_4x3', ['openvino:cpu', 'torch:cpu'], "
        "task='multilabel', samples=2000, batch_size=256, profile_samples=500, fix=True, "
        f"out={str(tmp_path / 'out')!r})\n"
        "assert result.ok, [b.error for b in result.backends]\n"
        f"print(sorted(m for m in {RUNTIMES!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_design_doc_names_modules_that_exist():
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(modelparity(?:\.[a-z_]+)+)`", text))
    # files named by their path inside the package: `execute/runner.py`
    named |= {f"modelparity.{m}" for m in re.findall(r"`([a-z_]+(?:/[a-z_]+)+)\.py`", text)
              if not m.startswith("tests/")}
    named -= {ENTRY_POINT_GROUP}  # a name, not a module
    assert len(named) > 10
    missing = []
    for dotted in sorted(named):
        dotted = dotted.replace("/", ".")
        parts = dotted.split(".")[1:]
        path = PACKAGE.joinpath(*parts)
        if not (path.with_suffix(".py").exists() or (path / "__init__.py").exists()):
            missing.append(dotted)
    assert missing == []
