"""Where the registries look for methods, losses and suites, and how plug-ins are imported.

Three sources, read the same way (``ast``, nothing imported until an entry is used):

1. the package's own files (``methods/``, ``methods/losses/``, ``bench/suites/``),
   recursively;
2. folders named in ``DISTILLBENCH_PLUGINS`` (separated by ``os.pathsep``): every ``*.py``
   file in them may declare methods and losses in a ``REGISTRY`` list (an item with
   ``"kind": "loss"`` is a loss, any other a method) and suites as ``NAME = SuiteMetadata(...)``;
3. installed distributions that advertise a module or package in the ``distillbench``
   entry-point group (as lm-eval's ``lm_eval.tasks`` plug-ins do), e.g. in their
   pyproject: ``[project.entry-points.distillbench] mine = "my_pkg.distill"``.

A plug-in gets the same checks as a built-in entry: a name clash, a method naming no or
an unknown suite, a suite whose metadata does not validate are one-line errors.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.errors import UsageError

ENV = "DISTILLBENCH_PLUGINS"
GROUP = "distillbench"
_PLUGIN_FILES: dict[str, Path] = {}  # module name -> file, for plug-in folders


@dataclass(frozen=True)
class Found:
    name: str
    target: str  # "module:attr"
    summary: str = ""
    citation: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    origin: str = ""


def discovered(kind: str, package: str, exclude: tuple[str, ...] = ()) -> Iterator[Found]:
    """Every ``kind`` entry of ``package`` and of the plug-ins, without importing them."""
    for module, path in package_files(package, exclude):
        yield from _read(kind, module, path, plugin=False)
    for module, path in plugin_files():
        yield from _read(kind, module, path, plugin=True)


def package_files(package: str, exclude: tuple[str, ...] = ()) -> Iterator[tuple[str, Path]]:
    """``(module name, file)`` of every public module under ``package``, recursively."""
    spec = importlib.util.find_spec(package)
    if spec is None:
        return
    if not spec.submodule_search_locations:
        if spec.origin:
            yield package, Path(spec.origin)
        return
    for location in spec.submodule_search_locations:
        root = Path(location)
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if any(p.startswith("_") for p in parts):
                continue
            module = ".".join((package, *parts))
            if any(module == x or module.startswith(x + ".") for x in exclude):
                continue
            yield module, path


def plugin_files() -> Iterator[tuple[str, Path]]:
    """``(module name, file)`` of every plug-in module (folders, then entry points)."""
    for folder in filter(None, os.environ.get(ENV, "").split(os.pathsep)):
        root = Path(folder).expanduser()
        if not root.is_dir():
            raise UsageError(f"{ENV}: {folder!r} is not a folder; point it at folders of "
                             "plug-in .py files (separated by ':')")
        for path in sorted(root.glob("*.py")):
            if path.name.startswith("_"):
                continue
            digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]
            module = f"distillbench_plugin_{path.stem}_{digest}"
            _PLUGIN_FILES[module] = path
            yield module, path
    from importlib.metadata import entry_points

    for ep in entry_points(group=GROUP):
        try:
            yield from package_files(ep.value.split(":")[0])
        except (ImportError, ValueError) as exc:
            raise UsageError(f"entry point {ep.name!r} of group {GROUP!r} names "
                             f"{ep.value!r}, which cannot be found: {exc}") from None


def import_module(name: str) -> ModuleType:
    """``importlib.import_module``, plus plug-in files that are not on ``sys.path``."""
    path = _PLUGIN_FILES.get(name)
    if path is None:
        return importlib.import_module(name)
    if name in sys.modules:
        return sys.modules[name]
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.append(folder)  # so a plug-in may import its own helper modules
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # SystemExit too: a plug-in must not end the run silently
        del sys.modules[name]
        raise UsageError(f"plug-in {path}: importing it raised {type(exc).__name__}: "
                         f"{exc}") from None
    return module


def _read(kind: str, module: str, path: Path, *, plugin: bool) -> Iterator[Found]:
    from bench.registry import literal_registry, literal_suites

    try:
        if kind == "suite":
            for metadata, cls in literal_suites(path):
                yield Found(metadata.name, f"{module}:{cls}", metadata.summary,
                            metadata.citation, metadata.leaderboard_meta(), str(path))
            return
        for item in literal_registry(path):
            item_kind = item.get("kind", "method") if plugin else kind
            if item_kind != kind:
                continue
            meta = {k: v for k, v in item.items()
                    if k not in ("name", "target", "summary", "citation", "kind")}
            yield Found(item["name"], f"{module}:{item['target']}", item.get("summary", ""),
                        item.get("citation", ""), meta, str(path))
    except SyntaxError as exc:
        raise UsageError(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from None
    except ValueError as exc:
        if not plugin:
            raise
        raise UsageError(str(exc).splitlines()[0]) from None
