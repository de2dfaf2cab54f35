"""The ``gsm8k`` suite's teacher: the base model, or for arith the base fine-tuned on gold
rationales (trained once, cached by :func:`teacher_key`), and its greedy rationales for the
students' training questions (cached by generation)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from bench.errors import UsageError
from bench.reasoning.splits import Dataset

COT_INSTRUCTION = ("Solve the math word problem step by step, one short step per line. "
                   "End with a final line of the form '#### <number>'.")


def teacher_key(ds: Dataset, settings: dict[str, Any], base_name: str, num_layers: int,
                train: list[Any]) -> tuple[str, Any, list[Any]]:
    """(cache key, fine-tune config, items) of the arith teacher: the key hashes everything
    that shapes it, the gold rationales of its first ``teacher_train`` items included, so a
    change of the training pool would retrain it (and move every cached student)."""
    from methods.reasoning.cot_distill import run_key, sft_config

    items = [it for it in train if it.gold_rationale][: settings["teacher_train"]]
    cfg = sft_config({"epochs": settings["teacher_epochs"], "lr": settings["teacher_lr"],
                      "batch_size": settings["teacher_batch_size"]}, 0,
                     student_layers=num_layers)
    data = hashlib.sha256(json.dumps([[it.question, it.gold_rationale, it.answer]
                                      for it in items]).encode()).hexdigest()[:16]
    parts = [base_name, ds.id, cfg.__dict__, data] + \
        (["direct"] if settings["teacher_direct"] else [])
    return run_key("teacher", *parts), cfg, items


def build_teacher(ds: Dataset, settings: dict[str, Any], base: Any, base_name: str, tok: Any,
                  train: list[Any], work_dir: Path) -> tuple[Any, str, dict[str, Any]]:
    """(teacher, name, info): the base model, or for ``arith`` the base fine-tuned on gold
    rationales (trained once, cached by key)."""
    finetune = settings["teacher_finetune"]
    if finetune is None:
        finetune = ds.kind == "arith"
    prompt = settings["teacher_prompt"]
    if prompt == "auto":
        prompt = "plain" if finetune else "chat"
    info: dict[str, Any] = {"base": base_name, "finetuned": bool(finetune), "prompt": prompt}
    if not finetune:
        return base, base_name, with_fingerprint(info, base)
    from methods.reasoning.cot_distill import DIRECT_ANSWER_PROMPT, finetune_teacher

    key, cfg, items = teacher_key(ds, settings, base_name, base.config.num_hidden_layers,
                                  train)
    direct = bool(settings["teacher_direct"])
    if not items:
        raise UsageError(f"{ds.id}: no gold rationales to fine-tune the teacher on; "
                         "--set teacher_finetune=false")
    out, name = work_dir / "teacher" / key, f"{Path(base_name).name}-{ds.kind}-ft"
    teacher = finetune_teacher(base, tok, items, cfg, out, name=name, direct=direct)
    info.update({"key": key, "path": str(out / name), "train_items": len(items),
                 "recipe": dict(cfg.__dict__),
                 "direct_prompt": DIRECT_ANSWER_PROMPT if direct else None})
    return teacher, str(out / name), with_fingerprint(info, teacher)


def with_fingerprint(info: dict[str, Any], teacher: Any) -> dict[str, Any]:
    """``info`` with the teacher's weight hash. A fine-tune is not bitwise reproducible
    across CPUs (nor, so far, across cold caches), so rows trained under one cache key may
    still come from different teachers; the hash in every record shows which."""
    from bench.core.hf import model_fingerprint

    info["weights_fingerprint"] = model_fingerprint(teacher)
    return info


def add_rationales(ds: Dataset, settings: dict[str, Any], teacher: Any,
                   info: dict[str, Any], tok: Any, train: list[Any], work_dir: Path,
                   longest: int) -> dict[str, Any]:
    """The teacher's greedy rationales for the student's training questions (cached);
    marks each item correct or not. Returns figures for the record."""
    from bench.core.generation import GenerationCache, chat_prompt_ids, generate
    from bench.core.hf import inference_copy
    from bench.reasoning.problem import answers_match
    from methods.reasoning.cot_distill import PROMPT, prompt_ids, split_output

    items = train[: settings["n_train"] or None]
    if settings["rationales"] == "gold":  # ablation / tests: the verified gold rationales
        for it in items:
            it.rationale, it.teacher_correct = it.gold_rationale, bool(it.gold_rationale)
        return {"rationales": "gold", "train_questions": len(items),
                "train_with_rationale": sum(it.teacher_correct for it in items),
                "rationales_sha256": rationales_digest(items)}
    if settings["rationales"] != "teacher":
        raise UsageError(f"--set rationales={settings['rationales']}: use teacher or gold")
    from bench.reasoning.evaluation import gen_tokens

    max_new = settings["teacher_gen_tokens"] or gen_tokens(ds, settings, longest)
    fast = inference_copy(teacher)
    key = json.dumps([info["weights_fingerprint"], info["prompt"], max_new, "greedy"])
    prompts = [prompt_ids(tok, it.question) if info["prompt"] == "plain" else
               chat_prompt_ids(tok, PROMPT.format(question=it.question), system=COT_INSTRUCTION)
               for it in items]
    gens = generate(fast, tok, prompts, max_new_tokens=max_new,
                    batch_size=settings["gen_batch_size"],
                    cache=GenerationCache(work_dir / "generations", key),
                    label=f"teacher rationales ({ds.id})")
    for it, g in zip(items, gens, strict=True):
        it.teacher_correct = answers_match(g.text, it.answer)
        it.rationale = split_output(g.text) if it.teacher_correct else ""
    right = sum(it.teacher_correct for it in items)
    return {"train_correct": right, "rationales_sha256": rationales_digest(items),
            "train_questions": len(items), "train_accuracy": right / max(len(items), 1),
            "rationale_max_tokens": max_new}


def rationales_digest(items: list[Any]) -> str:
    """sha256 of the (question, rationale) pairs the students train on: equal digests mean
    equal training data, whichever teacher wrote it."""
    return hashlib.sha256(json.dumps([[it.question, it.rationale] for it in items])
                          .encode()).hexdigest()
