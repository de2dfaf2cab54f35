#!/usr/bin/env python
"""A prepared GPU check: run on a lent GPU what distillbench runs there, against a CPU reference.

    python scripts/gpu_check.py [--device cuda] [--quick] [--keep-going] [--only A,B]
                                [--json PATH] [--list]

Every component is one row of the table printed at the end: its wall seconds (device run
plus CPU reference), the largest difference to the same computation on CPU, the limit it
is held to, the device, the dtype of the device run, and the status. The first failing row
stops the run with ``FAILED <component>: <why>`` after the table so far (exit 1);
``--keep-going`` runs every row and fails at the end instead. Success prints the table and
``all N checks passed``. See docs/gpu-check.md for what each row checks and why.

Built for a lent machine with no network and no packaged assets: every model is a tiny
randomly initialised one built here (a SmolLM2-shaped Llama, vocabulary 512, width 64; tiny
ViTs through ``transformers.ViTConfig``), and each row imports what it needs inside its own
function, so a missing optional package fails that row only, with its name. ``lm_eval``,
``ranx``, ``pyserini`` and ``gguf`` are hidden from the import system on every machine
(they are absent on the lent one), so a CPU run here proves the check never needs them.

``GPU_CHECK_FAIL=<component>[,<component>...]`` (for the tests) marks those rows failed
after they ran, to exercise the failure path.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

# Offline, quiet, before anything imports huggingface_hub or the progress bar.
for _key, _value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
                     ("HF_DATASETS_OFFLINE", "1"), ("DISTILLBENCH_PROGRESS", "0"),
                     ("TOKENIZERS_PARALLELISM", "false"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
                     ("TRANSFORMERS_VERBOSITY", "error")):
    os.environ.setdefault(_key, _value)

# The rows live in scripts/gpu_checks/ (a package beside this file). Running this file puts
# scripts/ first on sys.path already, but not under ``python -P`` / PYTHONSAFEPATH or when the
# file is imported from elsewhere, so it is added here too.
SCRIPTS = Path(__file__).resolve().parent
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))
ROOT = SCRIPTS.parent
if str(ROOT) not in sys.path:  # importable without installation (the lent machine)
    sys.path.insert(0, str(ROOT))

# Packages the lent machine does not have: hidden here too (``import x`` raises ImportError,
# ``importlib.util.find_spec(x)`` is None), so a CPU run proves no row needs them.
ABSENT = ("lm_eval", "ranx", "pyserini", "gguf")
for _name in ABSENT:
    sys.modules.setdefault(_name, None)  # type: ignore[arg-type]

import torch  # noqa: E402  (after the environment above)
from gpu_checks.common import CheckFailed, Ctx, Outcome, seed_of  # noqa: E402
from gpu_checks.losses import make_loss_check  # noqa: E402
from gpu_checks.retrieval import check_dear_stage1, check_dear_stage2  # noqa: E402
from gpu_checks.specdec import check_head, check_specdec  # noqa: E402
from gpu_checks.trainer import check_trainer  # noqa: E402
from gpu_checks.vision import check_vision_trg  # noqa: E402

FAIL_ENV = "GPU_CHECK_FAIL"


@dataclass
class Row:
    component: str
    seconds: float
    diff: float | None
    limit: str
    device: str
    dtype: str
    status: str
    note: str = ""


# ------------------------------------------------------------------------------- runner


def components() -> list[tuple[str, Callable[[Ctx], Outcome]]]:
    """Every row, in run order: the cheap numerical rows first, whole recipes last."""
    try:
        from methods.losses import LOSSES

        rows = [(f"loss:{name}", make_loss_check(name)) for name in LOSSES.names()]
    except Exception as exc:  # noqa: BLE001 - a broken registry is one failed row
        def broken(ctx: Ctx, exc: Exception = exc) -> Outcome:
            raise CheckFailed(f"the loss registry did not load: {reason_of(exc)}")

        rows = [("loss:registry", broken)]
    rows += [("trainer", check_trainer), ("vision_trg", check_vision_trg),
             ("specdec", check_specdec),
             ("eagle_step", lambda ctx: check_head(ctx, "eagle")),
             ("fspad_step", lambda ctx: check_head(ctx, "fspad")),
             ("dear_stage1_step", check_dear_stage1), ("dear_stage2_step", check_dear_stage2)]
    return rows


def reason_of(exc: BaseException) -> str:
    """One line: the row's own verdict, the missing package, or the exception."""
    text = " ".join(str(exc).split())
    if isinstance(exc, CheckFailed):
        return text
    if isinstance(exc, ImportError):
        return f"missing package {exc.name or '?'} ({type(exc).__name__}: {text[:200]})"
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_row(name: str, check: Callable[[Ctx], Outcome], ctx: Ctx, forced: set[str]
            ) -> tuple[Row, str | None]:
    start = time.perf_counter()
    outcome, reason = None, None
    try:
        torch.manual_seed(seed_of(name))
        outcome = check(ctx)
        sync(ctx.device)
        if name in forced:
            reason = f"forced by {FAIL_ENV}"
    except Exception as exc:  # noqa: BLE001 - every failure becomes one row and one line
        reason = reason_of(exc)
        outcome = getattr(exc, "outcome", None)
        if not isinstance(exc, CheckFailed):
            traceback.print_exc(file=sys.stderr)
    seconds = time.perf_counter() - start
    o = outcome or Outcome(None, "-", "-")
    row = Row(name, seconds, o.diff, o.limit, str(ctx.device), o.dtype,
              "ok" if reason is None else "FAILED", o.note)
    return row, reason


def format_table(rows: list[Row]) -> str:
    head = ("component", "seconds", "max |diff|", "limit", "device", "dtype", "status")
    body = [(r.component, f"{r.seconds:.2f}",
             "-" if r.diff is None else (f"{r.diff:.0f}" if r.limit.endswith("tokens")
                                         else f"{r.diff:.2e}"),
             r.limit, r.device, r.dtype, r.status) for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, body)])


def environment(dev: torch.device) -> dict[str, str]:
    import platform

    info = {"python": platform.python_version(), "torch": torch.__version__,
            "device": str(dev)}
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        info["transformers"] = "missing"
    if dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
        info["cuda"] = str(torch.version.cuda)
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None,
                        help="cuda, cuda:N or cpu (default: cuda if torch sees a GPU, else cpu)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer prompts and tokens in the decoding rows (CI on a CPU)")
    parser.add_argument("--keep-going", action="store_true",
                        help="run every row even after a failure; exit 1 at the end")
    parser.add_argument("--only", default="",
                        help="comma-separated components to run (see --list)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--list", action="store_true", help="print the components and exit")
    args = parser.parse_args(argv)

    from bench.core import device as policy
    from bench.errors import UsageError

    rows_all = components()
    if args.list:
        print("\n".join(name for name, _ in rows_all))
        return 0
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = sorted(set(wanted) - {name for name, _ in rows_all})
    if unknown:
        print(f"gpu_check: unknown component(s) {', '.join(unknown)}; see --list",
              file=sys.stderr)
        return 2
    selected = [(n, c) for n, c in rows_all if not wanted or n in wanted]
    try:
        dev = policy.resolve_device(args.device or "auto")
    except UsageError as exc:
        print(f"gpu_check: {exc}", file=sys.stderr)
        return 2
    policy.set_current(dev)
    if dev.type == "cuda":  # float32 means float32: no TF32 in the comparisons
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    env = environment(dev)
    print("gpu_check: " + ", ".join(f"{k} {v}" for k, v in env.items()), flush=True)
    forced = {f.strip() for f in os.environ.get(FAIL_ENV, "").split(",") if f.strip()}

    rows: list[Row] = []
    failures: list[str] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        ctx = Ctx(dev, args.quick, Path(tmp))
        for name, check in selected:
            row, reason = run_row(name, check, ctx, forced)
            rows.append(row)
            print(f"[gpu_check] {row.component}: {row.status} ({row.seconds:.2f} s)",
                  file=sys.stderr, flush=True)
            if reason is not None:
                failures.append(f"FAILED {name}: {reason}")
                if not args.keep_going:
                    break
    total = time.perf_counter() - started
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"environment": env, "quick": args.quick, "seconds": round(total, 2),
             "rows": [asdict(r) for r in rows], "failures": failures}, indent=2))
    if failures:
        print("\n".join(failures), flush=True)
        return 1
    print(f"all {len(rows)} checks passed ({total:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
