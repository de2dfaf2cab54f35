"""The ``loss:<name>`` rows: every registered loss on its recipe's inputs, float32 on the
device vs float64 on CPU (value, parts, gradients), plain and with ``chunk_size=2``."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .common import CheckFailed, Ctx, Outcome, compare, seed_of, verdict

LOSS_TOL = 1e-4  # float32 on the device vs float64 on CPU: |diff| <= tol + tol * |ref|


# ------------------------------------------------------------------- losses: input recipes


@dataclass
class LossCase:
    """Inputs of one registered loss (CPU float64) and how to call it.

    ``call(fn, x, modules, chunk_size)`` returns named outputs, ``"loss"`` among them (the
    one differentiated); ``grad`` names the inputs whose gradients are compared too."""

    tensors: dict[str, torch.Tensor]
    grad: tuple[str, ...]
    call: Callable[..., dict[str, torch.Tensor]]
    modules: dict[str, torch.nn.Module] = field(default_factory=dict)


def _mask() -> torch.Tensor:  # 8 of 10 tokens: chunk_size=2 gives 4 chunks
    return torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)


def _randn(g: torch.Generator, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


def _logits(g: torch.Generator) -> torch.Tensor:
    return _randn(g, 2, 5, 64, scale=2.0)


def case_divergence(g: torch.Generator) -> LossCase:
    """The library signature: fn(student_logits, teacher_logits, *, mask, temperature,
    chunk_size)."""
    def call(fn, x, m, chunk):
        return {"loss": fn(x["s"], x["t"], mask=x["mask"], temperature=2.0, chunk_size=chunk)}

    return LossCase({"s": _logits(g), "t": _logits(g), "mask": _mask()}, ("s",), call)


def case_dac_kl(g: torch.Generator) -> LossCase:
    from methods.losses.mgsr import DACClipNet

    torch.manual_seed(int(g.initial_seed()))
    net = DACClipNet(top_n=8, hidden=16).double()

    def call(fn, x, m, chunk):
        fixed = fn(x["s"], x["t"], mask=x["mask"], chunk_size=chunk)
        learned = fn(x["s"], x["t"], m["net"], mask=x["mask"], chunk_size=chunk)
        return {"loss": fixed + learned, "fixed_bounds": fixed, "clip_net": learned}

    return LossCase({"s": _logits(g), "t": _logits(g), "mask": _mask()}, ("s",), call,
                    {"net": net})


def case_span(g: torch.Generator) -> LossCase:
    def call(fn, x, m, chunk):
        l2 = fn(x["s"], x["t"], mask=x["mask"], chunk_size=chunk)
        kl = fn(x["s"], x["t"], mask=x["mask"], distance="kl", chunk_size=chunk)
        return {"loss": l2 + kl, "l2": l2, "kl": kl}

    return LossCase({"s": _logits(g), "t": _logits(g), "mask": _mask()}, ("s",), call)


def case_aligndistil(g: torch.Generator) -> LossCase:
    def call(fn, x, m, chunk):
        return {"loss": fn(x["s"], x["dpo"], x["rev"], mask=x["mask"], chunk_size=chunk)}

    return LossCase({"s": _logits(g), "dpo": _logits(g), "rev": _logits(g), "mask": _mask()},
                    ("s",), call)


def case_dpo(g: torch.Generator) -> LossCase:
    def call(fn, x, m, chunk):
        from methods.losses.dpo import sequence_logps

        logps = [sequence_logps(x[k], x[f"y_{k[-1]}"], x["mask"])
                 for k in ("pol_c", "pol_r", "ref_c", "ref_r")]
        loss, chosen, rejected = fn(*logps, beta=0.1)
        return {"loss": loss, "chosen_rewards": chosen, "rejected_rewards": rejected}

    tensors = {k: _logits(g) for k in ("pol_c", "pol_r", "ref_c", "ref_r")}
    tensors.update(y_c=torch.randint(0, 64, (2, 5), generator=g),
                   y_r=torch.randint(0, 64, (2, 5), generator=g), mask=_mask())
    return LossCase(tensors, ("pol_c", "pol_r"), call)


def case_semcot_infonce(g: torch.Generator) -> LossCase:
    def call(fn, x, m, chunk):
        return {"loss": fn(x["r"], x["c"], temperature=0.5)}

    return LossCase({"r": _randn(g, 4, 16), "c": _randn(g, 4, 16)}, ("r", "c"), call)


def case_semcot_generator(g: torch.Generator) -> LossCase:
    def call(fn, x, m, chunk):
        loss, parts = fn(x["implicit"], x["reasoning"], x["logits"], x["ids"], mask=x["mask"])
        return {"loss": loss, **parts}

    return LossCase({"implicit": _randn(g, 2, 16), "reasoning": _randn(g, 2, 16),
                     "logits": _logits(g), "ids": torch.randint(0, 64, (2, 5), generator=g),
                     "mask": _mask()}, ("implicit", "logits"), call)


def case_trg_local(g: torch.Generator) -> LossCase:
    def call(fn, x, m, chunk):
        return {"loss": fn(x["s"], x["t"], k=4)}

    return LossCase({"s": _randn(g, 16, 32), "t": _randn(g, 16, 64)}, ("s",), call)


def case_trg_global(g: torch.Generator) -> LossCase:
    def call(fn, x, m, chunk):
        return {"loss": fn(x["s"], x["t"], temperature=0.1)}

    return LossCase({"s": _randn(g, 16, 64), "t": _randn(g, 16, 64)}, ("s",), call)


def case_trg_inner(g: torch.Generator) -> LossCase:
    def call(fn, x, m, chunk):
        return {"loss": fn(x["s"], x["t"])}

    return LossCase({"s": _randn(g, 2, 9, 32), "t": _randn(g, 2, 9, 64)}, ("s",), call)


def case_eagle(g: torch.Generator) -> LossCase:
    def call(fn, x, m, chunk):
        out = fn(x["draft"], x["target"], x["head"], x["mask"], chunk_size=chunk)
        return {"loss": out.loss, "feature": out.feature, "token": out.token}

    return LossCase({"draft": _randn(g, 2, 5, 32), "target": _randn(g, 2, 5, 32),
                     "head": _randn(g, 64, 32, scale=0.3), "mask": _mask()}, ("draft",), call)


def case_fspad(g: torch.Generator) -> LossCase:
    def call(fn, x, m, chunk):
        out = fn(x["logit_h"], x["feature_h"], x["target"], x["head"], x["mask"],
                 chunk_size=chunk)
        return {"loss": out.loss, "feature": out.feature, "token": out.token}

    return LossCase({"logit_h": _randn(g, 2, 5, 32), "feature_h": _randn(g, 2, 5, 32),
                     "target": _randn(g, 2, 5, 32), "head": _randn(g, 64, 32, scale=0.3),
                     "mask": _mask()}, ("logit_h", "feature_h"), call)


def case_dear(g: torch.Generator) -> LossCase:
    def call(fn, x, m, chunk):
        return {"loss": fn(x["s"], x["t"], main="ce+ranknet")}

    return LossCase({"s": _randn(g, 2, 4, scale=2.0), "t": _randn(g, 2, 4, scale=2.0)},
                    ("s",), call)


LOSS_CASES: dict[str, Callable[[torch.Generator], LossCase]] = {
    "mgsr_dac_kl": case_dac_kl, "mgsr_span": case_span, "aligndistil": case_aligndistil,
    "dpo": case_dpo, "semcot_infonce": case_semcot_infonce,
    "semcot_generator": case_semcot_generator, "trg_local": case_trg_local,
    "trg_global": case_trg_global, "trg_inner": case_trg_inner, "eagle_draft": case_eagle,
    "fspad_draft": case_fspad, "dear_pointwise": case_dear,
}


def run_loss(case: LossCase, fn: Callable[..., Any], dev: torch.device, dtype: torch.dtype,
             chunk: int | None) -> dict[str, torch.Tensor]:
    x = {k: v.detach().to(dev, dtype, copy=True) if v.is_floating_point() else v.to(dev)
         for k, v in case.tensors.items()}
    for k in case.grad:
        x[k].requires_grad_(True)
    mods = {k: copy.deepcopy(m).to(dev, dtype) for k, m in case.modules.items()}
    out = case.call(fn, x, mods, chunk)
    out["loss"].backward()
    result = {k: v.detach() for k, v in out.items()}
    result.update({f"grad({k})": x[k].grad for k in case.grad})
    for name, module in mods.items():
        for pname, p in module.named_parameters():
            result[f"grad({name}.{pname})"] = p.grad
    return result


def make_loss_check(name: str) -> Callable[[Ctx], Outcome]:
    def check(ctx: Ctx) -> Outcome:
        import inspect

        from methods.losses import LOSSES

        entry = LOSSES.entry(name)
        build = LOSS_CASES.get(name)
        if build is None:
            if entry.meta.get("signature"):
                raise CheckFailed(f"no inputs for loss {name!r} (its own signature "
                                  f"{entry.meta['signature']}); add a case to "
                                  "scripts/gpu_checks/losses.py LOSS_CASES")
            build = case_divergence
        fn = LOSSES.resolve(entry)
        case = build(torch.Generator().manual_seed(seed_of(name)))
        ref = run_loss(case, fn, torch.device("cpu"), torch.float64, None)
        got = run_loss(case, fn, ctx.device, torch.float32, None)
        worst, bad = compare(got, ref, LOSS_TOL)
        note = "plain"
        if "chunk_size" in inspect.signature(fn).parameters:
            chunked = run_loss(case, fn, ctx.device, torch.float32, 2)
            w2, b2 = compare(chunked, ref, LOSS_TOL)
            worst, bad, note = max(worst, w2), bad + [f"chunk_size=2 {b}" for b in b2], \
                "plain + chunk_size=2"
        return verdict(worst, bad, f"{LOSS_TOL:.0e} (+rel)", "float32", note)

    return check
