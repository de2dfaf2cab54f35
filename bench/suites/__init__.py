"""Suite registry, discovered from ``bench/suites/<suite>.py`` files without importing them.

A suite file declares ``REGISTRY = [{"name": "beir", "target": "BeirSuite", "summary": ...,
"citation": ..., "baseline": "bm25", "main_score": "ndcg@10"}]``; the extra keys are cheap
metadata that ``bench ls`` and the leaderboard read without importing torch or pyserini.
"""

from __future__ import annotations

from bench.registry import Registry
from bench.suites.base import Suite

SUITES: Registry[type[Suite]] = Registry("suite", base=Suite, discover="bench.suites")
