"""DeAR stage 2: a LoRA adapter that makes the stage-1 student generate permutations.

The adapter (peft, on every linear layer of the decoder) sits on a copy of the language
model of the stage-1 student (``PointwiseLM.lm``: the first k SmolLM2 layers whose body
stage 1 trained; embeddings and LM head are the original ones). Training windows are w BM25
candidates of a training query, shown in BM25 order (a first-stage order, as at inference)
with the teacher's order as the target ``[i] > [j] > ...`` (RankGPT format,
``methods.retrieval.listwise``), after a ``<think>`` rationale when ``rationale_file`` (JSONL of
``{"query_id", "rationale"}``, as DeAR's chain-of-thought data) has one for the query.
Windows sit where inference puts them: the sliding-window spans over the top ``depth``.
Loss: causal-LM cross-entropy on the target tokens (+ EOS) only, with logits computed at
those positions only (the 49k-word head over a ~650-token prompt would cost more than the
decoder). Trained on the shared :class:`methods.trainer.Trainer` (checkpoints, exact
resume); the adapter is saved as safetensors by ``save_pretrained`` at the end.

Inference (:class:`ListwiseReranker`) first reorders each query's candidates with the
stage-1 reranker (``first_stage``: DeAR-L reranks DeAR-P's ranking, not BM25's), then runs
``bench.retrieval.rerank.sliding_window``'s spans over the top ``min(depth, suite depth)``,
in lockstep across queries so that the windows of many queries decode as one batch (hand
greedy loop, KV cache, left padding, LoRA merged, bf16 weights). Each output is parsed
by ``methods.retrieval.listwise.parse_permutation``; its repair counts accumulate in ``report``
(the result's config: ``listwise_repairs``, ``listwise_windows_per_s``).

Budget (the measurements behind it, and stage 2's results at the time, are in
docs/measurements/beir.md): on a CPU, generation is the cost, so it runs on the hand greedy
loop with the LoRA merged and bf16 weights (``generate``, a live adapter and fp32 were each
slower), and the default reranks DeAR-P's top 10 with one window of 10, the part nDCG@10
sees (ranks 11-20 keep DeAR-P's order); depth 20 at w = 10 / stride 5 would triple the
windows.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from methods.retrieval.listwise import Repairs, parse_permutation, target_text, window_messages

Run = dict[str, dict[str, float]]


@dataclass
class ListwiseConfig:
    window: int = 10
    stride: int = 10
    depth: int = 10  # listwise depth (capped by the suite's); training windows match it
    max_doc_tokens: int = 48
    train_windows: int = 200
    epochs: int = 2
    batch_windows: int = 4
    lr: float = 2e-3
    lora_rank: int = 16
    lora_alpha: int = 32
    mixed_precision: str = "bf16"
    checkpoint_every: int = 25
    rationale_file: str | None = None
    max_rationale_tokens: int = 128
    inference_batch: int = 16
    inference_dtype: str = field(default="bf16", metadata={"choices": ("bf16", "fp32")})
    seed: int = 0


def window_spans(n: int, window: int, stride: int) -> list[tuple[int, int]]:
    """The ``[start, end)`` spans :func:`bench.retrieval.rerank.sliding_window` visits."""
    spans, end = [], n
    while end > 0:
        start = max(0, end - window)
        spans.append((start, end))
        if start == 0:
            break
        end -= stride
    return spans


def teacher_order(scores: Sequence[float]) -> list[int]:
    """Window positions by descending teacher score; ties keep the input order."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def load_rationales(path: str | Path | None) -> dict[str, str]:
    """``{query_id: rationale}`` from a JSONL file (DeAR's CoT data format, reduced)."""
    if not path:
        return {}
    rows = (json.loads(line) for line in Path(path).read_text().splitlines() if line.strip())
    return {str(r["query_id"]): str(r["rationale"]) for r in rows}


def build_windows(candidates: Run, *, window: int, stride: int, depth: int, n_windows: int,
                  seed: int) -> list[tuple[str, list[str]]]:
    """``(query id, doc ids in first-stage order)`` for up to ``n_windows`` windows: all
    sliding-window spans of every query's top ``depth``, in a seeded random order."""
    from bench.retrieval.trec import ranked

    pool = []
    for qid in sorted(candidates):
        head = [d for d, _ in ranked(candidates[qid])[:depth]]
        if len(head) >= 2:
            pool.extend((qid, head[s:e]) for s, e in window_spans(len(head), window, stride)
                        if e - s >= 2)
    random.Random(seed).shuffle(pool)
    return pool[:n_windows]


class ListwiseLM(torch.nn.Module):
    """The adapted LM plus its prompt format; ``forward`` is the training loss."""

    def __init__(self, lm: Any, tokenizer: Any, cfg: ListwiseConfig) -> None:
        super().__init__()
        self.lm = lm
        self.tokenizer = tokenizer
        self.cfg = cfg
        self._cut: dict[str, str] = {}

    def _truncate(self, doc: str) -> str:
        if doc not in self._cut:
            ids = self.tokenizer.encode(doc, add_special_tokens=False)
            self._cut[doc] = (self.tokenizer.decode(ids[:self.cfg.max_doc_tokens])
                              if len(ids) > self.cfg.max_doc_tokens else doc)
        return self._cut[doc]

    def prompt_ids(self, query: str, passages: Sequence[str]) -> list[int]:
        """The window prompt up to where the answer starts (chat template if any)."""
        messages = window_messages(query, [self._truncate(p) for p in passages])
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                      tokenize=False)
        else:  # plain tokenizers (the tiny test model): turns joined, then "Answer:"
            text = "\n\n".join(m["content"] for m in messages) + "\nAnswer:"
        return self.tokenizer.encode(text, add_special_tokens=False)

    def example(self, query: str, passages: Sequence[str], order: Sequence[int],
                rationale: str | None = None) -> tuple[list[int], int]:
        """(token ids of prompt + target + EOS, prompt length)."""
        prompt = self.prompt_ids(query, passages)
        target = self.tokenizer.encode(target_text(order, rationale), add_special_tokens=False)
        eos = [] if self.tokenizer.eos_token_id is None else [self.tokenizer.eos_token_id]
        return prompt + target + eos, len(prompt)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                rows: torch.Tensor, cols: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of ``targets`` predicted at hidden positions (rows, cols)."""
        base = self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm
        hidden = base.get_decoder()(input_ids=input_ids,
                                    attention_mask=attention_mask).last_hidden_state
        logits = base.get_output_embeddings()(hidden[rows, cols])
        return torch.nn.functional.cross_entropy(logits.float(), targets)


def collate(items: list[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch; the loss positions are the prompt's last token .. before EOS."""
    width = max(len(ids) for ids, _ in items)
    input_ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(items), width), dtype=torch.long)
    rows, cols, targets = [], [], []
    for r, (ids, n_prompt) in enumerate(items):
        input_ids[r, :len(ids)] = torch.tensor(ids)
        attention[r, :len(ids)] = 1
        for c in range(n_prompt - 1, len(ids) - 1):
            rows.append(r)
            cols.append(c)
            targets.append(ids[c + 1])
    return {"input_ids": input_ids, "attention_mask": attention, "rows": torch.tensor(rows),
            "cols": torch.tensor(cols), "targets": torch.tensor(targets)}


def add_lora(lm: Any, cfg: ListwiseConfig) -> Any:
    """A peft LoRA adapter (rank ``lora_rank``) on every linear layer but the LM head."""
    from peft import LoraConfig

    from bench.core.hf import with_lora

    torch.manual_seed(cfg.seed)
    return with_lora(lm, LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha,
                                    lora_dropout=0.0, target_modules="all-linear",
                                    task_type="CAUSAL_LM"))


def train_stage2(cfg: ListwiseConfig, *, lm: Any, tokenizer: Any, queries: dict[str, str],
                 docs: dict[str, str], windows: list[tuple[str, list[str]]],
                 scores: dict[tuple[str, str], float], work_dir: Path,
                 rationales: dict[str, str] | None = None, progress: bool = True
                 ) -> ListwiseLM:
    """LoRA-train ``lm`` (modified in place: pass a copy) on teacher-ordered windows.

    Resumes from ``work_dir/checkpoints``; the adapter is saved (safetensors) to
    ``work_dir/adapter`` at the end, with ``stage2_config.json`` (training time: the trainer's
    ``metrics.jsonl``, :func:`methods.trainer.logged_train_seconds`).
    """
    from methods.trainer import StepOutput, TrainConfig, Trainer, total_steps

    model = ListwiseLM(add_lora(lm, cfg), tokenizer, cfg)
    rationales = rationales or {}
    data = [model.example(queries[q], [docs[d] for d in ids],
                          teacher_order([scores[(q, d)] for d in ids]), rationales.get(q))
            for q, ids in windows]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def step(m: Any, batch: dict[str, torch.Tensor]) -> StepOutput:
        return StepOutput(m(**batch), n_tokens=int(batch["attention_mask"].sum()))

    steps = total_steps(len(data), cfg.batch_windows, cfg.epochs)
    train_cfg = TrainConfig(max_steps=steps, batch_size=cfg.batch_windows, lr=cfg.lr,
                            warmup_steps=max(1, steps // 10), schedule="cosine",
                            mixed_precision=cfg.mixed_precision,
                            checkpoint_every=cfg.checkpoint_every, seed=cfg.seed,
                            progress=progress)
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "stage2_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    trainer = Trainer(model, step, data, train_cfg, work_dir,
                      collate_fn=lambda items: collate(items, pad))
    model = trainer.train()
    model.lm.save_pretrained(str(work_dir / "adapter"))  # adapter_model.safetensors
    return model.eval()


def greedy(lm: Any, prompts: Sequence[Sequence[int]], max_new_tokens: int,
           eos_id: int | None, pad_id: int) -> list[list[int]]:
    """Batched greedy decoding with a KV cache over left-padded prompts.

    A hand loop rather than ``generate``: the logits are computed for the last position
    only, from a contiguous slice (the LM head over a strided 3-D slice made PyTorch copy
    the 49k x 576 head once per row: 4.5 of 7 s of a 16-window prefill), and decoding
    stops as soon as every row has emitted EOS. Returns the new tokens, EOS excluded.
    """
    from bench.core import hf
    from bench.core.hf import left_pad

    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    decoder, head = base.get_decoder(), base.get_output_embeddings()
    ids, mask, pos = left_pad(prompts, pad_id)
    device = head.weight.device
    ids, mask, pos = ids.to(device), mask.to(device), pos.to(device)
    out = decoder(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
    cache = hf.output_cache(out)
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    rows: list[list[int]] = [[] for _ in prompts]
    for _ in range(max_new_tokens):
        nxt = head(out.last_hidden_state[:, -1].contiguous()).argmax(-1)
        if eos_id is not None:
            done |= nxt == eos_id
        for r, (token, finished) in enumerate(zip(nxt.tolist(), done.tolist(), strict=True)):
            if not finished:
                rows[r].append(token)
        if bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        pos = pos[:, -1:] + 1
        out = decoder(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos,
                      **hf.cache_kwargs(decoder, cache))
        cache = hf.output_cache(out)
    return rows


class ListwiseReranker:
    """``permute(query, docs)`` by greedy generation; ``rerank_run`` batches across queries.

    ``first_stage(queries, candidates) -> run`` reorders the candidates before the windows
    (DeAR-L reranks DeAR-P's ranking); ``first_stage_reranker`` is the reranker behind it,
    held so that the row's cost counts its parameters and time (:mod:`bench.core.cost`);
    ``report`` (a dict) receives the repair counts and throughput as they accumulate.
    ``seconds`` is the wall time spent generating windows, first stage excluded.
    """

    def __init__(self, model: ListwiseLM, *, first_stage: Callable[[dict, Run], Run] | None
                 = None, first_stage_reranker: Any = None,
                 report: dict[str, Any] | None = None) -> None:
        cfg = model.cfg
        lm = model.lm
        if hasattr(lm, "merge_and_unload"):  # measured 1.2-1.5x faster than a live adapter
            lm = lm.merge_and_unload()
        if cfg.inference_dtype == "bf16":
            lm = lm.to(torch.bfloat16)
        model.lm = self.lm = lm.eval()
        self.max_depth = cfg.depth
        self.model = model
        self.tokenizer = model.tokenizer
        self.first_stage = first_stage
        self.first_stage_reranker = first_stage_reranker
        self.report = report if report is not None else {}
        self.repairs = Repairs()
        self.seconds = 0.0
        pad = self.tokenizer.pad_token_id
        self.pad_id = 0 if pad is None else int(pad)
        self._fingerprint: str | None = None

    def fingerprint(self) -> str:
        from bench.core.hf import model_fingerprint

        if self._fingerprint is None:
            cfg = self.model.cfg
            self._fingerprint = model_fingerprint(self.lm, "dear-listwise", cfg.max_doc_tokens,
                                                  cfg.rationale_file)
        return self._fingerprint

    def _max_new_tokens(self, n: int) -> int:
        perm = len(self.tokenizer.encode(target_text(list(range(n))), add_special_tokens=False))
        return perm + 4 + (self.model.cfg.max_rationale_tokens if self.model.cfg.rationale_file
                           else 0)

    @torch.inference_mode()
    def generate(self, windows: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
        """Greedy continuations of the window prompts, batched by prompt length."""
        prompts = [self.model.prompt_ids(q, ps) for q, ps in windows]
        texts = [""] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        size = self.model.cfg.inference_batch
        for b in range(0, len(order), size):
            idx = order[b:b + size]
            new = self._max_new_tokens(max(len(windows[i][1]) for i in idx))
            for i, ids in zip(idx, greedy(self.lm, [prompts[i] for i in idx], new,
                                          self.tokenizer.eos_token_id, self.pad_id),
                              strict=True):
                texts[i] = self.tokenizer.decode(ids, skip_special_tokens=True)
        return texts

    def permute_many(self, windows: Sequence[tuple[str, Sequence[str]]]) -> list[list[int]]:
        """One repaired permutation per (query, passages) window."""
        start = time.perf_counter()
        orders = []
        for text, (_, passages) in zip(self.generate(windows), windows, strict=True):
            parsed = parse_permutation(text, len(passages))
            self.repairs.add(parsed.repairs)
            orders.append(parsed.order)
        self.seconds += time.perf_counter() - start
        self.report["listwise_repairs"] = self.repairs.as_dict()
        self.report["listwise_windows_per_s"] = round(
            self.repairs.windows / max(self.seconds, 1e-9), 3)
        return orders

    def permute(self, query: str, docs: Sequence[str]) -> list[int]:
        return self.permute_many([(query, docs)])[0]

    def rerank_run(self, queries: dict[str, str], candidates: Run, docs: dict[str, str], *,
                   depth: int, window: int, stride: int, progress: bool = True) -> Run:
        """``rerank_listwise`` semantics (same window spans) over the first ``min(depth,
        cfg.depth)`` of the first-stage ranking, windows batched across queries."""
        from bench.core.progress import progress_bar
        from bench.retrieval.trec import ranked

        if window < 2 or not 1 <= stride <= window:
            raise ValueError(f"need window >= 2 and 1 <= stride <= window, got {window}/{stride}")
        if self.first_stage is not None:  # over the suite's depth: below it, BM25 order
            candidates = self.first_stage(queries, candidates)
        depth = min(depth, self.max_depth)
        lists = {q: [d for d, _ in ranked(candidates[q])] for q in sorted(candidates)
                 if q in queries}
        spans = {q: window_spans(min(depth, len(ids)), window, stride) for q, ids in lists.items()}
        total = sum(len(s) for s in spans.values())
        with progress_bar(total, "listwise", enabled=progress) as advance:
            for k in range(max((len(s) for s in spans.values()), default=0)):
                jobs = [(q, spans[q][k]) for q in lists if k < len(spans[q])]
                perms = self.permute_many([(queries[q], [docs[d] for d in lists[q][s:e]])
                                           for q, (s, e) in jobs])
                for (q, (s, e)), perm in zip(jobs, perms, strict=True):
                    chunk = lists[q][s:e]
                    lists[q][s:e] = [chunk[i] for i in perm]
                advance(len(jobs))
        return {q: {d: float(len(ids) - i) for i, d in enumerate(ids)}
                for q, ids in lists.items()}
