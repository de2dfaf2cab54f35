"""One generic registry for methods, suites, losses and assets.

Entries may be registered eagerly (the object itself) or lazily as a ``"module:attr"``
string, so that ``bench --help`` and ``bench ls`` never import torch, pyserini or lm-eval:
the module is imported only when :meth:`Registry.get` is called. The citation and summary
live on the entry, not on the object, for the same reason.

A registry can also *discover* its entries without importing anything (files are read
with ``ast``; see :mod:`bench.plugins` for where it looks):

- methods and losses: every module that assigns a literal ``REGISTRY = [{"name": ...,
  "target": "attr", "summary": ..., "citation": ..., ...}]`` at top level (extra keys are
  cheap metadata, e.g. a method's ``"suites"``);
- suites: every module that assigns ``NAME = SuiteMetadata(...)`` (literals only) and
  defines the class that says ``metadata = NAME``.

A new method or suite is therefore one new file, with no central list to edit. A name may
be registered more than once only by entries that declare disjoint ``suites`` (``teacher``
is a different recipe on each suite); :meth:`Registry.entries_named` returns all of them.
"""

from __future__ import annotations

import ast
import difflib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from bench.errors import UnknownNameError, UsageError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    name: str
    target: Any  # the object, or a "module:attr" string until resolved
    summary: str = ""
    citation: str = ""
    # Cheap metadata readable without importing the target (e.g. a method's suites).
    meta: dict[str, Any] = field(default_factory=dict)
    origin: str = ""  # the file or module that declared it (for error messages)

    @property
    def is_lazy(self) -> bool:
        return isinstance(self.target, str)


class Registry(Generic[T]):
    """Name -> object mapping with lazy entries, typo suggestions and a base-class check.

    ``base`` (optional) is checked when an entry is resolved: classes must subclass it,
    other objects must be instances of it. ``kind`` names the registry in error messages;
    ``discover`` is the package read on first use, plus the plug-ins of the same kind
    (``"method"``, ``"loss"`` or ``"suite"``).
    """

    def __init__(self, kind: str, base: type | None = None, *, discover: str | None = None,
                 exclude: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.base = base
        self._entries: dict[str, list[Entry]] = {}
        self._resolved: dict[int, T] = {}
        self._discover_package = self._package = discover
        self._exclude = exclude

    def reset(self) -> None:
        """Forget every entry and read the package and plug-ins again on next use (tests
        that change ``DISTILLBENCH_PLUGINS``)."""
        self._entries.clear()
        self._resolved.clear()
        self._discover_package = self._package

    def _discover(self) -> None:
        package, self._discover_package = self._discover_package, None
        if package is None:
            return
        from bench.plugins import discovered

        for found in discovered(self.kind, package, self._exclude):
            try:
                self.register(found.name, found.target, summary=found.summary,
                              citation=found.citation, _origin=found.origin, **found.meta)
            except ValueError as exc:  # a clash or a bad name: the message names the file
                raise UsageError(str(exc)) from None

    def register(self, name: str, target: Any = None, *, summary: str = "",
                 citation: str = "", _origin: str = "", **meta: Any) -> Any:
        """Register ``target`` (object or ``"module:attr"``) under ``name``.

        Without ``target`` it returns a decorator. Duplicate names raise ``ValueError``
        unless every entry of that name declares ``suites`` and no two share one:
        silently replacing a method would change published numbers.
        """
        self._discover()
        if target is None:

            def decorator(obj: T) -> T:
                self.register(name, obj, summary=summary, citation=citation, **meta)
                return obj

            return decorator
        where = f" ({_origin})" if _origin else ""
        if not name or name != name.strip():
            raise ValueError(f"{self.kind} name {name!r}{where} is empty or has surrounding "
                             "spaces")
        if isinstance(target, str) and ":" not in target:
            raise ValueError(f"lazy {self.kind} entry {target!r} must look like 'module:attr'")
        entry = Entry(name, target, summary, citation, dict(meta), _origin)
        for other in self._entries.get(name, []):
            mine, theirs = set(meta.get("suites") or ()), set(other.meta.get("suites") or ())
            if not mine or not theirs or mine & theirs:
                raise ValueError(f"{self.kind} {name!r}{where} is already registered"
                                 f"{f' by {other.origin}' if other.origin else ''}")
        if not isinstance(target, str):
            self._check_base(name, target)
        self._entries.setdefault(name, []).append(entry)
        return target

    def get(self, name: str) -> T:
        """The object registered as ``name``, importing it if the entry is lazy."""
        return self.resolve(self.entry(name))

    def resolve(self, entry: Entry) -> T:
        """The object of ``entry`` (one of this registry's), importing it if lazy."""
        key = id(entry)
        if key in self._resolved:
            return self._resolved[key]
        obj = entry.target
        if entry.is_lazy:
            from bench.plugins import import_module

            module_name, _, attr = obj.partition(":")
            module = import_module(module_name)
            try:
                for part in attr.split("."):
                    module = getattr(module, part)
            except AttributeError as exc:
                raise UsageError(f"{self.kind} {entry.name!r}: {obj!r} does not exist "
                                 f"({entry.origin or module_name})") from exc
            obj = module
            self._check_base(entry.name, obj)
        self._resolved[key] = obj
        return obj

    def entry(self, name: str) -> Entry:
        """The entry of ``name``; for a name registered per suite, the first one."""
        found = self.entries_named(name)
        if not found:
            raise UnknownNameError(self._unknown_message(name))
        return found[0]

    def entries_named(self, name: str) -> list[Entry]:
        self._discover()
        return list(self._entries.get(name, []))

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [e for n in self.names() for e in self._entries[n]]

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


# ------------------------------------------------------------------ reading files with ast


def literal_registry(path: Path) -> list[dict[str, Any]]:
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


def literal_suites(path: Path) -> list[tuple[Any, str]]:
    """``(SuiteMetadata, class name)`` of every suite declared in a file, read without
    importing it.

    A module-level ``NAME = SuiteMetadata(...)`` is evaluated from literals (only the
    constructors of :mod:`bench.suite` may be called, and only names bound earlier in the
    file to such literals may be referred to, so two suites in one file can share a tuple
    of settings); its class is the one whose body assigns ``metadata = NAME``.
    """
    from bench import suite as contract

    calls = {"SuiteMetadata": contract.SuiteMetadata, "DatasetSpec": contract.DatasetSpec,
             "Setting": contract.Setting}
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: dict[str, Any] = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)):
            continue
        declares = (isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name)
                    and node.value.func.id == "SuiteMetadata")
        try:
            names[node.targets[0].id] = _evaluate(node.value, calls, names)
        except (ValueError, TypeError, SyntaxError) as exc:
            if declares:
                raise ValueError(f"{path}:{node.lineno}: {node.targets[0].id}: {exc}") from None
    found = []
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        for s in node.body:
            if (isinstance(s, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "metadata"
                                                  for t in s.targets)
                    and isinstance(s.value, ast.Name)
                    and isinstance(names.get(s.value.id), contract.SuiteMetadata)):
                found.append((names[s.value.id], node.name))
    return found


def _evaluate(node: ast.AST, calls: dict[str, Any], names: dict[str, Any]) -> Any:
    """A literal expression, where the constructors in ``calls`` may be called with literals
    and the names in ``names`` stand for their values."""
    if isinstance(node, ast.Name) and node.id in names:
        return names[node.id]
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in calls:
            raise ValueError(f"line {node.lineno}: only {', '.join(calls)} may be called")
        args = [_evaluate(a, calls, names) for a in node.args]
        kwargs = {k.arg: _evaluate(k.value, calls, names) for k in node.keywords if k.arg}
        return calls[node.func.id](*args, **kwargs)
    if isinstance(node, ast.Starred):
        raise ValueError(f"line {node.lineno}: no *unpacking in metadata")
    if isinstance(node, ast.Tuple):
        return tuple(_evaluate(e, calls, names) for e in node.elts)
    if isinstance(node, ast.List):
        return [_evaluate(e, calls, names) for e in node.elts]
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise ValueError(f"line {node.lineno}: no **unpacking in metadata")
        return {_evaluate(k, calls, names): _evaluate(v, calls, names)
                for k, v in zip(node.keys, node.values, strict=True)}
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _evaluate(node.left, calls, names) + _evaluate(node.right, calls, names)
    return ast.literal_eval(node)
