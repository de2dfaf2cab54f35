"""The leaderboards as a static web site: ``<out>/site/index.html`` and one page per suite.

:func:`bench.core.leaderboard.write_leaderboards` (``site=True``; ``bench leaderboard``
always) calls :func:`write_site` with the same :class:`~bench.core.leaderboard.SuiteView`
per suite that its markdown page is written from, so both show the same numbers. The site
is self-contained (``site.css`` and ``site.js`` beside the pages, no CDN) and works from
``file://``; plots are the PNGs beside the markdown (``../<suite>_*.png``) and each result
links to its JSON file relative to the site folder. Pages start with
:data:`~bench.core.leaderboard.SITE_HEADER` (stale ones are removed by the markdown's stale
logic), hold no clock, and are rewritten only when their bytes change.

:func:`serve` (``bench leaderboard --serve``) serves the folder holding both the site and
the results on localhost until Ctrl-C.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench.core.io import write_if_changed
from bench.core.leaderboard import IndexView, SuiteView
from bench.core.results import slug
from bench.core.site.html import index_page, relative, suite_page
from bench.core.site.static import CSS, JS
from bench.errors import UsageError

Page = tuple[SuiteView, Sequence[str], Sequence[Path]]  # view, section lines, plot paths


def write_site(site_dir: Path, pages: Sequence[Page], index: IndexView, results_root: Path,
               sources: dict[int, Path] | None = None) -> list[Path]:
    """Write the site into ``site_dir``: a page per suite, ``index.html``, ``site.css`` and
    ``site.js``. ``sources`` maps ``id(record)`` to the file it was read from (default: where
    :class:`~bench.core.results.ResultStore` would write it). Returns every path, changed or
    not."""
    from bench.core.results import ResultStore

    site_dir = Path(site_dir)
    site_dir.mkdir(parents=True, exist_ok=True)
    store = ResultStore(results_root)

    def where(record: dict[str, Any]) -> str | None:
        path = (sources or {}).get(id(record)) or store.path_for(record)
        return relative(path, site_dir) if Path(path).is_file() else None

    suites = [view.suite for view, _, _ in pages]
    written = []
    for view, sections, plots in pages:
        text = suite_page(view, sections=sections, suites=suites, where=where,
                          plots=[relative(p, site_dir) for p in plots])
        path = site_dir / f"{slug(view.suite)}.html"
        write_if_changed(path, text)
        written.append(path)
    for name, text in (("index.html", index_page(index, suites)), ("site.css", CSS),
                       ("site.js", JS)):
        write_if_changed(site_dir / name, text)
        written.append(site_dir / name)
    return written


class _Handler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the command prints its URL once


def serve_root(site_dir: Path, results_root: Path) -> Path:
    """The folder to serve: the closest one holding both the site and the results (so the
    result links work), unless that is more than two levels above the site; then the site."""
    site = Path(site_dir).resolve()
    common = Path(os.path.commonpath([site, Path(results_root).resolve()]))
    return common if len(site.relative_to(common).parts) <= 2 else site


def make_server(site_dir: Path, results_root: Path, port: int = 8000,
                host: str = "127.0.0.1") -> tuple[ThreadingHTTPServer, str]:
    """A server for :func:`serve_root` on ``host:port`` (0: any free port) and the URL of
    the site's index; a port in use is a one-line :class:`UsageError`."""
    root = serve_root(site_dir, results_root)
    handler = functools.partial(_Handler, directory=str(root))
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except (OSError, OverflowError) as exc:
        why = getattr(exc, "strerror", None) or str(exc)
        raise UsageError(f"--port {port}: cannot listen on {host}:{port} ({why}); pass "
                         "another --port, or --port 0 for any free one") from None
    rel = Path(site_dir).resolve().relative_to(root).as_posix()
    path = "" if rel == "." else quote(rel) + "/"
    return server, f"http://{host}:{server.server_address[1]}/{path}index.html"


def _say(text: str) -> None:
    print(text, flush=True)


def serve(site_dir: Path, results_root: Path, port: int = 8000, *,
          say: Callable[[str], None] = _say) -> int:
    """Serve the site until Ctrl-C (then close the socket and return 0)."""
    import signal

    # Ctrl-C must stop the server even when this process inherited SIGINT blocked or
    # ignored (e.g. started from a process hosting a JVM, which blocks signals in its
    # threads): unblock it and restore Python's KeyboardInterrupt handler.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.default_int_handler)
    server, url = make_server(site_dir, results_root, port)
    say(f"serving {serve_root(site_dir, results_root)} at {url} (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        say("stopped")
    finally:
        server.server_close()
    return 0
