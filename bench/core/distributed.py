"""The processes of one run under ``accelerate launch``: who writes, sharding and gathering.

One process (``python -m bench run``, ``bench run``) is the common case and costs nothing
here: no process group is created and every function answers as for a single process.
Under ``accelerate launch --num_processes N`` (``WORLD_SIZE`` = N), accelerate's
``PartialState`` joins the process group (gloo on CPU, NCCL on GPUs) and:

- only the main process writes shared files (result records, caches, plots); the others
  compute with it and read what it wrote after a :func:`barrier`;
- work that splits into independent chunks (batches of prompts to generate, pairs to
  score) is spread round-robin with :func:`map_sharded` and every process receives every
  output in input order, so what follows is the same computation in each process;
- training shards its batches through the trainer (``methods.trainer``).

A launch whose processes did not join one group (on a machine without a GPU
``accelerate launch --num_processes 2`` without ``--multi_gpu`` and ``ACCELERATE_USE_CPU=1``
starts independent single-process runs that would each write the same files) is refused by
:func:`check_launch` before any work.

accelerate is imported inside the functions only, and only when ``WORLD_SIZE`` > 1.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from bench.errors import UsageError

T = TypeVar("T")
R = TypeVar("R")
CPU_LAUNCH = ("ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N "
              "-m bench run ...")


def launched_processes() -> int:
    """The process count the launcher announced (``WORLD_SIZE``; 1 without a launcher)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def _state() -> Any:
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # Accelerator reads ACCELERATE_USE_CPU itself; PartialState, created first here, does not.
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def process_count() -> int:
    return _state().num_processes if launched_processes() > 1 else 1


def process_index() -> int:
    return _state().process_index if launched_processes() > 1 else 0


def is_main() -> bool:
    """Whether this process writes the run's shared files."""
    return process_index() == 0


def barrier() -> None:
    """Wait until every process reaches this line (nothing with one process)."""
    if process_count() > 1:
        _state().wait_for_everyone()


def check_launch() -> None:
    """Refuse a launch whose processes did not form one group, before any work."""
    announced = launched_processes()
    if announced > 1 and _state().num_processes != announced:
        raise UsageError(
            f"WORLD_SIZE={announced} but accelerate joined {_state().num_processes} "
            "process(es) into the run, so each would train and write on its own; on a "
            f"machine without GPUs launch with `{CPU_LAUNCH}`")


def gather(values: Sequence[T]) -> list[T]:
    """Every process's ``values`` concatenated in process order (the input, alone)."""
    if process_count() == 1:
        return list(values)
    from accelerate.utils import gather_object

    return list(gather_object(list(values)))


def map_sharded(chunks: Sequence[T], fn: Callable[[T], R]) -> Iterator[tuple[T, R]]:
    """``(chunk, fn(chunk))`` for every chunk in order, each chunk computed by one process.

    Chunks go round-robin: in round ``r`` process ``i`` computes chunk ``r * N + i``; the
    round's outputs are gathered, so every process yields every pair and a caller that
    saves per round (a cache) keeps whole rounds when interrupted. With one process this
    is ``fn`` over the chunks, lazily."""
    count = process_count()
    if count == 1:
        for chunk in chunks:
            yield chunk, fn(chunk)
        return
    index = process_index()
    for start in range(0, len(chunks), count):
        group = chunks[start:start + count]
        mine = fn(group[index]) if index < len(group) else None
        outputs = gather([mine])
        yield from zip(group, outputs[: len(group)], strict=True)  # type: ignore[misc]
