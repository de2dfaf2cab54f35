"""Training side: distillation recipes (one file each), pure losses, one shared trainer."""

from __future__ import annotations

from bench.registry import Registry

# Entries are "module:attr" strings; bench ls reads name, summary, citation and suites only.
METHODS: Registry = Registry("method", discover="methods", exclude=("methods.losses",))
