"""DeAR (Abdallah et al., 2025, arXiv:2508.16998): pointwise, then listwise distillation.

``bench run --method dear --suite beir`` trains once on the BoolQ train queries (``--set
train_collection=...`` to change) and reports three rows per collection: the undistilled
student (``dear-student-init``), the stage-1 pointwise student (``dear-p``) and stage 2,
the listwise LoRA adapter reranking dear-p's top ``stage2_depth`` (``dear-l``;
``methods/retrieval/dear_listwise.py``; ``--set stage2=false``
skips it). NarrativeQA and FiQA are zero-shot. Stage 1: the loss
(``methods/losses/dear.py``), the student (``methods/retrieval/pointwise_lm.py``), groups, cached
teacher scores, resumable training on the shared trainer. Still flagged ``partial``
(``PARTIAL_NOTE``, in every row): the offline default recipe does not beat BM25 on BoolQ
yet, and the real-scale recipe (README "Real scale: DeAR") has only been run offline with
tiny models, never with RankLLaMA on a GPU. Scale flags: ``--train-queries``, ``--epochs``,
``--top-k``, ``--group-size``, ``--window``, ``--stride`` (shorthands for ``--set`` keys).

Teacher: ``--teacher`` (default the packaged MiniLM bi-encoder) goes through
:func:`bench.retrieval.teachers.load_teacher_reranker`, the resolver the retrieval suites'
``rerank-teacher`` row uses too: a local or HF cross-encoder, a bi-encoder, or a
RankLLaMA-style peft adapter (``castorini/rankllama-v1-7b-lora-passage``, the teacher of
the DeAR paper's family), detected from its config files.

Groups: for each training query, its judged positive first, then N−1 BM25 hard negatives
(top ``negatives_depth`` minus judged documents, in BM25 order), as in DeAR/RankLLaMA.
Teacher scores are the MiniLM bi-encoder's cosine times ``teacher_scale`` (20, the logit
scale all-MiniLM-L6-v2 was trained with in MultipleNegativesRankingLoss), so that T = 2 is
applied to logits, not to cosines in [-1, 1]. Cross-encoders and RankLLaMA already give
logits, so their ``teacher_scale`` defaults to 1 (``--set teacher_scale=...`` overrides
either; see :func:`teacher_scale_for`).

Deeper students within the budget (``--set frozen_layers=F``): the first F of the
student's layers keep their pretrained weights and their states for the training pairs are
computed once (bf16) and cached, shared by all seeds, so a step trains only the layers
above (:mod:`methods.retrieval.frozen_layers`); a departure from the paper, which fine-tunes
the whole student, named in the row's model (``-12L-frozen8``) and config. Recipes are
compared on BoolQ's dev queries with ``--set eval_split=validation``.

Why this recipe (the experiment log, e1-e4, is docs/measurements/beir.md): with the chat
prompt neither the LM's own yes/no log-odds nor a trained yes/no head on a few layers
ranked clearly better than random order within the CPU budget, while the "echo" prompt (query,
passage, query again, ``ECHO_PROMPT``) gives the last-token state more to work with and a
random head then learns; student depth is what moved the student towards BM25, hence 16
layers for ``--preset cpu-long``.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.contracts import dataclass_settings
from bench.suite import Setting

# ``--preset cpu-long``: the recipe past the 30-minute default budget (resumable: rerun
# the same command after an interruption, in this session or a later one). 16 layers: depth
# is what moved the student towards BM25 (docs/measurements/beir.md, e3 and e4).
CPU_LONG: dict[str, Any] = {"student_layers": 16, "train_queries": 2308,
                             "stage2_windows": 300}
ECHO_PROMPT = "Query: {query}\nPassage: {doc}\nQuery: {query}"
PARTIAL_NOTE = ("DeAR is partial: the offline default does not yet beat BM25 on BoolQ, and "
                "the real-scale recipe (RankLLaMA or cross-encoder teacher, GPU) has been run "
                "only offline with tiny models")
REGISTRY = [{
    "name": "dear", "suites": ["beir"], "target": "DeAR",
    "summary": "DeAR: MiniLM teacher distilled into a 4-layer SmolLM2 pointwise reranker "
               "(stage 1), then a LoRA listwise permutation generator on it (stage 2)",
    "citation": "Abdallah et al. 2025 (DeAR), arXiv:2508.16998",
}]


@dataclass
class DeARConfig:
    student: str = "smollm2-135m-instruct"
    student_layers: int = 4
    frozen_layers: int = 0  # >0: the first F layers stay pretrained, their states cached
    head_init: str = "random"
    prompt: str = "echo"  # "Query: q / Passage: p / Query: q" as plain text, or "chat-yes-no"
    teacher_scale: float = 20.0
    train_queries: int = 2000
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
    from bench.retrieval.trec import ranked

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


def score_pairs(teacher: Any, pairs: Sequence[tuple[str, str]], queries: dict[str, str],
                docs: dict[str, str], cache_path: Path, progress: bool = True
                ) -> dict[tuple[str, str], float]:
    """Teacher scores of (query id, doc id) pairs through a score cache (both stages use
    the same file, so stage 2 rescores only pairs stage 1 never saw)."""
    from bench.core.progress import progress_bar
    from bench.retrieval.rerank import ScoreCache

    cache = ScoreCache(cache_path)
    todo = sorted({p for p in pairs if p not in cache.scores})
    if todo and hasattr(teacher, "prefetch"):
        teacher.prefetch(sorted({queries[q] for q, _ in todo} | {docs[d] for _, d in todo}),
                         progress=progress)
    with progress_bar(len(todo), "teacher scores", enabled=progress and bool(todo)) as advance:
        for start in range(0, len(todo), 256):
            chunk = todo[start:start + 256]
            cache.add(chunk, teacher.score([queries[q] for q, _ in chunk],
                                           [docs[d] for _, d in chunk]))
            advance(len(chunk))
    return cache.scores


def teacher_scale_for(teacher: Any, settings: dict[str, Any]) -> float:
    """``--set teacher_scale`` when given; else 20 for a bi-encoder (cosines in [-1, 1]
    brought to logit scale, the stage-1 default recipe) and 1 for teachers whose scores
    already are logits (cross-encoders, RankLLaMA)."""
    if settings.get("teacher_scale") is not None:
        return float(settings["teacher_scale"])
    if getattr(teacher, "kind", "bi-encoder") == "bi-encoder":
        return DeARConfig.teacher_scale
    return 1.0


def build_student(cfg: DeARConfig) -> Any:
    """The untrained student: the first ``student_layers`` layers of the LM plus a score
    head (seeded, so the "before distillation" row is exactly the model training starts
    from)."""
    import torch

    from bench.core.assets import first_k_layers_student, load_causal_lm
    from methods.retrieval.pointwise_lm import PointwiseLM

    lm, tokenizer = load_causal_lm(cfg.student)
    if cfg.student_layers < lm.config.num_hidden_layers:
        lm = first_k_layers_student(lm, cfg.student_layers)
    torch.manual_seed(cfg.seed)
    if cfg.prompt == "echo":
        return PointwiseLM(lm, tokenizer, head_init=cfg.head_init, prompt=ECHO_PROMPT,
                           chat=False, max_doc_tokens=cfg.max_doc_tokens)
    return PointwiseLM(lm, tokenizer, head_init=cfg.head_init, max_doc_tokens=cfg.max_doc_tokens)


def train_stage1(cfg: DeARConfig, *, queries: dict[str, str], docs: dict[str, str],
                 groups: list[tuple[str, list[str]]], teacher: Any, work_dir: Path,
                 progress: bool = True, states_dir: Path | None = None) -> Any:
    """Train the pointwise student on ``groups``; resumes from ``work_dir`` checkpoints.
    With ``cfg.frozen_layers`` the frozen layers' states are cached in ``states_dir``
    (default ``work_dir/frozen-states``; pass one folder for all seeds to share them)."""
    import torch

    from methods.losses.dear import dear_pointwise
    from methods.trainer import StepOutput, TrainConfig, Trainer, total_steps

    scores = score_pairs(teacher, [(q, d) for q, ds in groups for d in ds], queries, docs,
                         work_dir / f"teacher-{teacher.fingerprint()}.jsonl", progress)
    # (query, docs, teacher logits, index of the group's first pair in the frozen states)
    firsts = [0, *itertools.accumulate(len(ds) for _, ds in groups)][:-1]
    data = [(queries[q], [docs[d] for d in ds],
             [cfg.teacher_scale * scores[(q, d)] for d in ds], first)
            for (q, ds), first in zip(groups, firsts, strict=True)]

    model = build_student(cfg)
    lm = model.lm
    if cfg.freeze_embeddings:
        lm.get_input_embeddings().weight.requires_grad_(False)
    out = lm.get_output_embeddings()
    if out is not None and out.weight is not lm.get_input_embeddings().weight:
        out.weight.requires_grad_(False)  # the LM head is unused by the score
    states: list[torch.Tensor] = []
    if cfg.frozen_layers:
        from methods.retrieval.frozen_layers import cached_states

        for layer in list(lm.get_decoder().layers)[: cfg.frozen_layers]:
            layer.requires_grad_(False)
        states = cached_states(model, [(q, d) for q, ds, *_ in data for d in ds],
                               cfg.frozen_layers, states_dir or work_dir / "frozen-states",
                               progress=progress)
    body = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head")]

    def step(m: Any, batch: list[tuple[str, list[str], list[float], int]]) -> StepOutput:
        if cfg.frozen_layers:
            from methods.retrieval.frozen_layers import score_from_states

            rows = [states[first + j] for _, ds, _, first in batch for j in range(len(ds))]
            scores = score_from_states(m, rows, cfg.frozen_layers).view(len(batch), -1)
            n_tokens = sum(int(r.shape[0]) for r in rows)
        else:
            enc = m.encode([q for q, ds, *_ in batch for _ in ds],
                           [d for _, group, *_ in batch for d in group])
            scores = m(**enc).view(len(batch), -1)
            n_tokens = int(enc["attention_mask"].sum())
        teacher_scores = torch.tensor([t for _, _, t, _ in batch], dtype=torch.float32,
                                      device=scores.device)  # the student may be on a GPU
        loss = dear_pointwise(scores, teacher_scores, alpha=cfg.alpha,
                              temperature=cfg.temperature, main=cfg.main)
        return StepOutput(loss, n_tokens=n_tokens)

    steps = total_steps(len(data), cfg.batch_queries, cfg.epochs)
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


def for_inference(model: Any) -> Any:
    """bf16 weights for scoring (~2-3x faster on AMX CPUs); the head stays fp32."""
    import torch

    model = model.to(torch.bfloat16)
    model.head.float()
    return model.eval()


STAGE2_KEYS = {"window": "window", "stride": "stride", "stage2_depth": "depth",
               "stage2_windows": "train_windows", "stage2_epochs": "epochs",
               "stage2_lr": "lr", "stage2_rank": "lora_rank", "stage2_doc_tokens":
               "max_doc_tokens", "stage2_batch": "inference_batch",
               "rationale_file": "rationale_file"}


def build_listwise(context: Any, settings: dict[str, Any], *, lm: Any, tokenizer: Any,
                   dear_p: Any, queries: dict[str, str], docs: dict[str, str],
                   candidates: dict[str, dict[str, float]], teacher: Any, work: Path) -> Any:
    """Stage 2 on ``lm``, a copy of the stage-1 LM: train (or resume) the adapter on
    windows of the training queries' BM25 candidates, and return the listwise reranker
    whose first stage is ``dear_p`` (its scores are read from the score cache the pipeline
    wrote for the ``dear-p`` row, keyed the same way; a changed key only costs a
    rescoring). Must be the last row: it writes its repair counts into ``context.config``
    while it reranks, and rows built later would inherit them."""
    import hashlib

    from bench.retrieval import rerank
    from methods.retrieval.dear_listwise import (
        ListwiseConfig,
        ListwiseReranker,
        build_windows,
        load_rationales,
        train_stage2,
    )

    cfg = ListwiseConfig(**{f: settings[k] for k, f in STAGE2_KEYS.items() if k in settings},
                         seed=context.options.seed)
    cfg.depth = min(cfg.depth, int(settings["depth"]))
    context.settings.setdefault("window", cfg.window)  # what the pipeline passes to windows
    context.settings.setdefault("stride", cfg.stride)
    rationales = load_rationales(cfg.rationale_file)
    windows = build_windows(candidates, window=cfg.window, stride=cfg.stride, depth=cfg.depth,
                            n_windows=cfg.train_windows, seed=cfg.seed)
    scores = score_pairs(teacher, [(q, d) for q, ids in windows for d in ids], queries, docs,
                         work / f"teacher-{teacher.fingerprint()}.jsonl")
    digest = hashlib.sha256(json.dumps([asdict(cfg), sorted(rationales.items())]).encode())
    stage2_dir = work / f"stage2-{digest.hexdigest()[:12]}"
    model = train_stage2(cfg, lm=lm, tokenizer=tokenizer,
                         queries=queries, docs=docs, windows=windows, scores=scores,
                         work_dir=stage2_dir, rationales=rationales)
    test_docs = context.collection.docs()

    def first_stage(qs: dict[str, str], run: dict[str, dict[str, float]]) -> dict:
        key = "-".join([dear_p.fingerprint(), context.collection.checksum("test")[7:19],
                        rerank.run_hash(run, settings["depth"])])
        return rerank.rerank_pointwise(dear_p, qs, run, test_docs, depth=settings["depth"],
                                       batch_size=settings.get("batch_size", 32),
                                       cache_path=context.work_dir / "scores" / f"{key}.jsonl")

    from methods.trainer import logged_train_seconds

    seconds = logged_train_seconds(stage2_dir)  # as stage 1: resume-safe step times
    context.config["dear_l"] = {**asdict(cfg), "first_stage": "dear-p",
                                "train_windows_used": len(windows),
                                "train_seconds": seconds, "work_dir": stage2_dir.name}
    return ListwiseReranker(model, first_stage=first_stage, first_stage_reranker=dear_p,
                            report=context.config)


class DeAR:
    settings_keys = ("train_collection", "train_queries", "epochs", "group_size",
                     "student_layers", "frozen_layers", "lr", "head_lr", "alpha", "temperature", "main",
                     "batch_size", "max_doc_tokens", "stage2", "teacher_scale",
                     "teacher_dtype", *STAGE2_KEYS)
    own_specs = dataclass_settings(DeARConfig) + (
        Setting("alpha", "float", DeARConfig.alpha, "KL weight of the stage-1 loss", min=0,
                max=1),
        Setting("stage2", "bool", True, "train the listwise stage 2 (dear-l)"),
        Setting("teacher_dtype", "str", None, "teacher weights (null: as loaded)",
                choices=("float32", "bfloat16", "float16"), nullable=True),
        Setting("train_collection", "str", "offline/boolq", "collection DeAR trains on"),
        Setting("batch_size", "int", 32, "pairs scored per batch", min=1),
    )

    @property
    def setting_specs(self) -> tuple[Setting, ...]:
        """Stage 1's typed keys, then the ``stage2_*`` keys typed by the listwise config
        field each sets (a property: that config's module imports torch)."""
        from methods.retrieval.dear_listwise import ListwiseConfig

        return self.own_specs + dataclass_settings(ListwiseConfig, rename=STAGE2_KEYS)
    # Preset recipes on top of DeARConfig / ListwiseConfig defaults; ``--set`` wins over them.
    presets: dict[str, dict[str, Any]] = {
        "smoke": {"train_queries": 64, "epochs": 1, "stage2_windows": 48},
        "cpu-long": CPU_LONG,
    }

    def recipe_settings(self, preset: str, settings: dict[str, Any]) -> dict[str, Any]:
        """The preset's recipe overlaid by the run's settings (suite preset + ``--set``)."""
        return {**self.presets.get(preset, {}), **settings}

    def build_rerankers(self, context: Any) -> list[tuple[str, Any, str]]:
        import hashlib
        from dataclasses import fields

        from bench.retrieval.collections import load_collection
        from bench.retrieval.teachers import TEACHER_DEFAULT, load_teacher_reranker

        settings = self.recipe_settings(context.options.preset, context.settings)
        names = {f.name for f in fields(DeARConfig)}
        cfg = DeARConfig(**{k: v for k, v in settings.items() if k in names},
                         seed=context.options.seed)
        if context.options.student:
            cfg.student = context.options.student
        if not 0 <= cfg.frozen_layers < cfg.student_layers:
            from bench.errors import UsageError

            raise UsageError(f"--set frozen_layers={cfg.frozen_layers}: must be at least 0 "
                             f"and below student_layers ({cfg.student_layers}), so that some "
                             "layers train")
        train_id = settings.get("train_collection", "offline/boolq")
        train = (context.collection if context.collection.id == train_id
                 else load_collection(train_id))
        queries = dict(sorted(train.queries("train").items())[: cfg.train_queries])
        candidates = context.bm25(train, queries)
        groups = build_groups(queries, train.qrels("train"), candidates, cfg.group_size,
                              cfg.negatives_depth)
        teacher_name = context.options.teacher or TEACHER_DEFAULT
        teacher = load_teacher_reranker(teacher_name, dtype=settings.get("teacher_dtype"))
        cfg.teacher_scale = teacher_scale_for(teacher, settings)  # 20 for the default
        ident = [asdict(cfg), teacher_name]  # the default teacher's key as it always was
        if settings.get("teacher_dtype"):
            ident.append(str(settings["teacher_dtype"]))
        key = hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:12]
        work = context.work_dir / "dear" / f"{train.checksum('train')[7:19]}-{key}"
        student = train_stage1(cfg, queries=queries, docs=train.docs(), groups=groups,
                               teacher=teacher, work_dir=work,
                               states_dir=work.parent / "frozen-states")
        model = f"{Path(cfg.student).name}-{cfg.student_layers}L" + (
            f"-frozen{cfg.frozen_layers}" if cfg.frozen_layers else "")
        from methods.trainer import logged_train_seconds

        context.config.update({"implementation": "partial", "dear": asdict(cfg),
                               "dear_p": {"train_seconds": logged_train_seconds(
                                   work / "stage1")},
                               "teacher": teacher_name, "teacher_kind": teacher.kind,
                               "train_collection": train.id,
                               "train_groups": len(groups)})
        context.notes.append(PARTIAL_NOTE)
        stage2 = settings.get("stage2", True)
        lm = copy.deepcopy(student.lm) if stage2 else None  # before bf16 casts the student
        dear_p, init = for_inference(student), for_inference(build_student(cfg))
        if cfg.frozen_layers:  # both keep the pretrained lower layers: run them once a pair
            from methods.retrieval.frozen_layers import SharedLowerStates, SharedStatesReranker

            shared = SharedLowerStates(dear_p, cfg.frozen_layers)
            init, dear_p = (SharedStatesReranker(init, shared),
                            SharedStatesReranker(dear_p, shared))
            context.config["shared_lower_states"] = (
                f"the first {cfg.frozen_layers} layers' states are computed once per pair for "
                "dear-student-init and dear-p (so dear-p's rerank time leaves them out); "
                "each row's cost probe times its whole student")
        rows = [("dear-student-init", init, model), ("dear-p", dear_p, model)]
        if stage2:  # last row: it records its parse repairs into context.config
            rows.append(("dear-l", build_listwise(
                context, settings, lm=lm, tokenizer=student.tokenizer, dear_p=dear_p,
                queries=queries,
                docs=train.docs(), candidates=candidates, teacher=teacher, work=work), model))
        return rows
