"""Writing files so that a crash never leaves half of one: the one place for atomic writes
and append-only JSONL caches.

- :func:`atomic_write_bytes` / :func:`atomic_write_text`: a temp file in the same folder,
  fsync, then ``os.replace`` (or a no-clobber ``os.link`` with ``overwrite=False``), so
  readers see the old file or the whole new one. Files get the permissions the umask gives
  a new file (0644 by default), not ``mkstemp``'s private 0600.
- :func:`write_if_changed`: the same, skipped when the file already holds the bytes
  (generated tables and plots stay untouched, so regeneration is a no-op for git).
- :func:`atomic_save_tensors`: a safetensors file, written the same way.
- :func:`append_jsonl` / :func:`read_jsonl`: caches that grow by whole lines (one write,
  flushed and synced); a line torn by a kill is skipped when read back.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from bench.errors import ResultExistsError


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _commit(tmp: str, path: Path, overwrite: bool) -> None:
    os.chmod(tmp, _file_mode())
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise ResultExistsError(f"{path}: a result already exists; pass --overwrite to "
                                "replace it or --out to write elsewhere") from None


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *,
                       overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` atomically.

    With ``overwrite=False`` an existing file raises :class:`ResultExistsError`; the check
    and the creation are one atomic step (``os.link`` fails if the name exists).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        _commit(tmp, path, overwrite)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike[str], text: str, *,
                      overwrite: bool = True) -> None:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def write_if_changed(path: str | os.PathLike[str], data: bytes | str) -> bool:
    """Atomically write ``data`` unless the file already holds it; True if written."""
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if path.is_file() and path.read_bytes() == raw:
        return False
    atomic_write_bytes(path, raw)
    return True


def atomic_save_tensors(tensors: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """``safetensors.torch.save_file`` to a temp file in the same folder, then a rename."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp)
        _commit(tmp, path, overwrite=True)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def append_jsonl(path: str | os.PathLike[str], rows: Iterable[Any]) -> None:
    """Append ``rows`` as JSON lines in one write, flushed and synced to disk."""
    path = Path(path)
    text = "".join(json.dumps(row) + "\n" for row in rows)
    if not text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[Any]:
    """The rows of a JSONL cache; a torn line (a kill mid-write) is skipped."""
    path = Path(path)
    if not path.exists():
        return
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def writable_dir(path: str | os.PathLike[str], what: str, *, create: bool = True) -> Path:
    """``path`` as a folder this process can write into (created when missing), or a
    one-line :class:`UsageError` naming ``what`` (a flag or variable) and the problem.

    Checked before any work starts, so a finished run never fails to write its result.
    """
    from bench.errors import UsageError

    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(f"{what} {path}: is a file, not a folder; pass a folder")
    if not path.exists():
        if not create:
            return path
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"{what} {path}: cannot create it ({exc.strerror}); pass a "
                             "writable folder") from None
    try:
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-", delete=True)
        probe.close()
    except OSError as exc:
        raise UsageError(f"{what} {path}: not writable ({exc.strerror}); pass a writable "
                         "folder") from None
    return path


def missing_dirs(path: str | os.PathLike[str]) -> list[Path]:
    """The folders ``path`` needs that do not exist yet, deepest first: what
    :func:`writable_dir` is about to create, so :func:`remove_empty` can undo it."""
    path = Path(path).expanduser().absolute()
    return [p for p in (path, *path.parents) if not p.exists()]


def remove_empty(dirs: list[Path]) -> None:
    """Remove ``dirs`` (deepest first) while they hold no file, with the empty folders this
    run made inside them: a run refused after it made its --out leaves nothing behind."""
    if dirs and dirs[0].is_dir():
        for root, _, _ in os.walk(dirs[0], topdown=False):  # deepest folders first
            if root != str(dirs[0]):
                try:
                    Path(root).rmdir()
                except OSError:  # holds a file: keep it
                    pass
    for d in dirs:
        try:
            d.rmdir()
        except OSError:  # not empty (or already gone): keep it and everything above it
            return
