"""Dependencies run one way: cli -> capability suites -> methods -> core, contracts, losses."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.update({node.module, *(f"{node.module}.{a.name}" for a in node.names)})
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def _modules(folder: str) -> dict[str, set[str]]:
    return {str(p.relative_to(ROOT)): _imports(p) for p in (ROOT / folder).rglob("*.py")}


def _suite_modules() -> set[str]:
    from bench.suite import SUITES

    return {e.target.split(":")[0] for e in SUITES.entries()}


def test_methods_never_import_a_suite_module():
    suites = _suite_modules()
    assert "bench.reasoning.suite" in suites
    for path, imports in _modules("methods").items():
        assert not imports & suites, (path, imports & suites)


def test_core_and_losses_import_no_capability_and_no_method():
    capabilities = ("bench.retrieval", "bench.reasoning", "bench.specdec", "bench.align",
                    "bench.instruct", "bench.vision", "methods")
    for folder in ("bench/core", "methods/losses"):
        for path, imports in _modules(folder).items():
            bad = {m for m in imports if m.startswith(capabilities)
                   and not m.startswith("methods.losses")}
            assert not bad, (path, bad)


def test_no_private_names_are_imported_across_modules():
    for folder in ("bench", "methods", "benchmarks"):
        for path, _ in _modules(folder).items():
            tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and \
                        node.module.split(".")[0] in ("bench", "methods"):
                    private = [a.name for a in node.names if a.name.startswith("_")]
                    assert not private, (path, node.module, private)
