"""One generic registry for methods, suites, losses and assets.

Entries may be registered eagerly (the object itself) or lazily as a ``"module:attr"``
string, so that ``bench --help`` and ``bench ls`` never import torch, pyserini or lm-eval:
the module is imported only when :meth:`Registry.get` is called. The citation and summary
live on the entry, not on the object, for the same reason.

A registry can also *discover* its entries: every ``<package>/<name>.py`` that assigns a
literal ``REGISTRY = [{"name": ..., "target": "attr", "summary": ..., "citation": ...}]``
at top level is registered without being imported (the literal is read with ``ast``). A
new method or suite is therefore one new file, with no central list to edit.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from bench.errors import UnknownNameError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    name: str
    target: Any  # the object, or a "module:attr" string until resolved
    summary: str = ""
    citation: str = ""
    # Cheap metadata readable without importing the target (e.g. a suite's baseline).
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def is_lazy(self) -> bool:
        return isinstance(self.target, str)


class Registry(Generic[T]):
    """Name -> object mapping with lazy entries, typo suggestions and a base-class check.

    ``base`` (optional) is checked when an entry is resolved: classes must subclass it,
    other objects must be instances of it. ``kind`` names the registry in error messages.
    """

    def __init__(self, kind: str, base: type | None = None, *, discover: str | None = None) -> None:
        self.kind = kind
        self.base = base
        self._entries: dict[str, Entry] = {}
        self._resolved: dict[str, T] = {}
        self._discover_package = discover

    def _discover(self) -> None:
        package, self._discover_package = self._discover_package, None
        if package is None:
            return
        spec = importlib.util.find_spec(package)
        for location in (spec.submodule_search_locations or []) if spec else []:
            for path in sorted(Path(location).glob("*.py")):
                if path.name.startswith("_"):
                    continue
                for item in _literal_registry(path):
                    meta = {k: v for k, v in item.items()
                            if k not in ("name", "target", "summary", "citation")}
                    self.register(
                        item["name"], f"{package}.{path.stem}:{item['target']}",
                        summary=item.get("summary", ""), citation=item.get("citation", ""),
                        **meta,
                    )

    def register(
        self,
        name: str,
        target: Any = None,
        *,
        summary: str = "",
        citation: str = "",
        **meta: Any,
    ) -> Any:
        """Register ``target`` (object or ``"module:attr"``) under ``name``.

        Without ``target`` it returns a decorator. Duplicate names raise ``ValueError``:
        silently replacing a method would change published numbers.
        """
        self._discover()
        if target is None:

            def decorator(obj: T) -> T:
                self.register(name, obj, summary=summary, citation=citation, **meta)
                return obj

            return decorator
        if not name or name != name.strip():
            raise ValueError(f"{self.kind} name {name!r} is empty or has surrounding spaces")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        if isinstance(target, str) and ":" not in target:
            raise ValueError(f"lazy {self.kind} entry {target!r} must look like 'module:attr'")
        if not isinstance(target, str):
            self._check_base(name, target)
        self._entries[name] = Entry(name, target, summary, citation, dict(meta))
        return target

    def get(self, name: str) -> T:
        """The object registered as ``name``, importing it if the entry is lazy."""
        self._discover()
        if name in self._resolved:
            return self._resolved[name]
        entry = self._entries.get(name)
        if entry is None:
            raise UnknownNameError(self._unknown_message(name))
        obj = entry.target
        if entry.is_lazy:
            module_name, _, attr = obj.partition(":")
            module = importlib.import_module(module_name)
            try:
                for part in attr.split("."):
                    module = getattr(module, part)
            except AttributeError as exc:
                raise ImportError(f"{self.kind} {name!r}: {obj!r} does not exist") from exc
            obj = module
            self._check_base(name, obj)
        self._resolved[name] = obj
        return obj

    def entry(self, name: str) -> Entry:
        self._discover()
        if name not in self._entries:
            raise UnknownNameError(self._unknown_message(name))
        return self._entries[name]

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._discover()
        return len(self._entries)

    def _check_base(self, name: str, obj: Any) -> None:
        if self.base is None:
            return
        ok = issubclass(obj, self.base) if isinstance(obj, type) else isinstance(obj, self.base)
        if not ok:
            raise TypeError(f"{self.kind} {name!r} must be a {self.base.__name__}, got {obj!r}")

    def _unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        available = ", ".join(self.names()) or "none yet"
        return f"unknown {self.kind} {name!r}; {hint + ' ' if hint else ''}available: {available}"



def _literal_registry(path: Path) -> list[dict[str, Any]]:
    """The literal ``REGISTRY = [...]`` of a module file, read without importing it."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id == "REGISTRY"):
            try:
                value = ast.literal_eval(node.value)
            except ValueError as exc:
                raise ValueError(f"{path}: REGISTRY must be a literal list of dicts") from exc
            items = value if isinstance(value, list) else [value]
            for item in items:
                if not isinstance(item, dict) or "name" not in item or "target" not in item:
                    raise ValueError(f"{path}: each REGISTRY item needs 'name' and 'target'")
            return items
    return []
