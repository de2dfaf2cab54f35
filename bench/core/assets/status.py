"""``bench assets check``: is each asset installed, at the pinned version, with the pinned bytes?

A leaderboard number is only reproducible on the same weights and data, so each asset's key
files are hashed and compared with ``manifest.json`` (next to this file), recorded when the
assets were pinned. Hashing ~350 MB costs about a second, so digests are memoised in
``<cache>/sha256-cache.json`` keyed by path, size and mtime; a changed file is re-hashed.
Checking never raises for a missing asset: it reports it, with the install command.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.core.assets.specs import (
    ASSETS,
    AssetSpec,
    cache_dir,
    installed_version,
    key_file_path,
    missing_message,
    missing_modules,
    root_of,
    spec,
)

MANIFEST_PATH = Path(__file__).with_name("manifest.json")
_HASH_CACHE_NAME = "sha256-cache.json"


@dataclass
class AssetStatus:
    """What ``check`` found for one asset; ``checksum_ok`` is None when nothing is pinned."""

    name: str
    kind: str
    present: bool
    optional: bool
    install: str
    source: str
    pinned_version: str
    version: str | None = None
    path: Path | None = None
    size_bytes: int = 0
    sha256: dict[str, str] = field(default_factory=dict)
    checksum_ok: bool | None = None
    problems: list[str] = field(default_factory=list)
    licence: str = ""  # AssetSpec.licence_text: the weights'/data's and the package's

    @property
    def version_ok(self) -> bool:
        return self.version is not None and (
            self.pinned_version == "debian" or self.version == self.pinned_version)

    @property
    def ok(self) -> bool:
        """Usable for published numbers: present, pinned version, bytes as pinned."""
        return self.present and self.version_ok and self.checksum_ok is not False

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``bench assets check --json``)."""
        d = dict(self.__dict__)
        d["path"] = str(self.path) if self.path else None
        d["ok"] = self.ok
        return d


def load_manifest(path: Path | None = None) -> dict[str, Any]:
    """Pinned versions and sha256 of key files, ``{asset: {"version", "sha256": {file: hex}}}``."""
    path = MANIFEST_PATH if path is None else path
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


def sha256_file(path: Path, memo: dict[str, Any] | None = None) -> str:
    """Hex sha256 of a file, reusing ``memo`` when path, size and mtime are unchanged."""
    st = path.stat()
    key = str(path.resolve())
    stamp = [st.st_size, st.st_mtime_ns]
    if memo is not None and key in memo and memo[key][:2] == stamp:
        return str(memo[key][2])
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    hexdigest = digest.hexdigest()
    if memo is not None:
        memo[key] = [*stamp, hexdigest]
    return hexdigest


def _tree_size(paths: Iterable[Path]) -> int:
    total = 0
    for base in paths:
        for dirpath, _dirs, files in os.walk(base):
            for f in files:
                try:
                    total += os.lstat(os.path.join(dirpath, f)).st_size
                except OSError:
                    continue
    return total


def _read_memo() -> dict[str, Any]:
    try:
        data = json.loads((cache_dir() / _HASH_CACHE_NAME).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_memo(memo: dict[str, Any]) -> None:
    """Best effort: a read-only cache only makes the next check slower."""
    from bench.core.io import atomic_write_text

    try:
        atomic_write_text(cache_dir() / _HASH_CACHE_NAME, json.dumps(memo, sort_keys=True))
    except OSError:
        pass


def _check(s: AssetSpec, manifest: dict[str, Any], memo: dict[str, Any] | None) -> AssetStatus:
    st = AssetStatus(name=s.name, kind=s.kind, present=False, optional=s.optional,
                     install=s.install, source=s.source, pinned_version=s.version,
                     licence=s.licence_text)
    st.version = installed_version(s)
    root = root_of(s)
    if root is None:
        gone = missing_modules(s) if s.modules else [s.path]
        st.problems.append(missing_message(s, "missing: " + ", ".join(gone)))
        return st
    st.path = root
    files = {k: key_file_path(s, k, root) for k in s.key_files}
    absent = [k for k, p in files.items() if not p.is_file()]
    if absent:
        st.problems.append(missing_message(s, "missing files: " + ", ".join(absent)))
        return st
    st.present = True
    bases = {root} | {p.parent for p in files.values()}
    st.size_bytes = _tree_size(sorted(b for b in bases if not any(
        b != o and o in b.parents for o in bases)))
    st.sha256 = {k: sha256_file(p, memo) for k, p in files.items()}
    pinned = manifest.get(s.name, {}).get("sha256", {})
    if pinned:
        bad = [k for k, h in st.sha256.items() if pinned.get(k) != h]
        st.checksum_ok = not bad
        if bad:
            st.problems.append("sha256 differs from the pinned manifest: " + ", ".join(bad))
    if st.version is not None and not st.version_ok:
        st.problems.append(f"version {st.version} installed, {s.version} pinned; "
                           f"reinstall with: {s.install}")
    return st


def check(name: str) -> AssetStatus:
    """Status of one asset; never raises for a missing asset (unknown names do raise)."""
    memo = _read_memo()
    before = dict(memo)
    status = _check(spec(name), load_manifest(), memo)
    if memo != before:
        _write_memo(memo)
    return status


def check_all(names: Iterable[str] | None = None) -> list[AssetStatus]:
    """Status of every registered asset (or of ``names``), in name order."""
    manifest, memo = load_manifest(), _read_memo()
    before = dict(memo)
    statuses = [_check(spec(n), manifest, memo) for n in (names or ASSETS.names())]
    if memo != before:
        _write_memo(memo)
    return statuses


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"


def format_status(statuses: Iterable[AssetStatus]) -> str:
    """One line per asset for ``bench assets check``: state, name, kind, version, size, sha256,
    path, then any problems (or the install command) and the licences."""
    lines = []
    for st in statuses:
        if st.present:
            state = "ok" if st.ok else "WARN"
            sha = {True: "sha256 ok", False: "sha256 MISMATCH", None: "sha256 unpinned"}[
                st.checksum_ok]
            line = (f"{state:<8} {st.name:<22} {st.kind:<8} {st.version or '?':<9} "
                    f"{_size(st.size_bytes):>9}  {sha:<15}  {st.path}")
            extra = list(st.problems)
        else:
            state = "optional" if st.optional else "MISSING"
            line = f"{state:<8} {st.name:<22} {st.kind:<8} {'-':<9} {'-':>9}  {'':<15}  "
            extra = [f"install: {st.install}"]
        if st.licence:
            extra.append(f"licence: {st.licence}")
        lines.append(line.rstrip() + ("  " + "; ".join(extra) if extra else ""))
    return "\n".join(lines)


def write_manifest(path: Path | None = None) -> dict[str, Any]:
    """Record the installed assets' versions and key-file digests as the pinned values.

    A maintainer's tool (``python -m bench.core.assets pin``): run it only after
    deliberately upgrading an asset, since it redefines what "the right bytes" are.
    Assets not installed keep their previous entry.
    """
    path = MANIFEST_PATH if path is None else path
    manifest = load_manifest(path)
    for st in check_all():
        if st.present:
            manifest[st.name] = {"version": st.version, "sha256": st.sha256}
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return manifest

