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
import copy
import json
import os
import sys
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

# Offline, quiet, before anything imports huggingface_hub or the progress bar.
for _key, _value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
                     ("HF_DATASETS_OFFLINE", "1"), ("DISTILLBENCH_PROGRESS", "0"),
                     ("TOKENIZERS_PARALLELISM", "false"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
                     ("TRANSFORMERS_VERBOSITY", "error")):
    os.environ.setdefault(_key, _value)

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # importable without installation (the lent machine)
    sys.path.insert(0, str(ROOT))

# Packages the lent machine does not have: hidden here too (``import x`` raises ImportError,
# ``importlib.util.find_spec(x)`` is None), so a CPU run proves no row needs them.
ABSENT = ("lm_eval", "ranx", "pyserini", "gguf")
for _name in ABSENT:
    sys.modules.setdefault(_name, None)  # type: ignore[arg-type]

import torch  # noqa: E402  (after the environment above)

VOCAB = 512
LOSS_TOL = 1e-4  # float32 on the device vs float64 on CPU: |diff| <= tol + tol * |ref|
VISION_TOL = 1e-3  # a float32 ViT forward/backward vs float64, TRG weights up to 100
TRAIN_REL_TOL = 5e-2  # bf16 autocast on the device vs float32 on CPU, relative loss
FAIL_ENV = "GPU_CHECK_FAIL"
WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron "
         "pi rho sigma tau upsilon phi chi psi omega query passage").split()


class CheckFailed(Exception):
    """A row's own verdict (as opposed to a crash): the reason is the message."""

    def __init__(self, reason: str, outcome: Outcome | None = None) -> None:
        super().__init__(reason)
        self.outcome = outcome


@dataclass
class Outcome:
    diff: float | None  # the largest difference to the CPU reference (see ``limit``)
    limit: str  # what ``diff`` is held to, e.g. "1e-04 (+rel)" or "rel 5e-02"
    dtype: str  # the device run's precision
    note: str = ""


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


@dataclass
class Ctx:
    device: torch.device
    quick: bool
    tmp: Path
    cache: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------- helpers


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seed_of(name: str) -> int:
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def tiny_llama(layers: int, *, seed: int, init: float = 0.02) -> Any:
    """A SmolLM2-shaped Llama (tied embeddings, GQA, RoPE theta 1e5) at toy size."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=160,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      head_dim=16, max_position_embeddings=256, rms_norm_eps=1e-5,
                      rope_theta=100000.0, tie_word_embeddings=True, initializer_range=init,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    return model.eval()


def word_tokenizer() -> Any:
    """A whitespace word-level tokenizer with exactly ``VOCAB`` entries (<pad> 0, <unk> 1,
    <eos> 2, then ``WORDS``, ``:`` and filler words)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<unk>", "<eos>", ":", *WORDS]
    words += [f"w{i}" for i in range(VOCAB - len(words))]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>",
                                   unk_token="<unk>", eos_token="<eos>")


def tiny_lm_dir(ctx: Ctx) -> Path:
    """A 4-layer tiny Llama and its word tokenizer saved as an HF folder (once per run)."""
    if "lm_dir" not in ctx.cache:
        path = ctx.tmp / "tiny-llama"
        tiny_llama(4, seed=0).save_pretrained(path)
        word_tokenizer().save_pretrained(path)
        ctx.cache["lm_dir"] = path
    return ctx.cache["lm_dir"]


def fresh_accelerate() -> None:
    """Forget accelerate's process-wide state, so the next Trainer picks the device and
    precision of its own run (a GPU run followed by a CPU reference in one process)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def on_policy(dev: torch.device) -> Any:
    """``bench.core.device.using(dev)``: the run's device for Trainer and recipes."""
    from bench.core import device as policy

    return policy.using(dev)


def metrics(folder: Path) -> list[dict[str, Any]]:
    path = folder / "metrics.jsonl"
    if not path.exists():
        raise CheckFailed(f"the trainer wrote no {path}")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def param_device(model: Any) -> torch.device:
    return next(model.parameters()).device


def expect_on(model: Any, dev: torch.device, what: str) -> None:
    got = param_device(model)
    if got.type != dev.type:
        raise CheckFailed(f"{what} ended on {got}, not on {dev}")


def relative(got: float, ref: float) -> float:
    return abs(got - ref) / max(abs(ref), 1e-12)


def compare(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], tol: float
            ) -> tuple[float, list[str]]:
    """(largest |got - ref|, names of tensors outside tol + tol * |ref| or not finite)."""
    worst, bad = 0.0, []
    for name, r in ref.items():
        if name not in got or got[name] is None:
            bad.append(f"{name} missing")
            continue
        g = got[name].detach().to("cpu", torch.float64)
        r = r.detach().to("cpu", torch.float64)
        if g.shape != r.shape:
            bad.append(f"{name} shape {tuple(g.shape)} != {tuple(r.shape)}")
            continue
        if not bool(torch.isfinite(g).all()):
            bad.append(f"{name} not finite")
            continue
        d = (g - r).abs()
        if d.numel():
            worst = max(worst, float(d.max()))
        if bool((d > tol + tol * r.abs()).any()):
            bad.append(name)
    return worst, bad


def verdict(worst: float, bad: list[str], limit: str, dtype: str, note: str = "") -> Outcome:
    outcome = Outcome(worst, limit, dtype, note)
    if bad:
        raise CheckFailed(f"{', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''} differ from "
                          f"the CPU reference (max |diff| {worst:.3g}, limit {limit})", outcome)
    return outcome


def train_losses(rows: list[dict[str, Any]], steps: int, what: str) -> list[float]:
    if len(rows) != steps:
        raise CheckFailed(f"{what}: {len(rows)} logged steps, expected {steps}")
    if any(r.get("skipped") for r in rows):
        raise CheckFailed(f"{what}: a step was skipped as non-finite")
    losses = [float(r["loss"]) for r in rows]
    if not all(torch.isfinite(torch.tensor(losses))):
        raise CheckFailed(f"{what}: non-finite loss {losses}")
    return losses


def compare_losses(got: list[float], ref: list[float], dtype: str, note: str = "") -> Outcome:
    worst = max(relative(g, r) for g, r in zip(got, ref, strict=True))
    outcome = Outcome(worst, f"rel {TRAIN_REL_TOL:.0e}", dtype, note)
    if worst > TRAIN_REL_TOL:
        raise CheckFailed(f"training loss [{', '.join(f'{x:.4f}' for x in got)}] vs CPU "
                          f"float32 [{', '.join(f'{x:.4f}' for x in ref)}]: relative "
                          f"difference {worst:.3g} > {TRAIN_REL_TOL:g}", outcome)
    return outcome


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
                                  "scripts/gpu_check.py LOSS_CASES")
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


# ------------------------------------------------------------------------------ trainer


def check_trainer(ctx: Ctx) -> Outcome:
    """3 steps of the shared Trainer (CE + registered fkl to a frozen teacher, tiny
    Llamas): bf16 autocast on the device vs float32 on CPU."""
    import torch.nn.functional as F

    from methods.losses import get_loss
    from methods.trainer import StepOutput, TrainConfig, Trainer

    fkl = get_loss("fkl")
    student0, teacher0 = tiny_llama(2, seed=0), tiny_llama(4, seed=1, init=0.1)
    g = torch.Generator().manual_seed(7)
    data = list(torch.randint(3, VOCAB, (12, 16), generator=g))
    steps = 3

    def run(dev: torch.device, precision: str) -> list[float]:
        teacher = copy.deepcopy(teacher0).to(dev)

        def step(model: Any, ids: torch.Tensor) -> StepOutput:
            logits = model(input_ids=ids).logits[:, :-1]
            with torch.no_grad():
                t_logits = teacher(input_ids=ids).logits[:, :-1]
            mask = torch.ones_like(ids[:, 1:], dtype=torch.bool)
            mask[:, :4] = False  # the "prompt" is not distilled
            ce = F.cross_entropy(logits.float().reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
            kd = fkl(logits, t_logits, mask=mask, chunk_size=8)
            return StepOutput(ce + kd, n_tokens=int(mask.sum()),
                              metrics={"kd": float(kd.detach())})

        cfg = TrainConfig(max_steps=steps, batch_size=4, lr=1e-3, schedule="constant",
                          mixed_precision=precision, checkpoint_every=1000, progress=False)
        out = ctx.tmp / f"trainer-{dev.type}-{precision}"
        student = copy.deepcopy(student0).train()
        head_dtypes: set[torch.dtype] = set()  # proves autocast was on (the loss sees fp32)
        student.lm_head.register_forward_hook(lambda m, i, o: head_dtypes.add(o.dtype))
        with on_policy(dev):
            fresh_accelerate()
            model = Trainer(student, step, data, cfg, out, collate_fn=torch.stack).train()
        expect_on(model, dev, f"the trained model ({precision})")
        if precision == "bf16" and torch.bfloat16 not in head_dtypes:
            raise CheckFailed(f"bf16 autocast was not active on {dev}: the LM head ran in "
                              f"{sorted(map(str, head_dtypes))}")
        return train_losses(metrics(out), steps, f"trainer on {dev}")

    ref = run(torch.device("cpu"), "no")
    got = run(ctx.device, "bf16")
    return compare_losses(got, ref, "bf16 autocast", f"{steps} steps, loss {got[-1]:.3f}")


# ------------------------------------------------------------------------------- vision


def check_vision_trg(ctx: Ctx) -> Outcome:
    """The TRG recipe's loss (Hinton KD + contextual + kNN-graph + token InfoNCE) on tiny
    ViTs: float32 on the device vs float64 on CPU, value, parts and student gradients."""
    from methods.vision.kd import VisionConfig, build_vit
    from methods.vision.trg import TRG, TRG_DEFAULTS

    recipe = TRG()
    shape = {"image_size": 16, "channels": 3, "num_classes": 10}
    student = build_vit("vit-64x3", seed=0, **shape).eval()
    teacher = build_vit("vit-128x4", seed=1, **shape).eval()
    cfg = VisionConfig(extra=dict(TRG_DEFAULTS))
    wrapped = recipe.wrap(student, teacher, cfg)
    g = torch.Generator().manual_seed(3)
    pixels = torch.rand(4, 3, 16, 16, generator=g, dtype=torch.float64) * 2 - 1
    labels = torch.randint(0, 10, (4,), generator=g)

    def run(dev: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        model = copy.deepcopy(wrapped).to(dev, dtype).eval()
        t = copy.deepcopy(teacher).to(dev, dtype).eval()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(11)  # TRG draws its token positions from the global RNG
            loss, parts = recipe.loss(model, pixels.to(dev, dtype), labels.to(dev), t, cfg,
                                      0.5)
        loss.backward()
        grads = [p.grad.flatten() for p in model.parameters() if p.grad is not None]
        return {"loss": loss.detach(), **{k: torch.tensor(v) for k, v in parts.items()},
                "grad(student)": torch.cat(grads)}

    ref = run(torch.device("cpu"), torch.float64)
    got = run(ctx.device, torch.float32)
    worst, bad = compare(got, ref, VISION_TOL)
    return verdict(worst, bad, f"{VISION_TOL:.0e} (+rel)", "float32",
                   f"ViT 64x3 <- 128x4, loss {float(got['loss']):.3f}")


# --------------------------------------------------------------------- speculative decoding


def decode_mismatch(a: list[int], b: list[int]) -> int:
    """Positions where two token lists differ (a length difference counts in full)."""
    return sum(x != y for x, y in zip(a, b, strict=False)) + abs(len(a) - len(b))


def check_specdec(ctx: Ctx) -> Outcome:
    """Greedy speculative decoding (chain k=3 and an EAGLE-2 tree) with an LMDraft must
    equal plain decoding token for token on the device, and plain decoding on the device
    must equal plain decoding on CPU (float64, so no near-tie can flip an argmax);
    speculative sampling with a device generator must run."""
    from bench.core.assets.students import first_k_layers_student
    from bench.specdec import LMDraft, TreeConfig, autoregressive, speculative

    target0 = tiny_llama(4, seed=0, init=0.2).double()
    prompts = [[5], [5, 6, 7, 8], [3, 14, 15, 9, 2, 6, 5, 3, 5]]
    prompts, n = (prompts[:2], 12) if ctx.quick else (prompts, 24)
    cpu_plain = [autoregressive(target0, p, n).tokens for p in prompts]

    target = copy.deepcopy(target0).to(ctx.device)
    draft = LMDraft(first_k_layers_student(target, 1))
    expect_on(draft.model, ctx.device, "the draft")
    mismatches, accepted, where = 0, 0, []
    for p, ref in zip(prompts, cpu_plain, strict=True):
        plain = autoregressive(target, p, n).tokens
        chain = speculative(target, draft, p, n, k=3)
        tree = speculative(target, draft, p, n, tree=TreeConfig(8, 3, 3))
        for label, got, want in (("plain vs CPU", plain, ref), ("chain vs plain", chain.tokens,
                                                                 plain),
                                 ("tree vs plain", tree.tokens, plain)):
            bad = decode_mismatch(got, want)
            mismatches += bad
            if bad:
                where.append(f"{label} (prompt {p[:3]}..., {bad} tokens)")
        accepted += sum(chain.stats.accepted_per_pass) + sum(tree.stats.accepted_per_pass)
    gen = torch.Generator(device=ctx.device).manual_seed(0)
    sampled = speculative(target, draft, prompts[-1], n, k=3, temperature=1.0, generator=gen)
    if len(sampled.tokens) != n or not all(0 <= t < VOCAB for t in sampled.tokens):
        raise CheckFailed(f"speculative sampling returned {sampled.tokens}")
    outcome = Outcome(float(mismatches), "0 tokens", "float64",
                      f"{len(prompts)} prompts x {n} tokens, {accepted} draft tokens accepted")
    if mismatches:
        raise CheckFailed("greedy outputs differ: " + "; ".join(where), outcome)
    return outcome


# --------------------------------------------------------------------- EAGLE / FSPAD heads


def check_head(ctx: Ctx, kind: str) -> Outcome:
    """One training step of the recipe's head (target features, Trainer, bf16 autocast,
    chunked eagle/fspad loss) on the device vs float32 on CPU; then the trained head as a
    FeatureDraft must decode losslessly (greedy chain and tree, float64) on the device."""
    from bench.specdec import TreeConfig, autoregressive, speculative
    from methods.specdec.drafts import FSPAD, Eagle, HeadTrainConfig
    from methods.specdec.features import target_features
    from methods.specdec.heads import HEADS, FeatureDraft, HeadConfig

    recipe = Eagle() if kind == "eagle" else FSPAD()
    target0 = tiny_llama(2, seed=0, init=0.2)
    g = torch.Generator().manual_seed(5)
    train = [SimpleNamespace(prompt_ids=torch.randint(3, VOCAB, (6,), generator=g).tolist(),
                             response_ids=torch.randint(3, VOCAB, (8,), generator=g).tolist())
             for _ in range(4)]

    def run(dev: torch.device, precision: str) -> tuple[Any, dict[str, Any]]:
        target = copy.deepcopy(target0).to(dev)
        work = ctx.tmp / f"{kind}-{dev.type}-{precision}"
        store = target_features(target, train, work / "features", dtype="float32",
                                progress=False)
        cfg = HeadTrainConfig(max_steps=1, batch_size=2, noise_std=0.0, chunk_size=2,
                              mixed_precision=precision, checkpoint_every=1000)
        context = SimpleNamespace(target=target, work_dir=work, target_name="tiny-llama",
                                  train=train, config={}, settings={})
        with on_policy(dev):
            fresh_accelerate()
            head = recipe.train_head(HEADS[kind], HeadConfig.from_target(target.config), store,
                                     context, cfg)
        expect_on(head, dev, f"the {kind} head ({precision})")
        rows = metrics(Path(context.config["checkpoint_dir"]))
        train_losses(rows, 1, f"{kind} head on {dev}")
        return head, rows[0]

    _, ref = run(torch.device("cpu"), "no")
    head, got = run(ctx.device, "bf16")
    keys = ("loss", "feature_loss", "token_ce")
    outcome = compare_losses([got[k] for k in keys], [ref[k] for k in keys], "bf16 autocast",
                             f"loss {got['loss']:.3f}")

    target = copy.deepcopy(target0).double().to(ctx.device)
    draft = FeatureDraft(copy.deepcopy(head).to(ctx.device, torch.float64),
                         target.get_input_embeddings().weight, target.get_output_embeddings().weight)
    prompts = [[5, 6, 7, 8], [3, 14, 15, 9, 2, 6]]
    prompts, n = (prompts[:1], 10) if ctx.quick else (prompts, 16)
    for p in prompts:
        plain = autoregressive(target, p, n).tokens
        for label, out in (("chain", speculative(target, draft, p, n, k=3)),
                           ("tree", speculative(target, draft, p, n, tree=TreeConfig(8, 3, 3)))):
            if out.tokens != plain:
                raise CheckFailed(f"greedy {label} decoding with the {kind} head differs from "
                                  f"plain decoding in {decode_mismatch(out.tokens, plain)} "
                                  f"tokens (prompt {p})", outcome)
    outcome.note += f"; lossless decode float64 ({len(prompts)}x{n})"
    return outcome


# ------------------------------------------------------------------------------- DeAR


class OverlapTeacher:
    """Word overlap as a stand-in teacher (the recipe's real one is MiniLM)."""

    def fingerprint(self) -> str:
        return "overlap"

    def score(self, queries: list[str], docs: list[str]) -> list[float]:
        return [len(set(q.split()) & set(d.split())) / 5 for q, d in zip(queries, docs,
                                                                          strict=True)]


def toy_retrieval() -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]],
                             dict[str, dict[str, float]]]:
    docs = {f"d{i}": " ".join(WORDS[i:i + 5]) for i in range(10)}
    queries = {f"q{i}": " ".join(WORDS[i:i + 2]) for i in range(4)}
    qrels = {q: {f"d{i}": 1} for i, q in enumerate(queries)}
    candidates = {q: {d: float(-abs(int(d[1:]) - int(q[1:]))) for d in docs} for q in queries}
    return docs, queries, qrels, candidates


def check_dear_stage1(ctx: Ctx) -> Outcome:
    """One DeAR stage-1 step (train_stage1: PointwiseLM on the tiny Llama, dear_pointwise,
    Trainer): bf16 autocast on the device vs float32 on CPU; then scoring on the device."""
    from methods.retrieval.dear import DeARConfig, build_groups, train_stage1

    lm_dir = tiny_lm_dir(ctx)
    docs, queries, qrels, candidates = toy_retrieval()
    groups = build_groups(queries, qrels, candidates, group_size=3, negatives_depth=6)[:2]

    def run(dev: torch.device, precision: str) -> tuple[Any, float]:
        cfg = DeARConfig(student=str(lm_dir), student_layers=2, group_size=3,
                         batch_queries=2, epochs=1, checkpoint_every=1000,
                         mixed_precision=precision, max_doc_tokens=8)
        work = ctx.tmp / f"dear1-{dev.type}-{precision}"
        with on_policy(dev):
            fresh_accelerate()
            model = train_stage1(cfg, queries=queries, docs=docs, groups=groups,
                                 teacher=OverlapTeacher(), work_dir=work, progress=False)
        expect_on(model, dev, f"the stage-1 student ({precision})")
        return model, train_losses(metrics(work / "stage1"), 1, f"stage 1 on {dev}")[0]

    _, ref = run(torch.device("cpu"), "no")
    model, got = run(ctx.device, "bf16")
    outcome = compare_losses([got], [ref], "bf16 autocast", f"loss {got:.3f}")
    scores = model.score([queries["q0"]] * 2, [docs["d0"], docs["d5"]])
    if len(scores) != 2 or not all(torch.isfinite(torch.tensor(scores))):
        raise CheckFailed(f"scoring on the device returned {scores}", outcome)
    return outcome


def check_dear_stage2(ctx: Ctx) -> Outcome:
    """One DeAR stage-2 step (train_stage2: LoRA via peft on the tiny Llama, listwise
    cross-entropy, Trainer): bf16 autocast on the device vs float32 on CPU; then the
    ListwiseReranker (LoRA merged, bf16, batched greedy loop) permutes a window there."""
    from bench.core.assets import load_causal_lm
    from methods.retrieval.dear_listwise import (
        ListwiseConfig,
        ListwiseReranker,
        build_windows,
        train_stage2,
    )

    lm_dir = tiny_lm_dir(ctx)
    docs, queries, _, candidates = toy_retrieval()
    windows = build_windows(candidates, window=3, stride=2, depth=3, n_windows=2, seed=0)
    teacher = OverlapTeacher()
    scores = {(q, d): teacher.score([queries[q]], [docs[d]])[0] for q, ids in windows
              for d in ids}

    def run(dev: torch.device, precision: str) -> tuple[Any, float]:
        cfg = ListwiseConfig(window=3, stride=2, depth=3, max_doc_tokens=6, train_windows=2,
                             epochs=1, batch_windows=2, lora_rank=4, lora_alpha=8,
                             mixed_precision=precision, checkpoint_every=1000,
                             inference_batch=2)
        lm, tokenizer = load_causal_lm(str(lm_dir))
        work = ctx.tmp / f"dear2-{dev.type}-{precision}"
        with on_policy(dev):
            fresh_accelerate()
            model = train_stage2(cfg, lm=lm, tokenizer=tokenizer, queries=queries, docs=docs,
                                 windows=windows, scores=scores, work_dir=work,
                                 progress=False)
        expect_on(model, dev, f"the stage-2 model ({precision})")
        return model, train_losses(metrics(work), 1, f"stage 2 on {dev}")[0]

    _, ref = run(torch.device("cpu"), "no")
    model, got = run(ctx.device, "bf16")
    outcome = compare_losses([got], [ref], "bf16 autocast", f"loss {got:.3f}")
    qid, ids = windows[0]
    order = ListwiseReranker(model).permute(queries[qid], [docs[d] for d in ids])
    if sorted(order) != list(range(len(ids))):
        raise CheckFailed(f"the listwise reranker returned {order}, not a permutation",
                          outcome)
    return outcome


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
