"""SemCoT: semantically-aligned implicit chain-of-thought (He et al. 2025).

He, Zheng, Zhu, Zheng, Su, Vasudevan, Guo, Hong, Li, "SemCoT: Accelerating Chain-of-Thought
Reasoning through Semantically-Aligned Implicit Tokens", arXiv:2510.24940 (NeurIPS 2025);
architecture checked against the official code (github.com/YinhanHe123/SemCoT,
``models/semcot.py``, ``training/train_semcot.py``); our own implementation.

Pipeline (the frozen teacher answers; only the encoder and the generator are trained):

1. **Sentence encoder** (official ``CustomST``): copies of the teacher's decoder layers
   ``st_start .. st_start + st_layers - 1`` (official: 16..20 of Llama-2-7B's 32; here by
   default the middle layer onwards, ``n_layers // 2``), the final norm, mean pooling and a
   linear map to ``st_dim`` (768). Its input is the teacher's hidden states *entering*
   layer ``st_start`` for a text (``hidden_states[st_start]``); implicit states are fed to
   it as if they were such hidden states. Trained with InfoNCE
   (:func:`methods.losses.semcot.semcot_infonce`, cosine logits, in-batch negatives)
   between the ground-truth reasoning and its condensed version: first the projection only
   (``st_linear_*``), then all its parameters (``st_llm_*``, lr 1e-7). Condensed
   reasoning: the official code has GPT-4o-mini write it; offline we condense
   deterministically [ours]: ``"Intermediate results: v1, v2, ...; answer N."`` with the
   right-hand values of the rationale's ``=`` steps (for ``arith``: the partial products
   and running sums).
2. **Implicit reasoning generator** (official ``ContempGen``): a small LM (by default the
   teacher's first ``student_layers`` layers; official: Sheared-LLaMA-1.3B for Llama-2-7B)
   with LoRA on ``q_proj``/``v_proj`` (r 16, alpha 32, dropout 0.1) and a linear
   projection to the teacher's hidden size. Input: the question ids followed by K copies
   of a learned ``<thought>`` embedding (the official code adds a token whose embedding row
   alone is trained; a parameter vector is the same thing); the K states are the projected
   last hidden states at positions ``len(question) - 1 .. len(question) + K - 2`` (as the
   official code slices them; so with K = 1 the state is the generator's output at the
   question's last token). K = 5 in training, 1 at evaluation (official defaults).
3. **Objective** (:func:`methods.losses.semcot.semcot_generator_loss`):
   ``alpha * (1 - cos(ST(implicit), ST(teacher hidden of the ground-truth reasoning)))
   + (1 - alpha) * CE(answer)``, the CE through the frozen teacher on the input embeddings
   ``[question; implicit states; answer prompt; answer]`` (exactly where the official code
   inserts them), alpha 0.25 (official best for GSM8K). Two phases as officially: the
   projection (and thought embedding) alone (``cg_linear_*``), then with LoRA
   (``cg_llm_*``; the official "vanilla" variant trains the whole small model there, its
   LoRA variant only adapters: we implement the LoRA variant).
4. **Inference**: question -> generator -> 1 implicit state -> teacher generates the
   answer greedily from ``[question; state; answer prompt]``; latency covers both.
   The state enters as the teacher's input embedding at its own position (attention mask 1,
   the next position id), exactly where training's CE puts it
   (:class:`methods.reasoning.semcot_pipeline.SemCoTPipeline`).
   :func:`methods.reasoning.semcot_ablation.implicit_state_ablation`
   (``scripts/semcot_ablation.py``) replaces it by zeros, another question's state or a
   random vector of its norm, to show what the teacher reads from it.

Answer prompt [ours]: the official teacher (Llama-2-7B-chat) answers directly when asked
to; our offline arith teacher is fine-tuned on rationales, and with ``"\\nAnswer:"`` it
writes its whole rationale after the implicit state, as many tokens as the teacher's own
rationale (docs/measurements/gsm8k.md). So the suite also fine-tunes it on the same questions
under ``"\\nAnswer directly:"`` -> `` #### N`` (``--set teacher_direct``), and SemCoT's
states go in front of that prompt (training and inference alike); the ``teacher-direct``
row is the same teacher under that prompt without states, the reference that shows what
the implicit state adds. A teacher without a direct prompt (ASDiv) gets ``"\\nAnswer:"``.

Differences from the official code, on purpose: greedy decoding (they sample at several
temperatures); the answer target is `` #### N`` + EOS (lm-eval's GSM8K format; they train
on the bare number); no best-epoch selection on a validation split (they select on their
evaluation set); losses are batch means (they sum over the batch of 4); no
``st_linear``/``cg_linear`` epoch tuning beyond the official GSM8K values, which the suite's
CPU presets shorten (recorded in each result). Llama-family models only (the encoder calls
the teacher's decoder layers directly).
"""

from __future__ import annotations

import copy
import re
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from bench.contracts import dataclass_settings
from bench.core.device import autocast
from bench.core.hf import model_device
from methods.reasoning.cot_distill import REASONING_PRESETS
from methods.reasoning.semcot_ablation import (
    STATE_VARIANTS,
    implicit_state_ablation,
    replace_states,
)
from methods.reasoning.semcot_pipeline import SemCoTPipeline, TeacherAnswers

# The evaluation pipeline and the state ablation live in semcot_pipeline / semcot_ablation;
# re-exported because cot_distill, scripts/semcot_ablation.py and tests import them from here.
__all__ = ["REGISTRY", "STATE_VARIANTS", "Generator", "SemCoT", "SemCoTConfig",
           "SemCoTPipeline", "SentenceEncoder", "TeacherAnswers", "answer_ce", "condense",
           "implicit_state_ablation", "replace_states", "teacher_hidden"]

REGISTRY = [{
    "name": "semcot", "suites": ["gsm8k"], "target": "SemCoT",
    "summary": "implicit CoT: a LoRA generator emits K states into the frozen teacher, "
               "aligned to the reasoning by a contrastive sentence encoder",
    "citation": "He et al. 2025 (SemCoT), arXiv:2510.24940",
}]


@dataclass
class SemCoTConfig:
    """Defaults: the official code's GSM8K best parameters (``utils.BEST_PARAMS['small']``)."""

    alpha: float = 0.25
    k_train: int = 5
    k_eval: int = 1
    student_layers: int = 8
    st_start: int | None = None  # default n_layers // 2
    st_layers: int = 5
    st_dim: int = 768
    st_linear_epochs: int = 7
    st_linear_lr: float = 1e-3
    st_linear_wd: float = 1e-2
    st_llm_epochs: int = 1
    st_llm_lr: float = 1e-7
    st_llm_wd: float = 1e-2
    cg_linear_epochs: int = 7
    cg_linear_lr: float = 1e-3
    cg_linear_wd: float = 1e-3
    cg_llm_epochs: int = 2
    cg_llm_lr: float = 1e-3
    cg_llm_wd: float = 1e-7
    lora_r: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.1
    semcot_batch_size: int = 4
    mixed_precision: str = "bf16"


def condense(rationale: str, answer: str) -> str:
    """Deterministic condensed reasoning [ours]: the values the ``=`` steps produce."""
    values = re.findall(r"=\s*\$?(-?[\d][\d,]*(?:\.\d+)?)", rationale)
    head = f"Intermediate results: {', '.join(values)}; " if values else ""
    return f"{head}answer {answer}."


def _layer_out(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


class SentenceEncoder(nn.Module):
    """Teacher layers ``start..start+n-1`` + norm + mean pooling + linear (official CustomST).

    ``forward(hidden [B, S, H], mask [B, S] | None) -> [B, dim]``; rows right-padded (the
    layers are causal, so padding after a row's tokens changes none of its states).
    """

    def __init__(self, teacher: Any, start: int, n_layers: int, dim: int) -> None:
        super().__init__()
        base = teacher.model
        self.layers = nn.ModuleList(copy.deepcopy(base.layers[i])
                                    for i in range(start, min(start + n_layers,
                                                              len(base.layers))))
        self.norm = copy.deepcopy(base.norm)
        self.rotary = copy.deepcopy(base.rotary_emb)
        self.proj = nn.Linear(teacher.config.hidden_size, dim)
        self.float()

    def pooled(self, hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        pos = torch.arange(hidden.shape[1], device=hidden.device)[None].expand(
            hidden.shape[0], -1)
        emb = self.rotary(hidden, pos)
        for layer in self.layers:
            hidden = _layer_out(layer(hidden, attention_mask=None, position_ids=pos,
                                      position_embeddings=emb))
        hidden = self.norm(hidden)
        if mask is None:
            return hidden.mean(1)
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.proj(self.pooled(hidden, mask))


class Generator(nn.Module):
    """The implicit reasoning generator: small LM + LoRA + thought embedding + projection."""

    def __init__(self, student: Any, teacher_hidden: int, cfg: SemCoTConfig) -> None:
        super().__init__()
        from peft import LoraConfig, inject_adapter_in_model

        self.lm = student
        for p in self.lm.parameters():
            p.requires_grad_(False)
        inject_adapter_in_model(LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                           lora_dropout=cfg.lora_dropout,
                                           target_modules=["q_proj", "v_proj"]), self.lm.model)
        emb = self.lm.get_input_embeddings().weight
        self.thought = nn.Parameter(emb.detach().float().mean(0).clone())
        self.proj = nn.Linear(student.config.hidden_size, teacher_hidden)

    def lora_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.lm.named_parameters() if "lora_" in n]

    def forward(self, queries: list[list[int]], k: int) -> torch.Tensor:
        """``[B, k, teacher_hidden]`` implicit states for question ids ``queries``."""
        emb = self.lm.get_input_embeddings()
        width = max(len(q) for q in queries) + k
        hid = emb.weight.shape[1]
        device = emb.weight.device
        embeds = torch.zeros(len(queries), width, hid, device=device)
        mask = torch.zeros(len(queries), width, dtype=torch.long, device=device)
        for i, q in enumerate(queries):
            embeds[i, :len(q)] = emb(torch.tensor(q, device=device)).float()
            embeds[i, len(q):len(q) + k] = self.thought
            mask[i, :len(q) + k] = 1
        hidden = self.lm.model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        idx = torch.tensor([[len(q) - 1 + j for j in range(k)] for q in queries], device=device)
        picked = hidden.gather(1, idx.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
        return self.proj(picked.float())


def _right_pad(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``[S_i, H]`` rows into ``[B, S, H]`` (zeros after each row) and a bool mask."""
    width = max(r.shape[0] for r in rows)
    out = rows[0].new_zeros(len(rows), width, rows[0].shape[-1])
    mask = torch.zeros(len(rows), width, dtype=torch.bool, device=rows[0].device)
    for i, r in enumerate(rows):
        out[i, :r.shape[0]] = r
        mask[i, :r.shape[0]] = True
    return out, mask


@torch.no_grad()
def teacher_hidden(teacher: Any, tokenizer: Any, texts: list[str], layer: int,
                   batch_size: int = 16) -> list[torch.Tensor]:
    """The teacher's hidden states entering ``layer`` for each text alone, ``[S_i, H]``."""
    out = []
    device = model_device(teacher)
    for start in range(0, len(texts), batch_size):
        rows = [tokenizer(t, add_special_tokens=False)["input_ids"] or [tokenizer.eos_token_id]
                for t in texts[start:start + batch_size]]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, :len(r)], mask[i, :len(r)] = torch.tensor(r), 1
        with autocast(device, torch.bfloat16):
            hs = teacher.model(input_ids=ids.to(device), attention_mask=mask.to(device),
                               output_hidden_states=True).hidden_states[layer]
        out += [hs[i, :len(r)].float() for i, r in enumerate(rows)]
    return out


def answer_ce(teacher: Any, batch: list[dict[str, Any]], implicit: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Teacher logits for the answer tokens after ``[question; implicit; prompt]``.

    Returns ``(logits [B, T, V], answer ids [B, T], mask [B, T])`` (right-padded).
    """
    emb = teacher.get_input_embeddings()
    rows, spans = [], []
    for i, item in enumerate(batch):
        q = emb(torch.tensor(item["query_ids"]))
        tail = emb(torch.tensor(item["prompt_ids"] + item["answer_ids"]))
        rows.append(torch.cat([q.float(), implicit[i].float(), tail.float()]))
        spans.append((rows[-1].shape[0] - len(item["answer_ids"]), len(item["answer_ids"])))
    embeds, mask = _right_pad(rows)
    hidden = teacher.model(inputs_embeds=embeds, attention_mask=mask.long()).last_hidden_state
    t_max = max(n for _, n in spans)
    sel = torch.zeros(len(batch), t_max, dtype=torch.long)
    amask = torch.zeros(len(batch), t_max, dtype=torch.bool)
    ids = torch.zeros(len(batch), t_max, dtype=torch.long)
    for i, ((start, n), item) in enumerate(zip(spans, batch, strict=True)):
        sel[i, :n] = torch.arange(start - 1, start - 1 + n)
        amask[i, :n] = True
        ids[i, :n] = torch.tensor(item["answer_ids"])
    picked = hidden.gather(1, sel.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
    return teacher.get_output_embeddings()(picked), ids, amask


class SemCoT:
    """The ``semcot`` recipe for the ``gsm8k`` suite (``build_model(context)``)."""

    implementation = "full"
    settings_keys = tuple(SemCoTConfig.__dataclass_fields__)
    setting_specs = dataclass_settings(SemCoTConfig)
    needs_rationales = True
    presets = REASONING_PRESETS

    def config(self, settings: dict[str, Any]) -> SemCoTConfig:
        return SemCoTConfig(**{k: v for k, v in settings.items()
                               if k in SemCoTConfig.__dataclass_fields__})

    def build_model(self, context: Any) -> tuple[Any, str]:
        from methods.losses.semcot import semcot_generator_loss, semcot_infonce
        from methods.reasoning.cot_distill import (
            ANSWER_PROMPT,
            PROMPT,
            NoTrainingData,
            initial_student,
            run_key,
        )
        from methods.trainer import StepOutput, TrainConfig, Trainer, total_steps
        from methods.trainer_checkpoints import finished

        cfg = self.config(context.settings)
        teacher, tok = context.teacher, context.tokenizer
        for p in teacher.parameters():
            p.requires_grad_(False)
        items = [it for it in context.train if it.teacher_correct and it.rationale]
        if len(items) < 2:
            raise NoTrainingData(f"semcot: {len(items)} training rationales on "
                             f"{context.dataset_id}; the encoder's InfoNCE needs at least 2")
        n_layers = teacher.config.num_hidden_layers
        start = cfg.st_start if cfg.st_start is not None else n_layers // 2
        key = run_key("semcot", asdict(cfg), context.teacher_name, context.student_name,
                      [(it.id, it.rationale) for it in items], context.options.seed)
        root = context.work_dir / "train" / f"semcot-{key}"
        torch.manual_seed(context.options.seed)

        # 1. sentence encoder: InfoNCE between reasoning and condensed reasoning. The
        # teacher's hidden states of both (minutes on arith) are computed on first use, so a
        # rerun whose every stage is trained loads the stages without them.
        hidden: dict[str, list[torch.Tensor]] = {}

        def states(kind: str) -> list[torch.Tensor]:
            if not hidden:
                hidden["gt"] = teacher_hidden(teacher, tok, [it.rationale for it in items],
                                              start)
                hidden["cond"] = teacher_hidden(
                    teacher, tok, [condense(it.rationale, it.answer) for it in items], start)
            return hidden[kind]

        encoder = SentenceEncoder(teacher, start, cfg.st_layers, cfg.st_dim)
        pairs = list(range(len(items)))

        def st_step(frozen: bool) -> Any:
            def step(model: Any, batch: list[int]) -> StepOutput:
                a, am = _right_pad([states("gt")[i] for i in batch])
                b, bm = _right_pad([states("cond")[i] for i in batch])
                if frozen:
                    with torch.no_grad():
                        pa, pb = model.pooled(a, am), model.pooled(b, bm)
                    loss = semcot_infonce(model.proj(pa), model.proj(pb))
                else:
                    loss = semcot_infonce(model(a, am), model(b, bm))
                return StepOutput(loss, n_tokens=int(am.sum() + bm.sum()))
            return step

        train_runs: list[str] = []

        def trained(name: str, n: int, epochs: int) -> bool:
            """Whether stage ``name`` has nothing left to train (or no steps at all)."""
            return epochs < 1 or finished(root / name,
                                          total_steps(n, cfg.semcot_batch_size, epochs))

        def fit(module: nn.Module, params: list[nn.Parameter], step: Any, data: list[Any],
                epochs: int, lr: float, wd: float, name: str) -> None:
            if epochs < 1 or not params:
                return
            train_runs.append(str(root / name))
            steps = total_steps(len(data), cfg.semcot_batch_size, epochs)
            # checkpoints every 50 steps: a killed cpu-long phase resumes instead of restarting
            tc = TrainConfig(max_steps=steps, batch_size=cfg.semcot_batch_size, lr=lr,
                             weight_decay=wd, warmup_steps=max(1, steps // 20),
                             mixed_precision=cfg.mixed_precision, checkpoint_every=50,
                             seed=context.options.seed)
            Trainer(module, step, data, tc, root / name, param_groups=[{"params": params}]
                    ).train()

        if not (trained("st-linear", len(items), cfg.st_linear_epochs)
                and trained("st-llm", len(items), cfg.st_llm_epochs)):
            states("gt")  # here, not inside the first step: outside its timing and autocast
        for p in encoder.parameters():
            p.requires_grad_(False)
        encoder.proj.requires_grad_(True)
        fit(encoder, list(encoder.proj.parameters()), st_step(True), pairs,
            cfg.st_linear_epochs, cfg.st_linear_lr, cfg.st_linear_wd, "st-linear")
        encoder.requires_grad_(True)
        fit(encoder, list(encoder.parameters()), st_step(False), pairs, cfg.st_llm_epochs,
            cfg.st_llm_lr, cfg.st_llm_wd, "st-llm")
        encoder.eval().requires_grad_(False)
        # The generator's cosine targets; not needed when both generator stages are trained.
        targets: list[Any] = [None] * len(items)
        if not (trained("cg-linear", len(items), cfg.cg_linear_epochs)
                and trained("cg-llm", len(items), cfg.cg_llm_epochs)):
            with torch.no_grad():
                targets = [encoder(g[None])[0] for g in states("gt")]

        # 2. generator: alpha * (1 - cos) + (1 - alpha) * answer CE through the teacher.
        student, name = initial_student(context, cfg.student_layers)
        generator = Generator(student, teacher.config.hidden_size, cfg)
        # The answer prompt after the implicit states: the teacher's direct-answer prompt when
        # it was fine-tuned with one (arith), so the answer can follow without a rationale.
        answer_prompt = context.direct_prompt or ANSWER_PROMPT
        prompt_ids = tok(answer_prompt, add_special_tokens=False)["input_ids"]
        data = []
        for it, target in zip(items, targets, strict=True):
            query = PROMPT.format(question=it.question).rpartition(ANSWER_PROMPT)[0]
            answer_ids = tok(f" #### {it.answer}", add_special_tokens=False)["input_ids"]
            data.append({"query_ids": tok(query)["input_ids"], "prompt_ids": prompt_ids,
                         "answer_ids": answer_ids + [tok.eos_token_id], "target": target})

        def cg_step(model: Any, batch: list[dict[str, Any]]) -> StepOutput:
            implicit = model([b["query_ids"] for b in batch], cfg.k_train)
            logits, ids, mask = answer_ce(teacher, batch, implicit)
            loss, parts = semcot_generator_loss(
                encoder(implicit), torch.stack([b["target"] for b in batch]), logits, ids,
                mask=mask, alpha=cfg.alpha)
            return StepOutput(loss, n_tokens=int(mask.sum()),
                              metrics={k: float(v.detach()) for k, v in parts.items()})

        head = [generator.thought, *generator.proj.parameters()]
        fit(generator, head, cg_step, data, cfg.cg_linear_epochs, cfg.cg_linear_lr,
            cfg.cg_linear_wd, "cg-linear")
        for p in generator.lora_parameters():
            p.requires_grad_(True)
        fit(generator, head + generator.lora_parameters(), cg_step, data, cfg.cg_llm_epochs,
            cfg.cg_llm_lr, cfg.cg_llm_wd, "cg-llm")
        context.config.update({"recipe": {**asdict(cfg), "st_start": start},
                               "train_examples": len(items), "checkpoint_dir": str(root),
                               "train_runs": train_runs,
                               "implicit_tokens_eval": cfg.k_eval,
                               "answer_prompt": answer_prompt})
        return SemCoTPipeline(generator, teacher, tok, cfg.k_eval, answer_prompt), \
            f"{name}+teacher"
