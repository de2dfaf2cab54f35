"""``sft``: sequence-level KD (Kim & Rush 2016, arXiv:1606.07947) across tokenizers: the
student is trained with cross-entropy on text the teacher wrote.

Each training segment's first ``sample_prefix_tokens`` teacher tokens are a prompt; the
teacher (Gemma-3-270M, float32) continues it by ``sample_tokens`` tokens of ancestral
sampling at temperature 1 (the teacher's own distribution, which is what the student
should learn; greedy decoding from a base model repeats itself), seeded per batch
(:func:`bench.core.generation.sample`), generated once and cached for every seed. The
student reads ``prefix + continuation`` with its own tokenizer and is trained on the
continuation's tokens only (the prefix is context: it is the real text ``ce`` trains on).
Text crosses tokenizers as text, so no vocabulary is shared.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bench.contracts import dataclass_settings
from methods.lm.common import Example, LMConfig, LMContext, LMRecipe, encode, load_teacher

REGISTRY = [
    {"name": "sft", "suites": ["lm"], "target": "SequenceKD",
     "summary": "CE on teacher continuations (Gemma-3-270M, sampled at T=1) of training-text "
                "prefixes: sequence-level KD",
     "citation": "Kim & Rush 2016, arXiv:1606.07947"},
]


@dataclass
class SampleConfig:
    sample_prefix_tokens: int = 32
    sample_tokens: int = 96
    # large batches: a decoding step of Gemma-3 reads its 262k-row LM head once whatever
    # the batch (0.26 s for 8 rows here), so few, wide batches are what a CPU can afford
    sample_batch_size: int = 48


class SequenceKD(LMRecipe):
    kd = None
    settings_keys = LMRecipe.settings_keys + tuple(SampleConfig.__dataclass_fields__)
    setting_specs = LMRecipe.setting_specs + dataclass_settings(SampleConfig)
    presets = {"smoke": {**LMRecipe.presets["smoke"], "sample_tokens": 16}}

    def examples(self, context: LMContext, cfg: LMConfig) -> list[Example]:
        from bench.core.generation import GenerationCache, Sampling, sample

        sc = SampleConfig(**{k: int(context.settings[k]) for k in
                             SampleConfig.__dataclass_fields__ if k in context.settings})
        teacher, tokenizer = load_teacher(context)
        prompts, prefixes = [], []
        for seg in context.train:
            ids, offsets = encode(tokenizer, seg.text)
            n = min(sc.sample_prefix_tokens, len(offsets))
            prompts.append(ids[: n + 1])
            prefixes.append(seg.text[: offsets[n - 1][1]])
        key = json.dumps([context.teacher_name, "float32", sc.sample_tokens, "T=1", 0])
        cache = GenerationCache(context.work_dir / "samples", key)
        gens = sample(teacher, tokenizer, prompts, n=1, max_new_tokens=sc.sample_tokens,
                      sampling=Sampling(temperature=1.0, seed=0),
                      batch_size=sc.sample_batch_size, cache=cache, label="teacher samples")
        out = []
        for seg, prefix, row in zip(context.train, prefixes, gens, strict=True):
            continuation = tokenizer.decode(row[0].output_ids, skip_special_tokens=True)
            text = prefix + continuation
            ids, offsets = encode(context.tokenizer, text)
            first = next((j for j, (s, _) in enumerate(offsets) if s >= len(prefix)),
                         len(offsets))
            if first < len(offsets):  # a continuation that is empty trains nothing
                out.append(Example(seg.id, text, ids, offsets, train_from=first))
        context.config["samples"] = [{"id": e.id, "text": e.text[:300]} for e in out[:2]]
        context.config["sample"] = {**sc.__dict__, "temperature": 1.0, "seed": 0,
                                    "teacher_dtype": "float32"}
        return out

    def kd_loss(self, logits: Any, batch: dict[str, Any], cfg: LMConfig) -> None:
        return None
