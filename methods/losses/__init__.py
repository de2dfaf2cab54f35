"""Pure distillation losses over tensors, registered by name (lazy: no torch at import)."""

from __future__ import annotations

from bench.registry import Registry

LOSSES: Registry = Registry("loss", discover="methods.losses")


def get_loss(name: str):
    """The loss callable registered as ``name``."""
    return LOSSES.get(name)
