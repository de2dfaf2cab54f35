"""Head weights at chosen training steps, for the suite's tau-vs-steps curve.

The ``specbench`` suite's ``curve_steps`` (:mod:`bench.specdec.curve`) names optimizer
step counts; while a head trains, :class:`StepSnapshots` saves its weights as they were
after each of those steps, one safetensors file per step in ``<training folder>/curve/``.
The weights after ``N`` steps are the ones the ``N + 1``-th step's loss is computed with,
so they are taken at the start of that step function call (the trainer's own state says
how many steps were taken), and the last step's from the trained model. Saving reads
weights only (no RNG, no gradient), so training ends with the same head with or without a
curve. A resumed run replays the steps after its checkpoint exactly (the trainer resumes
exactly), so a point lost with a kill is taken again with the same weights, and a point
already on disk is not rewritten.

:class:`HeadSnapshot` is what the suite reads from the draft's ``curve_snapshots``:
``steps``, ``digest`` (sha256 of the file, the suite's cache key) and ``load()``, a copy of
the draft with those weights, in the dtype and on the device the draft decodes in then.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SNAPSHOT_FOLDER = "curve"


class StepSnapshots:
    """Saves a model's state dict after each of ``steps`` optimizer steps, once."""

    def __init__(self, directory: Path, steps: Sequence[int]) -> None:
        self.directory, self.steps = Path(directory), frozenset(steps)

    def path(self, step: int) -> Path:
        return self.directory / f"step-{step:08d}.safetensors"

    def capture(self, step: int, model: Any) -> None:
        """Save ``model``'s weights as the snapshot after ``step`` steps, if that step is
        wanted and not saved yet (main process only)."""
        from bench.core.distributed import is_main
        from bench.core.io import atomic_save_tensors

        if step not in self.steps or self.path(step).is_file() or not is_main():
            return
        atomic_save_tensors({name: t.detach().to("cpu", copy=True)
                             for name, t in model.state_dict().items()}, self.path(step))

    def available(self) -> dict[int, Path]:
        """The saved snapshots, by step."""
        return {s: self.path(s) for s in sorted(self.steps) if self.path(s).is_file()}


@dataclass
class HeadSnapshot:
    """One curve point's weights, read into a copy of ``base`` (a FeatureDraft) on load."""

    steps: int
    path: Path
    base: Any = field(repr=False)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    def load(self) -> Any:
        """A draft with the snapshot's weights: the base draft's head shape, target
        embeddings, LM head and draft vocabulary, in the base head's current dtype (the
        suite casts the base for decoding before the curve is drawn); empty KV cache."""
        from safetensors.torch import load_file

        head = copy.deepcopy(self.base.head)
        head.load_state_dict(load_file(str(self.path)))  # copies into head's dtype/device
        draft = copy.copy(self.base)  # shares the frozen target weights, not the cache
        draft.head = head.eval()
        draft.reset()
        return draft


def attach(draft: Any, snapshots: StepSnapshots) -> Any:
    """Offer ``snapshots`` on ``draft`` as ``curve_snapshots`` (the suite's protocol)."""
    draft.curve_snapshots = tuple(HeadSnapshot(s, p, draft)
                                  for s, p in snapshots.available().items())
    return draft
