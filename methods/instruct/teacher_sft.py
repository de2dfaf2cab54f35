"""The ``instruct`` teacher fine-tuned on the training split's references (MiniLLM's setup).

MiniLLM (Gu et al. 2024, arXiv:2306.08543, section 3) distils from teachers that were first
fine-tuned on the training split of the instruction data, so the teacher answers in the
references' style and the gap between teacher and student is about the task rather than
about the format. Here the suite's teacher (SmolLM2-135M-Instruct by default) is
fine-tuned with cross-entropy on ``reference + end-of-turn`` after each training prompt's
chat template, for ``steps`` optimizer steps, once: the weights are cached in the work
folder (keyed by the teacher, the items and the recipe), resumable like every training,
and shared by every method and seed of the suite (the teacher's seed is fixed at 0:
training seeds vary the students only). The embeddings (tied to the LM head in SmolLM2)
stay frozen, as ``freeze_embeddings`` does for students, which also keeps the optimizer
state small.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

TEACHER_SFT_FORMAT = 1


def reference_examples(tokenizer: Any, items: list[Any]) -> list[Any]:
    """One :class:`~methods.instruct.token_kd.TrainExample` per (item, reference): the
    chat-rendered prompt and the reference's ids followed by the end-of-turn token."""
    from bench.core.generation import chat_prompt_ids
    from methods.instruct.token_kd import TrainExample

    end = tokenizer.eos_token_id
    examples = []
    for item in items:
        prompt = chat_prompt_ids(tokenizer, item.prompt)
        for reference in item.references[:1]:  # the first reference: one target per prompt
            ids = tokenizer.encode(reference.strip(), add_special_tokens=False)
            examples.append(TrainExample(prompt, [*ids, end]))
    return examples


def fine_tune_teacher(teacher: Any, tokenizer: Any, items: list[Any], *, steps: int,
                      lr: float, batch_size: int, work_dir: Path, teacher_key: str,
                      ) -> tuple[Any, dict[str, Any]]:
    """A fine-tuned copy of ``teacher`` (eval mode) and what to record about it."""
    import copy

    from methods.instruct.token_kd import collate, response_logits
    from methods.trainer import StepOutput, TrainConfig, Trainer

    examples = reference_examples(tokenizer, items)
    key = hashlib.sha256(json.dumps(
        [TEACHER_SFT_FORMAT, teacher_key, steps, lr, batch_size,
         [[e.prompt_ids, e.response_ids] for e in examples]]).encode()).hexdigest()[:12]
    out_dir = Path(work_dir) / "teacher-sft" / key
    model = copy.deepcopy(teacher).float()
    model.get_input_embeddings().weight.requires_grad_(False)
    model.get_output_embeddings().weight.requires_grad_(False)
    pad = tokenizer.pad_token_id

    def step(net: Any, batch: dict[str, Any]) -> StepOutput:
        logits = response_logits(net, batch)
        loss = torch.nn.functional.cross_entropy(logits.float(), batch["targets"])
        n = int(batch["targets"].numel())
        return StepOutput(loss, n_tokens=n, mean_over=n)

    cfg = TrainConfig(max_steps=steps, batch_size=batch_size, lr=lr,
                      warmup_steps=max(1, steps // 10), seed=0, checkpoint_every=max(1, steps // 4),
                      keep_checkpoints=1)
    trainer = Trainer(model, step, examples, cfg, out_dir, collate_fn=lambda b: collate(b, pad))
    tuned = trainer.train().eval()
    from methods.trainer import logged_train_seconds

    record = {"steps": steps, "lr": lr, "batch_size": batch_size, "examples": len(examples),
              "checkpoint_dir": str(out_dir), "train_seconds": logged_train_seconds(out_dir)}
    return tuned, record
