"""What every row of the GPU check shares: its verdicts, its context, tiny models, comparisons.

A row is a function ``check(ctx: Ctx) -> Outcome``; it raises ``CheckFailed`` (with the
``Outcome`` so far) for its own verdict. Imported by ``scripts/gpu_check.py`` after it has
set the offline environment and hidden the absent packages.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

VOCAB = 512
TRAIN_REL_TOL = 5e-2  # bf16 autocast on the device vs float32 on CPU, relative loss
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
class Ctx:
    device: torch.device
    quick: bool
    tmp: Path
    cache: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------- helpers


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
