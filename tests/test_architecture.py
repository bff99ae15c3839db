"""The architecture holds without anyone having to remember it: the import layering (import-linter contract in
pyproject.toml), no private names imported across packages, and small modules and functions."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "qpass"
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80
#: "path" or "path:function" -> why it is allowed to be longer
SIZE_EXCEPTIONS: dict[str, str] = {}


def _modules():
    for p in sorted(PKG.rglob("*.py")):
        yield p, ast.parse(p.read_text(), str(p))


def _module_name(p: Path) -> str:
    parts = list(p.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_of(mod: str) -> str:
    parts = mod.split(".")
    return ".".join(parts[:2])


def test_import_layering_contract_is_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    cmd = [str(lint)] if lint.exists() else [sys.executable, "-m", "importlinter.cli"]
    r = subprocess.run(cmd + ["--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "1 kept, 0 broken" in r.stdout


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def private_imports_across_packages() -> list[str]:
    bad = []
    for p, tree in _modules():
        mod = _module_name(p)
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            target = _resolve(mod, p.name == "__init__.py", node)
            if not target.startswith("qpass") or _package_of(target) == _package_of(mod):
                continue
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    bad.append(f"{p.relative_to(ROOT)}:{node.lineno} imports {target}.{a.name}")
    return bad


def test_no_private_name_is_imported_across_packages():
    assert private_imports_across_packages() == []


def oversized() -> list[str]:
    out = []
    for p, tree in _modules():
        rel = str(p.relative_to(ROOT))
        n = len(p.read_text().splitlines())
        if n > MAX_FILE_LINES and rel not in SIZE_EXCEPTIONS:
            out.append(f"{rel}: {n} lines")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES and f"{rel}:{node.name}" not in SIZE_EXCEPTIONS:
                    out.append(f"{rel}:{node.lineno} {node.name}(): {length} lines")
    return out


def test_modules_and_functions_stay_small():
    assert oversized() == []


def test_the_checks_can_fail(tmp_path, monkeypatch):
    """Each check above finds a planted violation (so a green run means something)."""
    bad = PKG / "ir" / "_planted_violation.py"
    body = "\n".join(f"x{i} = {i}" for i in range(MAX_FILE_LINES + 1))
    bad.write_text("from qpass.passes.fakequant import _weight_axes  # noqa\n" + body + "\n")
    try:
        assert any("_planted_violation.py" in s for s in oversized())
        assert any("_weight_axes" in s for s in private_imports_across_packages())
        lint = Path(sys.executable).with_name("lint-imports")
        cmd = [str(lint)] if lint.exists() else [sys.executable, "-m", "importlinter.cli"]
        r = subprocess.run(cmd + ["--no-cache"], cwd=ROOT, capture_output=True, text=True)
        assert r.returncode != 0 and "qpass.ir._planted_violation -> qpass.passes.fakequant" in r.stdout
    finally:
        bad.unlink()


@pytest.mark.parametrize("layer", ["formats", "ir", "ops", "reference", "analysis", "pipeline", "passes"])
def test_lower_layers_import_without_the_front_ends(layer):
    """Importing a lower layer alone pulls in no front end, backend or search module."""
    code = (f"import sys; import qpass.{layer}; "
            "bad = sorted(m for m in sys.modules if m.startswith(('qpass.cli', 'qpass.zoo', 'qpass.backends', "
            "'qpass.search', 'qpass.hw', 'qpass.report'))); print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
