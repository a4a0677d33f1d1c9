"""The fast tier (``pytest -m "not slow"``) still imports every module of ``diffenvs/`` and ``trainers/``.

Read from the source, without running the tests: a fast test is a ``test_*`` function that neither it,
its class nor its file (``pytestmark``) marks ``slow``, and of which at least one ``parametrize`` case is not
``pytest.param(..., marks=pytest.mark.slow)``. The modules a fast test imports are the imports at
the top of its file and those inside its own body and inside the file's helpers and fixtures that are not
slow tests themselves (a name that a package imports lazily on first access counts as its module);
importing a module also imports, at once, its package's ``__init__`` and the
modules that its own top level imports. Every module file must be reached that way.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("diffenvs", "trainers")


def module_files() -> dict[str, Path]:
    """Dotted name -> file of every module of the packages (a package is its ``__init__``)."""
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imported_names(nodes: list[ast.stmt] | ast.AST, package: str, modules: dict[str, Path]) -> set[str]:
    """The modules of ours that import statements among ``nodes`` (walked recursively) load."""
    found = set()
    for node in ast.walk(nodes) if isinstance(nodes, ast.AST) else (n for top in nodes for n in ast.walk(top)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)   # from package import module
            lazy = _lazy_exports(base, modules)
            found.update(lazy[alias.name] for alias in node.names if alias.name in lazy)
    return {name for name in found if name in modules}


def _lazy_exports(package: str, modules: dict[str, Path]) -> dict[str, str]:
    """Names that a package's ``__init__`` imports on first access (a module ``__getattr__`` reading a
    dict literal ``{"name": "package.module", ...}``): name -> module."""
    path = modules.get(package)
    if path is None or path.name != "__init__.py":
        return {}
    lazy = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if (isinstance(key, ast.Constant) and isinstance(value, ast.Constant)
                        and isinstance(value.value, str) and value.value in modules):
                    lazy[key.value] = value.value
    return lazy


def _closure(names: set[str], modules: dict[str, Path]) -> set[str]:
    """``names`` with every module that importing them loads (parent packages, top-level imports)."""
    reached, pending = set(), list(names)
    while pending:
        name = pending.pop()
        if name in reached:
            continue
        reached.add(name)
        parts = name.split(".")
        pending += [".".join(parts[:i]) for i in range(1, len(parts))]
        tree = ast.parse(modules[name].read_text())
        package = name if modules[name].name == "__init__.py" else name.rpartition(".")[0]
        top_level = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom, ast.If, ast.Try))]
        pending += sorted(_imported_names(top_level, package, modules) - {"__future__"})
    return reached


def _marks_slow(decorators: list[ast.expr]) -> bool:
    """Whether the decorators make every case of the test slow: ``@pytest.mark.slow``, or a ``parametrize``
    whose cases are all ``pytest.param(..., marks=pytest.mark.slow)`` (or that marks some case slow and
    whose cases are not a literal list, so that the scan cannot tell)."""
    for decorator in decorators:
        text = ast.unparse(decorator)
        if text.endswith("mark.slow"):
            return True
        if "mark.slow" in text and isinstance(decorator, ast.Call) and ast.unparse(decorator.func).endswith("parametrize"):
            values = decorator.args[1] if len(decorator.args) > 1 else next(
                (keyword.value for keyword in decorator.keywords if keyword.arg == "argvalues"), None)
            if not isinstance(values, (ast.List, ast.Tuple)) or all("mark.slow" in ast.unparse(value)
                                                                     for value in values.elts):
                return True
    return False


def _file_is_slow(tree: ast.Module) -> bool:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "pytestmark" for t in node.targets):
            if "mark.slow" in ast.unparse(node.value):
                return True
    return False


def fast_imports(test_file: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of ours that the fast tests of ``test_file`` import directly (empty if it has none)."""
    tree = ast.parse(test_file.read_text())
    if _file_is_slow(tree):
        return set()
    fast, other = [], []
    for node in tree.body:
        classes = [node] if isinstance(node, ast.ClassDef) else []
        functions = [(node, False)] if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else []
        for cls in classes:
            functions += [(item, _marks_slow(cls.decorator_list)) for item in cls.body
                          if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for function, class_slow in functions:
            is_test = function.name.startswith("test")
            slow = class_slow or _marks_slow(function.decorator_list)
            if is_test and not slow:
                fast.append(function)
            elif not is_test:
                other.append(function)              # helpers and fixtures
    if not fast:
        return set()
    top_level = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom, ast.If, ast.Try))]
    names = _imported_names(top_level, "tests", modules)
    for function in fast + other:
        names |= _imported_names(function, "tests", modules)
    return names


def test_the_scan_reads_imports_marks_and_the_closure(tmp_path):
    modules = module_files()
    assert {"diffenvs", "diffenvs.cartpole", "trainers.strategies.hig", "trainers.experiments.sweep"} <= set(modules)
    sample = tmp_path / "test_sample.py"
    sample.write_text(
        "import pytest\nfrom trainers.strategies import hig\n\n"
        "@pytest.mark.slow\ndef test_slow():\n    import trainers.experiments.sweep\n\n"
        "def test_fast():\n    from diffenvs import brax_adapter\n")
    assert fast_imports(sample, modules) == {"trainers.strategies", "trainers.strategies.hig", "diffenvs",
                                             "diffenvs.brax_adapter"}
    # a test with one fast case is fast; one whose cases are all slow is slow
    sample.write_text(
        "import pytest\n\n"
        "@pytest.mark.parametrize('n', [pytest.param(1, marks=pytest.mark.slow), 2])\n"
        "def test_partly(n):\n    import trainers.experiments.sweep\n\n"
        "@pytest.mark.parametrize('n', [pytest.param(1, marks=pytest.mark.slow)])\n"
        "def test_all_slow(n):\n    import trainers.experiments.comparison\n\n"
        "@pytest.mark.parametrize('n', [pytest.param(n, marks=pytest.mark.slow) for n in (1, 2)])\n"
        "def test_unknown(n):\n    import trainers.experiments.diagnostics\n")
    assert fast_imports(sample, modules) == {"trainers.experiments.sweep"}
    sample.write_text("import pytest\npytestmark = pytest.mark.slow\nimport diffenvs\n\ndef test_x():\n    pass\n")
    assert fast_imports(sample, modules) == set()
    reached = _closure({"trainers.strategies.hig"}, modules)
    # the package's __init__ imports every strategy module, and they import diffenvs
    assert {"trainers", "trainers.strategies", "trainers.strategies.shac", "diffenvs.cartpole"} <= reached
    assert "trainers.experiments.sweep" not in reached
    # a name that the package imports on first access (diffenvs.brax_env) loads its module
    sample.write_text("from diffenvs import brax_env\n\ndef test_x():\n    pass\n")
    assert "diffenvs.brax_adapter" in fast_imports(sample, modules)


def test_the_fast_tier_imports_every_module():
    modules = module_files()
    directly = set()
    for test_file in sorted((ROOT / "tests").glob("test_*.py")):
        directly |= fast_imports(test_file, modules)
    missing = sorted(set(modules) - _closure(directly, modules))
    assert not missing, (f"no fast test imports {missing}: add a fast test (a few seconds) that imports and "
                         f"checks each, or do not mark all of its tests slow")
