"""The one-way import rule (README "Architecture"): a module imports only from its own layer
or below, function-level imports included. Lower layers never reach up."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: layer of every module, lowest first (a module not listed fails the test: place it)
LAYERS = [
    ("kernels", ["fastres.kernels"]),
    ("base", ["fastres.version", "fastres.errors", "fastres.devices", "fastres.config", "fastres.store",
              "fastres.datasets", "fastres.parallel"]),
    ("solver", ["fastres.elements", "fastres.system", "fastres.compiled", "fastres.circuit",
                "fastres.solver", "fastres.netlist", "fastres.ngspice", "fastres.generators"]),
    ("network", ["fastres.network"]),
    ("learning", ["fastres.eqprop", "fastres.estimators", "fastres.reducers", "fastres.optimizers", "fastres.pulsed",
                  "fastres.evaluate", "fastres.crossbar"]),
    ("training", ["fastres.train", "fastres.baseline", "fastres.baseline_run"]),
    ("analysis", ["fastres.analysis", "fastres.report", "fastres.sweep"]),
    ("cli", ["fastres.cli"]),
]


def layer_of(module: str):
    """Index of the layer holding ``module`` (a package entry covers its submodules)."""
    for i, (_, mods) in enumerate(LAYERS):
        for m in mods:
            if module == m or module.startswith(m + "."):
                return i
    return None


def package_modules():
    out = {}
    for path in sorted((ROOT / "fastres").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts)
        out[name.removesuffix(".__init__")] = path
    for path in sorted((ROOT / "kernels").rglob("*.py")):
        rel = path.relative_to(ROOT / "kernels").with_suffix("")
        name = ".".join(("fastres", "kernels") + rel.parts)
        out[name.removesuffix(".__init__")] = path
    return out


def imports_of(module: str, path: Path):
    """Every fastres module named by an import statement anywhere in the file."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("fastres")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base[:len(base) - (node.level - 1)]
                target = ".".join(parts + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("fastres"):
                continue
            if node.module is None or layer_of(target) is None or target in ("fastres", "fastres.cli"):
                # "from . import x" / "from fastres import x": the names are modules (or re-exports)
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    found.append((sub if layer_of(sub) is not None else target, node.lineno))
            else:
                found.append((target, node.lineno))
    return found


def test_every_module_has_a_layer():
    missing = [m for m in package_modules() if m != "fastres" and layer_of(m) is None]
    assert not missing, f"place these modules in a layer of tests/test_architecture.py: {missing}"


def test_imports_flow_one_way():
    bad = []
    for module, path in package_modules().items():
        if module == "fastres":  # the package's re-exports (lazy above the solver layer)
            continue
        mine = layer_of(module)
        for target, line in imports_of(module, path):
            theirs = layer_of(target)
            if target == "fastres" and module != "fastres":
                theirs = layer_of("fastres.solver")  # what the package imports eagerly
            if theirs is not None and theirs > mine:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {module} ({LAYERS[mine][0]}) imports "
                           f"{target} ({LAYERS[theirs][0]})")
    assert not bad, "lower layers import higher ones:\n" + "\n".join(bad)


def test_the_rule_is_checked():
    """The checker sees a violation (so the test above can fail)."""
    src = "from .train import Trainer\n"
    tmp = ROOT / "tests" / "_probe_module.py"
    try:
        tmp.write_text(src)
        found = imports_of("fastres.network", tmp)
    finally:
        tmp.unlink()
    assert found == [("fastres.train", 1)] and layer_of("fastres.train") > layer_of("fastres.network")


@pytest.mark.parametrize("module, banned", [
    ("fastres.kernels", ["h5py", "fastres.store", "fastres.train", "fastres.analysis"]),
    ("fastres", ["h5py", "fastres.train", "fastres.analysis", "fastres.network"]),
    ("fastres.analysis", ["fastres.train", "fastres.estimators", "fastres.optimizers"]),
])
def test_import_loads_only_its_layers(module, banned):
    code = f"import sys, {module}; print([m for m in {banned!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT / "tests")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"import {module} loaded {out.stdout.strip()}"
