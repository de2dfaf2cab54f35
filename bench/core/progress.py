"""One progress bar for all long work (reranking, indexing, training, generation).

It draws on stderr, so stdout stays clean for ``--json`` output and pipes, and it is
quiet when disabled or when ``DISTILLBENCH_PROGRESS=0``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress_bar(total: int, label: str, *, enabled: bool = True, done: int = 0,
                 ) -> Iterator[Callable[..., None]]:
    """Yields ``advance(n=1, **fields)``; extra fields (e.g. ``loss=0.3``) are shown too."""
    from bench.core.distributed import is_main

    if not enabled or os.environ.get("DISTILLBENCH_PROGRESS", "1") == "0" or not is_main():
        yield lambda n=1, **fields: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                   MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                   TextColumn("{task.fields[info]}"), console=Console(stderr=True))
    task = bar.add_task(label, total=total, completed=done, info="")

    def advance(n: int = 1, **fields: object) -> None:
        info = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in fields.items())
        bar.update(task, advance=n, **({"info": info} if fields else {}))

    with bar:
        yield advance
