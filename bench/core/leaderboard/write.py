"""``write_leaderboards``: every suite's markdown page and plots, the index and the site
from a results folder, after checking every record; generated pages of suites without
results any more are removed with their plots."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.core.io import write_if_changed
from bench.core.leaderboard.board import build_board
from bench.core.leaderboard.index import index_markdown, index_view, with_status_block
from bench.core.leaderboard.markdown import suite_markdown
from bench.core.leaderboard.tables import HEADER, SITE_HEADER
from bench.core.leaderboard.view import suite_view
from bench.core.results import ResultStore, slug
from bench.errors import UsageError


def _resolve_plot(suite: str, spec: str) -> Callable[..., Any]:
    """The ``module:function`` named by a suite's ``plot``, ``sections`` or
    ``baseline_model`` metadata."""
    module, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError) as exc:
        raise UsageError(f"suite {suite!r}: {spec!r} cannot be loaded ({exc}); give a "
                         "'module:function' (plot: (records, out_dir) -> paths; sections: "
                         "(records) -> markdown lines; baseline_model: model -> model)") from None
    return obj


def paired_model(suite: str, meta: dict[str, Any]) -> Callable[[str], str] | None:
    """The suite's ``baseline_model`` function (see :func:`~bench.core.leaderboard.board.
    baseline_row`), or None."""
    spec = meta.get("baseline_model")
    return _resolve_plot(suite, spec) if spec else None


def _suite_meta(name: str, suites: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    """Registry metadata (cheap, no suite import) overlaid with the caller's."""
    from bench.suite import SUITES

    meta = dict(SUITES.entry(name).meta) if name in SUITES else {}
    meta.update((suites or {}).get(name, {}))
    return meta


def _licences(meta: dict[str, Any]) -> dict[str, str]:
    """Dataset id -> licence, from the suite's metadata (registered suites and plug-ins)."""
    md = meta.get("metadata")
    return {d.id: d.licence for d in getattr(md, "datasets", ()) if d.licence}


def _known_suites(items: Sequence[tuple[Path, dict[str, Any]]], results_root: Path,
                  suites: dict[str, dict[str, Any]] | None) -> None:
    """Every record names a registered suite (plug-ins included) or one the caller describes
    in ``suites``; an unknown name would otherwise get a page of its own."""
    from bench.suite import SUITES

    known = set(SUITES.names()) | set(suites or {})
    for path, record in items:
        if record["suite"] not in known:
            raise UsageError(
                f"{path}: field 'suite': unknown suite {record['suite']!r} (known: "
                f"{', '.join(sorted(known))}; `bench ls` lists them); fix the field or move the "
                f"file out of {results_root}")


def _is_generated(path: Path, header: str = HEADER) -> bool:
    """True for a file whose first line is ``header`` (the generator's mark)."""
    try:
        with path.open("rb") as handle:
            first = handle.readline(len(header.encode()) + 3)
    except OSError:
        return False
    return first.rstrip(b"\r\n") == header.encode()


def _remove_stale(out_dir: Path, live: Iterable[str], keep: Iterable[Path]) -> list[Path]:
    """Delete generated pages of suites that no longer have results, and every plot this
    run did not write.

    A page is ``out_dir/<suite slug>.md`` starting with :data:`HEADER` (hand-written markdown
    is never touched; ``README.md`` is the index, rewritten anyway), or its site page
    ``out_dir/site/<suite slug>.html`` starting with :data:`SITE_HEADER`. A suite's plots
    are the PNGs named ``<suite slug>_*.png`` (the suite with the longest matching name owns
    one). Those of a suite without results go with its page; those of a live suite that this
    run did not write go too (a dataset whose results left, a plot with nothing to show), so
    the plots, like the pages, follow from the result files alone. Returns the removed paths.
    """
    if not out_dir.is_dir():
        return []
    live_set, keep_set = set(live), {p.resolve() for p in keep}
    stale = [p.stem for p in sorted(out_dir.glob("*.md"))
             if p.name != "README.md" and p.stem not in live_set and _is_generated(p)]
    owners = sorted([*live_set, *stale], key=len, reverse=True)
    removed = [out_dir / f"{s}.md" for s in stale]
    for png in sorted(out_dir.glob("*.png")):
        owner = next((s for s in owners if png.name.startswith(f"{s}_")), None)
        if owner is not None and png.resolve() not in keep_set:
            removed.append(png)
    removed += [p for p in sorted((out_dir / "site").glob("*.html"))
                if p.stem not in live_set | {"index"} and p.resolve() not in keep_set
                and _is_generated(p, SITE_HEADER)]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def write_leaderboards(results_root: Path, out_dir: Path, *,
                       suites: dict[str, dict[str, Any]] | None = None,
                       allow_empty: bool = False, site: bool = False,
                       readme: Path | None = None) -> list[Path]:
    """Write ``out_dir/<suite>.md`` per suite, its plots, and the ``README.md`` index; with
    ``site``, also the static web site ``out_dir/site/`` (:mod:`bench.core.site`); with
    ``readme`` (the project's README), also its generated status block, the part between
    :data:`~bench.core.leaderboard.index.README_START` and ``README_END`` (untouched when
    the file has no such markers).

    ``suites`` maps a suite name to metadata (``baseline``, ``title``, ``description``,
    ``plot`` as ``"module:attr"``, optionally ``sections`` (``"module:attr"`` returning
    markdown lines for suite-specific tables), ``test``, ``correction``, ``alpha`` and
    ``metadata``, the :class:`~bench.suite.SuiteMetadata` whose datasets give the licences),
    overlaid on the suite registry's metadata. Returns every generated path (markdown and
    plots, then the site's files), changed or not; unchanged files are left untouched so
    their mtimes and git status stay quiet.

    Every record is checked before anything is written: it must sit in its suite's folder and
    name a known suite (registered, plug-ins included, or a key of ``suites``), and no two
    files may hold the same result. A results folder without records is a
    :class:`UsageError` unless ``allow_empty`` (then the index says "No results yet").
    Generated pages of suites without results any more (recognised by :data:`HEADER`, or
    :data:`SITE_HEADER` in ``site/``, on their first line) are removed with their plots;
    other files in ``out_dir`` are left alone.
    """
    out_dir = Path(out_dir)
    items = ResultStore(results_root).items()
    if not items and not allow_empty:
        raise UsageError(f"{results_root}: no result files (<suite>/<dataset>/*.json); run "
                         "`bench run --method <m> --suite <s>` first, or pass --allow-empty to "
                         "write an empty index and remove the generated suite pages")
    _known_suites(items, Path(results_root), suites)
    records = [r for _, r in items]
    names = sorted({r["suite"] for r in records})
    built = []
    for suite in names:  # every board is computed (and checked) before any file is written
        meta = _suite_meta(suite, suites)
        srecs = [r for r in records if r["suite"] == suite]
        test = meta.get("test", "auto")
        correction = meta.get("correction", "holm")
        built.append((suite, meta, srecs, test,
                      build_board(suite, srecs, meta.get("baseline"), test, correction,
                                  meta.get("higher_is_better", True),
                                  paired_model(suite, meta))))
    written: list[Path] = []
    pages, indexed = [], []
    for suite, meta, srecs, test, board in built:
        plots: list[Path] = []
        if meta.get("plot"):
            plots = [Path(p) for p in _resolve_plot(suite, meta["plot"])(srecs, out_dir)]
        sections = (list(_resolve_plot(suite, meta["sections"])(srecs))
                    if meta.get("sections") else [])
        view = suite_view(suite, board, baseline=meta.get("baseline"), test=test,
                          correction=meta.get("correction", "holm"),
                          alpha=float(meta.get("alpha", 0.05)), title=meta.get("title"),
                          description=meta.get("description"), licences=_licences(meta))
        text = suite_markdown(view, sections=sections, plots=[
            Path(os.path.relpath(p, out_dir)).as_posix() for p in plots])
        path = out_dir / f"{slug(suite)}.md"
        write_if_changed(path, text)
        written += [path, *plots]
        pages.append((view, tuple(sections), tuple(plots)))
        indexed.append((suite, view.title, meta, board))
    index_page = index_view(indexed)
    index = out_dir / "README.md"
    write_if_changed(index, index_markdown(index_page, site))
    if readme is not None and readme.is_file():  # the project README's generated include
        prefix = Path(os.path.relpath(out_dir, readme.parent)).as_posix() + "/"
        updated = with_status_block(readme.read_text(encoding="utf-8"), index_page, prefix)
        if updated is not None:
            write_if_changed(readme, updated)
    site_paths: list[Path] = []
    if site:
        from bench.core.site import write_site

        site_paths = write_site(out_dir / "site", pages, index_page, Path(results_root),
                                sources={id(r): p for p, r in items})
    _remove_stale(out_dir, {slug(s) for s in names}, [*written, index, *site_paths])
    return [*written, index, *site_paths]
