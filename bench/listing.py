"""What ``bench ls`` prints beyond one line per entry: the method x suite matrix, and one
suite in full (``bench ls --suite S``). Reads the registries only (no torch)."""

from __future__ import annotations

from bench.suite import SuiteMetadata


def method_suite_matrix() -> tuple[list[str], dict[str, set[str]]]:
    """(suite names, method name -> the suites it runs on), from the registry entries."""
    from bench.suite import SUITES
    from methods import METHODS

    runs: dict[str, set[str]] = {}
    for e in METHODS.entries():
        runs.setdefault(e.name, set()).update(e.meta.get("suites", ()))
    return SUITES.names(), runs


def print_matrix() -> None:
    from bench.suite import SUITES

    suites, runs = method_suite_matrix()
    users = [s for s in suites if SUITES.entry(s).meta["metadata"].user_loss]
    rows = sorted(runs) + ["custom-<fn> (--loss)"]
    width = max(len(r) for r in rows)
    print("method x suite (x: runs there; B: the suite's baseline):")
    print(f"  {'':<{width}}  " + "  ".join(suites))
    for name in rows:
        cells = []
        for s in suites:
            here = (s in users) if name.startswith("custom-") else (s in runs.get(name, ()))
            mark = "B" if here and SUITES.entry(s).meta["baseline"] == name else \
                ("x" if here else ".")
            cells.append(f"{mark:^{len(s)}}")
        print((f"  {name:<{width}}  " + "  ".join(cells)).rstrip())


def print_suite(meta: SuiteMetadata) -> None:
    """A suite's metadata, presets, settings and methods (with summaries and citations)."""
    from bench.contracts import methods_for

    print(f"{meta.name} (version {meta.version}, family {meta.family}): {meta.summary}")
    print(f"  citation: {meta.citation}")
    direction = "higher is better" if meta.higher_is_better else "lower is better"
    print(f"  main score: {meta.main_score} ({direction}); baseline: {meta.baseline}; "
          f"test: {meta.test}")
    print(f"  presets: {', '.join(meta.preset_names)}")
    print("  datasets:")
    for d in meta.datasets:
        stand_in = f" [offline stand-in for {d.stands_in_for}]" if d.stands_in_for else ""
        print(f"    {d.id}: {d.description}{stand_in}")
    print("  settings (--set KEY=VALUE; the default preset's value):")
    for s in meta.settings:
        flag = "" if s.settable else " (set by a flag)"
        print(f"    {s.name} = {s.default!r}: {s.help}; {s.allowed()}{flag}")
    print("  methods:")
    entries = methods_for(meta.name)
    width = max((len(e.name) for e in entries), default=0)
    for e in entries:
        print(f"    {e.name:<{width}}  {e.summary}  [{e.citation}]")
    if meta.user_loss:
        print(f"    {'custom-<fn>':<{width}}  your loss: bench run --loss file.py:fn "
              f"--suite {meta.name}")
