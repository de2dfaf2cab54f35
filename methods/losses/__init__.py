"""Pure distillation losses over tensors, registered by name (lazy: no torch at import)."""

from __future__ import annotations

from bench.registry import Registry

LOSSES: Registry = Registry("loss", discover="methods.losses")


def get_loss(name: str):
    """The loss callable registered as ``name``."""
    return LOSSES.get(name)


# Functions re-exported without importing torch at ``import methods.losses`` (PEP 562).
_LAZY = {"aligndistil_teacher": "methods.losses.aligndistil",
         "aligndistil_loss": "methods.losses.aligndistil",
         "dpo_loss": "methods.losses.dpo", "sequence_logps": "methods.losses.dpo"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
