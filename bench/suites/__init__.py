"""Suite registry, discovered without importing any suite.

Every module under ``bench/`` that declares ``NAME = SuiteMetadata(...)`` and a ``Suite``
subclass with ``metadata = NAME`` is a suite (see :mod:`bench.suite`), as is every suite in
a plug-in (:mod:`bench.plugins`). Each entry's ``meta`` is its metadata's
``leaderboard_meta()``, with the :class:`~bench.suite.SuiteMetadata` under ``"metadata"``.
"""

from __future__ import annotations

from bench.registry import Registry
from bench.suite import Suite

SUITES: Registry[type[Suite]] = Registry("suite", base=Suite, discover="bench")
