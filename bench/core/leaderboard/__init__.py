"""Leaderboards: result records -> deterministic markdown (+ PNG plots) and a static site.

A leaderboard is a pure function of the result files, so it can be regenerated and diffed in
review: no clock (dates come only from records), sorted orders everywhere, fixed float
formatting (4 decimals), and files are rewritten only when their bytes change.

Each suite's numbers are computed once into a :class:`SuiteView` (plain-text tables, one
:class:`RowInfo` per row with its records): :func:`suite_markdown` writes the markdown page
from it and :mod:`bench.core.site` the web page, so both show the same cells, marks, p
values, MDEs and notes. Dataset licences come from the suites' ``DatasetSpec.licence``,
model and asset licences from :mod:`bench.core.assets.specs`.

The modules, in the order the data flows through them:

* :mod:`~bench.core.leaderboard.board`: records grouped into rows and cells, each cell
  tested against its baseline row, the p-values corrected (a suite's ``Board``; shared with
  ``bench compare``);
* :mod:`~bench.core.leaderboard.tables`: the plain-text :class:`Table`, number formatting,
  markdown escaping and the generated pages' headers;
* :mod:`~bench.core.leaderboard.view`: a suite's page as plain data (:class:`SuiteView`);
* :mod:`~bench.core.leaderboard.markdown`: a suite's markdown page;
* :mod:`~bench.core.leaderboard.index`: the index page (the suites, "Where things stand",
  "Packaged assets");
* :mod:`~bench.core.leaderboard.write`: :func:`write_leaderboards` (checks, plots, pages,
  index, site, removal of stale pages).

Conventions a reader of the tables needs (they are also printed in each table's legend):

* A *row* is a (method, model) pair; a *cell* is one dataset of a row over its seeds. A cell
  shows the mean of the record's main score over seeds and, with more than one seed, the
  sample standard deviation (ddof=1), e.g. ``0.7712 ± 0.0031``.
* Mean column: the unweighted mean of the row's cell means, only for rows with a result on
  every dataset of the suite (a mean over fewer datasets would rank rows on different data).
* Significance: a two-sided test of the row's main score against the baseline's on the same
  dataset, chosen by :func:`bench.core.stats.compare`'s rule: with several training seeds on
  either side, Welch's t on seed means (training randomness in the variance); with one run
  each, item-paired (exact sign-flip up to 16 items, paired t beyond). The baseline row is
  the baseline method with the *same model* when it has results on that dataset, else the
  model the suite's metadata pairs the row's model with (``baseline_model``: specbench
  pairs a draft row with plain decoding of its target in its dtype), else the baseline
  method's only model there (BM25 and other model-free baselines). When the
  baseline has several models and none matches, no test is run rather than pick one
  arbitrarily. The p-values of one table are corrected together (Holm by default), the
  marker uses the corrected p, and every Δ stands beside the minimum detectable effect of
  its test (power 0.8), so "not significant" can be told apart from "could not tell".
* Params and ms/item (after Model in the main and "All metrics" tables), from the records'
  optional ``cost`` (:mod:`bench.core.cost`): the row's parameter count (``22.7M``; a range
  where its records differ) and its milliseconds per item on the recorded hardware (3
  significant figures; the mean over datasets of each dataset's mean over seeds); ``—`` where
  no record has it. What one item is differs per suite: the legend lists the records'
  distinct ``per`` texts.
* ``partial`` implementations and offline stand-in datasets are labelled in every table, so a
  substitute is never presented as the real benchmark.
* Suite descriptions are trusted markdown from the suite's own code; every other string that
  comes from records (names, notes, metrics, hardware) goes through :func:`escape_md` (and
  through ``html.escape`` on the site).
"""

from __future__ import annotations

from bench.core.leaderboard.board import (
    CORRECTION_NAMES,
    TEST_NAMES,
    Board,
    CellStat,
    Key,
    build_board,
    cell_stat,
    check_test,
    group_rows,
    main_metrics,
    mean_std,
    row_method,
    seed_mean_items,
    strip_limit,
)
from bench.core.leaderboard.index import (
    ASSETS_LEGEND,
    STATUS_LEGEND,
    IndexView,
    assets_table,
    index_markdown,
    index_view,
)
from bench.core.leaderboard.markdown import render_suite, suite_markdown
from bench.core.leaderboard.tables import (
    HEADER,
    MARK,
    SITE_HEADER,
    Table,
    cell_text,
    commit_label,
    cost_cells,
    distinct,
    escape_md,
    fmt,
    fmt_mde,
    fmt_p,
    fmt_params,
    fmt_sig,
    hardware_label,
    markdown_table,
)
from bench.core.leaderboard.view import (
    COST_HEADER,
    MODELS_LEGEND,
    DatasetInfo,
    RowInfo,
    SuiteView,
    suite_view,
)
from bench.core.leaderboard.write import write_leaderboards

__all__ = [
    "ASSETS_LEGEND", "CORRECTION_NAMES", "COST_HEADER", "HEADER", "MARK", "MODELS_LEGEND",
    "SITE_HEADER", "STATUS_LEGEND", "TEST_NAMES", "Board", "CellStat", "DatasetInfo",
    "IndexView", "Key", "RowInfo", "SuiteView", "Table", "assets_table", "build_board",
    "cell_stat", "cell_text", "check_test", "commit_label", "cost_cells", "distinct",
    "escape_md", "fmt", "fmt_mde", "fmt_p", "fmt_params", "fmt_sig", "group_rows",
    "hardware_label", "index_markdown", "index_view", "main_metrics", "markdown_table",
    "mean_std", "render_suite", "row_method", "seed_mean_items", "strip_limit",
    "suite_markdown", "suite_view", "write_leaderboards",
]
