"""DeAR (Abdallah et al., 2025, arXiv:2508.16998): stage 1, pointwise distillation.

PARTIAL IMPLEMENTATION. Done: the stage-1 loss (``methods/losses/dear.py``), the student
(``methods/pointwise_lm.py``), group construction, cached teacher scores and resumable
training on the shared trainer. Not done: the listwise stage 2 (LoRA permutation
generation; its text formats and parser are in ``methods/listwise.py``), the suite hook
that turns the trained student into leaderboard rows, and the 30-minute default. The
method is therefore not registered, and ``bench run --method dear`` says so.

Groups: for each training query, its judged positive first, then N−1 BM25 hard negatives
(top ``negatives_depth`` minus judged documents, in BM25 order), as in DeAR/RankLLaMA.
Teacher scores are the MiniLM bi-encoder's cosine times ``teacher_scale`` (20, the logit
scale all-MiniLM-L6-v2 was trained with in MultipleNegativesRankingLoss), so that T = 2 is
applied to logits, not to cosines in [-1, 1].

Recipe measurements (2-core CPU; BoolQ, first 50 test queries, BM25 top-20 reranked;
BM25 nDCG@10 0.847 there, random order ≈ 0.30):

- untrained yes/no head (log-odds of "Yes" vs "No" in the chat prompt) on the first k
  layers of SmolLM2-135M-Instruct: k = 2/4/8/16/30 → 0.33/0.15/0.24/0.31/0.30;
- ridge probe of the last-token state onto teacher scores (150-300 train queries × 8):
  chat prompt 0.30-0.33; "echo" prompt (query, passage, query again) 0.39-0.44;
- query likelihood (UPR) with the full model 0.857 (30 queries), 0.18 with 8 layers;
- e1: chat prompt, yes/no head, k = 4, 300 queries × 8, lr 1e-4 (head 1e-3), 6 min:
  0.314 (loss flat: no learning, as DESIGN §3 reported);
- e2 (current defaults): echo prompt, random head, k = 4, all 2,308 train queries × 4,
  batch 4 queries, lr 3e-4 (head 1e-3), 1 epoch, bf16 autocast, 9.4 min: **0.804**
  (loss 1.58 → 0.72). Learning is visible; it does not yet beat BM25.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ECHO_PROMPT = "Query: {query}\nPassage: {doc}\nQuery: {query}"
REGISTRY: list[dict[str, Any]] = []  # registered once the recipe is complete (see above)


@dataclass
class DeARConfig:
    student: str = "smollm2-135m-instruct"
    student_layers: int = 4
    head_init: str = "random"
    prompt: str = "echo"  # "Query: q / Passage: p / Query: q" as plain text, or "chat-yes-no"
    teacher_scale: float = 20.0
    train_queries: int = 2308
    group_size: int = 4
    negatives_depth: int = 30
    epochs: int = 1
    batch_queries: int = 4
    lr: float = 3e-4
    head_lr: float = 1e-3
    freeze_embeddings: bool = True
    alpha: float = 0.1
    temperature: float = 2.0
    main: str = "ce"
    max_doc_tokens: int = 128
    mixed_precision: str = "bf16"
    checkpoint_every: int = 25
    seed: int = 0


def build_groups(queries: dict[str, str], qrels: dict[str, dict[str, int]],
                 candidates: dict[str, dict[str, float]], group_size: int,
                 negatives_depth: int) -> list[tuple[str, list[str]]]:
    """(query id, [positive, hard negatives...]) for queries with a judged positive and
    enough BM25 negatives; the first judged positive by doc id is used."""
    from bench.trec import ranked

    groups = []
    for qid in sorted(queries):
        positives = sorted(d for d, rel in qrels.get(qid, {}).items() if rel > 0)
        if not positives:
            continue
        judged = set(qrels[qid])
        negatives = [d for d, _ in ranked(candidates.get(qid, {}))[:negatives_depth]
                     if d not in judged][: group_size - 1]
        if len(negatives) == group_size - 1:
            groups.append((qid, [positives[0], *negatives]))
    return groups


def train_stage1(cfg: DeARConfig, *, queries: dict[str, str], docs: dict[str, str],
                 groups: list[tuple[str, list[str]]], teacher: Any, work_dir: Path,
                 progress: bool = True) -> Any:
    """Train the pointwise student on ``groups``; resumes from ``work_dir`` checkpoints."""
    import torch

    from bench.assets import first_k_layers_student, load_causal_lm
    from bench.retrieval.rerank import ScoreCache
    from methods.losses.dear import dear_pointwise
    from methods.pointwise_lm import PointwiseLM
    from methods.trainer import StepOutput, TrainConfig, Trainer

    torch.manual_seed(cfg.seed)
    cache = ScoreCache(work_dir / f"teacher-{teacher.fingerprint()}.jsonl")
    todo = [(q, d) for q, ds in groups for d in ds if (q, d) not in cache.scores]
    for start in range(0, len(todo), 256):
        chunk = todo[start:start + 256]
        cache.add(chunk, teacher.score([queries[q] for q, _ in chunk], [docs[d] for _, d in chunk]))
    data = [(queries[q], [docs[d] for d in ds],
             [cfg.teacher_scale * cache.scores[(q, d)] for d in ds]) for q, ds in groups]

    lm, tokenizer = load_causal_lm(cfg.student)
    if cfg.student_layers < lm.config.num_hidden_layers:
        lm = first_k_layers_student(lm, cfg.student_layers)
    if cfg.prompt == "echo":
        model = PointwiseLM(lm, tokenizer, head_init=cfg.head_init, prompt=ECHO_PROMPT,
                            chat=False, max_doc_tokens=cfg.max_doc_tokens)
    else:
        model = PointwiseLM(lm, tokenizer, head_init=cfg.head_init,
                            max_doc_tokens=cfg.max_doc_tokens)
    if cfg.freeze_embeddings:
        lm.get_input_embeddings().weight.requires_grad_(False)
    lm.get_output_embeddings().weight.requires_grad_(False)  # unused by the score
    body = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head")]

    def step(m: Any, batch: list[tuple[str, list[str], list[float]]]) -> StepOutput:
        qs = [q for q, ds, _ in batch for _ in ds]
        ds = [d for _, group, _ in batch for d in group]
        enc = m.encode(qs, ds)
        scores = m(**enc).view(len(batch), -1)
        teacher_scores = torch.tensor([t for *_, t in batch], dtype=torch.float32)
        loss = dear_pointwise(scores, teacher_scores, alpha=cfg.alpha,
                              temperature=cfg.temperature, main=cfg.main)
        return StepOutput(loss, n_tokens=int(enc["attention_mask"].sum()))

    steps = max(1, cfg.epochs * -(-len(data) // cfg.batch_queries))
    train_cfg = TrainConfig(max_steps=steps, batch_size=cfg.batch_queries, lr=cfg.lr,
                            warmup_steps=max(1, steps // 10), schedule="cosine",
                            mixed_precision=cfg.mixed_precision,
                            checkpoint_every=cfg.checkpoint_every, seed=cfg.seed,
                            progress=progress)
    groups_params = [{"params": body, "lr": cfg.lr},
                     {"params": list(model.head.parameters()), "lr": cfg.head_lr}]
    trainer = Trainer(model, step, data, train_cfg, work_dir / "stage1",
                      param_groups=groups_params)
    (work_dir / "stage1").mkdir(parents=True, exist_ok=True)
    (work_dir / "stage1" / "dear_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    return trainer.train()
