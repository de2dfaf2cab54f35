"""Logit teachers for the retrieval suites and DeAR, and the one ``--teacher`` resolver.

- :class:`CrossEncoderReranker`: an encoder with a sequence-classification head reading the
  pair jointly (Nogueira & Cho 2019, e.g. ``cross-encoder/ms-marco-MiniLM-L-6-v2``).
- :class:`DecoderReranker`: RankLLaMA (Ma et al. 2023): a decoder LM with a one-logit
  score head on the last token, usually a peft LoRA adapter over the base LM
  (``castorini/rankllama-v1-7b-lora-passage`` over ``meta-llama/Llama-2-7b-hf``).

:func:`load_teacher_reranker` turns one ``--teacher`` string into one of these or the
bi-encoder of :mod:`bench.retrieval.rerankers` (:func:`describe_reranker` documents the
rule); the ``beir``/``trec-dl`` teacher rows and DeAR's teacher go through it, so one
string means the same model everywhere.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core.hf import left_pad, model_fingerprint
from bench.retrieval.rerankers import BiEncoderReranker

TEACHER_DEFAULT = "all-minilm-l6-v2"
RANKLLAMA_QUERY = "query: {query}{eos}"
RANKLLAMA_DOC = "document: {doc}{eos}"


def pair_scores(logits: Any) -> Any:
    """One relevance score per row of ``[batch, num_labels]`` classifier logits: the logit
    itself for one label (RankLLaMA, the ms-marco cross-encoders), ``logit[1] - logit[0]``
    for two (monoBERT-style "relevant" vs "not relevant": the log-odds, which ranks like
    the softmax probability but keeps a logit's scale for distillation temperatures)."""
    logits = logits.float()
    if logits.shape[-1] == 1:
        return logits[:, 0]
    if logits.shape[-1] == 2:
        return logits[:, 1] - logits[:, 0]
    raise ValueError(f"a pointwise reranker needs 1 or 2 labels, got {logits.shape[-1]}")


def _truncate(tokenizer: Any, text: str, max_tokens: int) -> str:
    ids = tokenizer.encode(text, add_special_tokens=False)
    return tokenizer.decode(ids[:max_tokens]) if len(ids) > max_tokens else text


def _identity_fingerprint(identity: str | None, model: Any, *extra: object) -> str:
    """``identity`` (e.g. adapter weights + base model id) hashed with the settings when
    given, else the weights themselves (exact, but slow for a 7B model)."""
    if identity is None:
        return model_fingerprint(model, *extra)
    return hashlib.sha256(repr((identity, *extra)).encode()).hexdigest()[:16]


class CrossEncoderReranker:
    """Scores each (query, doc) pair with one forward pass of a sequence classifier.

    Pairs are batched by length (less padding) and put back in order; the tokenizer cuts
    the longer of the two texts to ``max_length`` tokens (BERT's pair truncation). Right
    padding with an attention mask: a pair scores the same alone or in a batch.
    """

    kind = "cross-encoder"

    def __init__(self, model: Any, tokenizer: Any, *, max_length: int = 512,
                 batch_size: int = 32, identity: str | None = None) -> None:
        num_labels = int(model.config.num_labels)
        if num_labels not in (1, 2):
            raise ValueError(f"cross-encoder has {num_labels} labels; need 1 or 2")
        self.model = model.eval()
        self.tokenizer = tokenizer
        # Never past what the model can read (BERT-likes: 512 positions; a tokenizer
        # without a limit reports a huge model_max_length).
        limits = [max_length, int(getattr(tokenizer, "model_max_length", max_length)),
                  int(getattr(model.config, "max_position_embeddings", max_length))]
        self.max_length = min(limits)
        self.batch_size = batch_size
        self.identity = identity
        self._fingerprint: str | None = None

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = _identity_fingerprint(self.identity, self.model,
                                                      "cross-encoder", self.max_length)
        return self._fingerprint

    def score(self, queries: Sequence[str], docs: Sequence[str]) -> list[float]:
        import torch

        order = sorted(range(len(queries)), key=lambda i: len(queries[i]) + len(docs[i]),
                       reverse=True)
        out = [0.0] * len(order)
        device = next(self.model.parameters()).device
        with torch.no_grad():
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                batch = self.tokenizer([queries[i] for i in idx], [docs[i] for i in idx],
                                       padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt")
                logits = self.model(**batch.to(device)).logits
                for i, value in zip(idx, pair_scores(logits).cpu().tolist(), strict=True):
                    out[i] = value
        return out


class DecoderReranker:
    """RankLLaMA: ``"query: {q}</s>"`` and ``"document: {d}</s>"`` as a text pair through
    the model's own tokenizer (``</s>`` is the tokenizer's EOS token), scored by the
    classification head on the last token's final hidden state.

    The query and the document are cut to ``max_query_tokens`` / ``max_doc_tokens``
    before the EOS is appended, so the scored last token is always the EOS the model was
    trained to read (truncating the joined pair could cut it off). Batches are left-padded
    with explicit position ids (see :func:`left_pad`), so the head reads column -1 and a
    pair scores the same alone or in a batch; this also avoids the model's own
    "last non-pad token" search, which goes wrong when the pad token is the EOS.
    """

    kind = "decoder"

    def __init__(self, model: Any, tokenizer: Any, *, max_query_tokens: int = 32,
                 max_doc_tokens: int = 160, batch_size: int = 16,
                 identity: str | None = None) -> None:
        self.head = getattr(model, "score", None)
        if self.head is None:
            raise ValueError(f"{type(model).__name__} has no `score` head; a decoder reranker "
                             "needs a *ForSequenceClassification decoder")
        if int(model.config.num_labels) not in (1, 2):
            raise ValueError(f"decoder reranker has {model.config.num_labels} labels; need 1 or 2")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_query_tokens = max_query_tokens
        self.max_doc_tokens = max_doc_tokens
        self.batch_size = batch_size
        self.identity = identity
        self.pad_id = next((t for t in (tokenizer.pad_token_id, tokenizer.unk_token_id,
                                        tokenizer.eos_token_id) if t is not None), 0)
        self._fingerprint: str | None = None

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = _identity_fingerprint(
                self.identity, self.model, "decoder-reranker", RANKLLAMA_QUERY,
                RANKLLAMA_DOC, self.max_query_tokens, self.max_doc_tokens)
        return self._fingerprint

    def render(self, query: str, doc: str) -> list[int]:
        eos = self.tokenizer.eos_token or ""
        q = RANKLLAMA_QUERY.format(query=_truncate(self.tokenizer, query, self.max_query_tokens),
                                   eos=eos)
        d = RANKLLAMA_DOC.format(doc=_truncate(self.tokenizer, doc, self.max_doc_tokens), eos=eos)
        return list(self.tokenizer(q, d)["input_ids"])

    def score(self, queries: Sequence[str], docs: Sequence[str]) -> list[float]:
        import torch

        rows = [self.render(q, d) for q, d in zip(queries, docs, strict=True)]
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]), reverse=True)
        out = [0.0] * len(rows)
        device = next(self.model.parameters()).device
        with torch.no_grad():
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                ids, mask, pos = left_pad([rows[i] for i in idx], self.pad_id)
                hidden = self.model.base_model(input_ids=ids.to(device),
                                               attention_mask=mask.to(device),
                                               position_ids=pos.to(device)).last_hidden_state
                values = pair_scores(self.head(hidden[:, -1])).cpu().tolist()
                for i, value in zip(idx, values, strict=True):
                    out[i] = value
        return out


@dataclass
class RerankerSource:
    """What a ``--teacher`` string names: ``kind`` and where its files are."""

    name: str
    kind: str  # "bi-encoder" | "cross-encoder" | "decoder"
    source: str  # asset directory, local directory or HF id
    local: bool
    adapter: dict[str, Any] | None = None  # adapter_config.json of a peft adapter
    base: RerankerSource | None = None  # the adapter's base model


def _decoder_model_type(model_type: str) -> bool:
    """True for decoder-only architectures (Llama, Mistral, Qwen2, ...): a causal LM that
    is not also a masked LM (BERT-likes are both)."""
    try:
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
            MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        )
    except ImportError:  # the mapping moved: fall back to the common decoder families
        return model_type in {"llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma",
                              "gemma2", "gemma3_text", "phi3", "gpt2", "gpt_neox"}
    return (model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
            and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES)


def classify_reranker(config: dict[str, Any] | None, *, sentence_transformers: bool = False
                      ) -> str | None:
    """The reranker kind of a model from its ``config.json`` (see :func:`describe_reranker`),
    or None when it is no reranker (a causal LM, a masked LM, ...)."""
    archs = list((config or {}).get("architectures") or [])
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return "decoder" if _decoder_model_type(str(config.get("model_type", ""))) \
            else "cross-encoder"
    if sentence_transformers or (archs and all(a.endswith("Model") for a in archs)):
        return "bi-encoder"
    return None


KIND_FILES = ("adapter_config.json", "config.json", "modules.json", "sentence_bert_config.json")


def _model_files(name: str, local: bool, flag: str,
                 files: Sequence[str] = KIND_FILES) -> dict[str, Path | None]:
    """Local paths of ``files`` of a model (None where absent). Packaged assets and local
    directories never reach the hub; a hub id (real scale, opt-in) is looked up in the HF
    cache only, unless DISTILLBENCH_ONLINE=1 allows the download."""
    if local:
        return {f: (Path(name) / f if (Path(name) / f).is_file() else None) for f in files}
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

    from bench.core.assets.models import configure_offline
    from bench.errors import UsageError

    offline = configure_offline()
    found: dict[str, Path | None] = {}
    for f in files:
        try:
            found[f] = Path(hf_hub_download(name, f, local_files_only=offline))
        except EntryNotFoundError:  # absent from the repo, or (offline) from the cache
            found[f] = None
        except (HfHubHTTPError, OSError, ValueError) as exc:
            raise UsageError(f"{flag} {name!r}: cannot read it from the HF hub ("
                             f"{type(exc).__name__}); check the id and your hub login (gated "
                             "models such as Llama-2), or pass a local model directory") from None
    if offline and files == KIND_FILES and not (found["config.json"]
                                                or found["adapter_config.json"]):
        raise UsageError(f"{flag} {name!r}: not a packaged asset, not a local directory, and "
                         "not in the HF cache (hub downloads are off); pass a local model "
                         "directory, or set DISTILLBENCH_ONLINE=1 to download it")
    return found


def describe_reranker(name: str, *, flag: str = "--teacher") -> RerankerSource:
    """Which reranker ``name`` is, from its config files, without loading weights.

    ``name`` is a packaged asset (``all-minilm-l6-v2``), a local directory or an HF id
    (read from the HF cache offline; downloaded only with ``DISTILLBENCH_ONLINE=1``). The
    rule, first match wins:

    1. ``adapter_config.json``: a peft adapter; its kind is its base model's
       (``base_model_name_or_path``, resolved the same way), e.g. RankLLaMA's LoRA over
       Llama-2 is a ``decoder`` reranker;
    2. ``config.json`` naming a ``*ForSequenceClassification`` architecture: ``decoder``
       when the model type is a decoder-only LM (RankLLaMA input format, last-token score),
       else ``cross-encoder`` (BERT/RoBERTa/ELECTRA/... pair classifier);
    3. sentence-transformers files (``modules.json``, ``sentence_bert_config.json``) or a
       bare encoder architecture (``BertModel``): ``bi-encoder`` (mean pooling, cosine);
    4. anything else (a causal LM, a masked LM): a UsageError naming ``flag``.
    """
    from bench.core.assets.specs import ASSETS, spec
    from bench.errors import UsageError

    if name in ASSETS:
        if spec(name).kind != "model":
            raise UsageError(f"{flag} {name!r}: asset is {spec(name).kind}, not a model")
        if name == TEACHER_DEFAULT:  # no need to read files: it is the MiniLM bi-encoder
            return RerankerSource(name, "bi-encoder", name, True)
        from bench.core.assets.models import resolve_model_source

        source, local = resolve_model_source(name, flag)
    else:
        path = Path(name).expanduser()
        local = path.is_dir()
        if not local and (name.startswith(("/", ".", "~")) or name.count("/") > 1):
            raise UsageError(f"{flag} {name!r}: no such directory; pass a local model "
                             "directory, an HF id, or the asset all-minilm-l6-v2")
        source = str(path) if local else name
    files = _model_files(source, local, flag)
    if files["adapter_config.json"] is not None:
        adapter = json.loads(files["adapter_config.json"].read_text(encoding="utf-8"))
        base_name = adapter.get("base_model_name_or_path")
        if not base_name:
            raise UsageError(f"{flag} {name!r}: adapter_config.json has no "
                             "base_model_name_or_path")
        try:
            base = describe_reranker(base_name, flag=flag)
        except UsageError as exc:
            raise UsageError(f"{exc} (the base model of adapter {name!r}; edit "
                             "base_model_name_or_path in its adapter_config.json to point "
                             "at a local copy)") from None
        return RerankerSource(name, base.kind, source, local, adapter=adapter, base=base)
    config = (json.loads(files["config.json"].read_text(encoding="utf-8"))
              if files["config.json"] is not None else None)
    st = files["modules.json"] is not None or files["sentence_bert_config.json"] is not None
    kind = classify_reranker(config, sentence_transformers=st)
    if kind is None:
        archs = ", ".join((config or {}).get("architectures") or []) or "no config.json"
        raise UsageError(f"{flag} {name!r}: not a reranker ({archs}); give a cross-encoder "
                         "(*ForSequenceClassification), a sentence-transformers bi-encoder, "
                         "or a peft adapter over a sequence classifier")
    return RerankerSource(name, kind, source, local)


def _adapter_identity(described: RerankerSource, weights: dict[str, Any], dtype: Any) -> str:
    """Adapter weights hashed, plus the base model's identity: its id and snapshot for a
    hub model, its config and weight-file sizes for a local one. Hashing the merged 7B
    weights instead would cost tens of seconds on every run; a base model changed in place
    without a size change goes unnoticed (documented trade-off; it only skips a rescoring)."""
    import torch

    digest = hashlib.sha256(repr(("adapter", str(dtype))).encode())
    with torch.no_grad():
        for key, tensor in sorted(weights.items()):
            digest.update(key.encode())
            digest.update(tensor.detach().float().contiguous().cpu().numpy().tobytes())
    base = described.base
    assert base is not None
    digest.update(base.name.encode())
    if base.local:
        root = Path(base.source)
        for f in sorted(root.iterdir()):
            if f.name == "config.json":
                digest.update(f.read_bytes())
            elif f.suffix in (".safetensors", ".bin"):
                digest.update(f"{f.name}:{f.stat().st_size}".encode())
    else:  # a hub id (real scale, opt-in): cache only unless DISTILLBENCH_ONLINE=1
        from huggingface_hub import hf_hub_download

        from bench.core.assets.models import configure_offline

        config = hf_hub_download(base.source, "config.json",
                                 local_files_only=configure_offline())
        digest.update(Path(config).parent.name.encode())
    return digest.hexdigest()


def _head_labels(weights: dict[str, Any]) -> int | None:
    """Rows of the classification head saved with an adapter (peft ``modules_to_save``)."""
    for key, tensor in weights.items():
        if key.endswith(("score.weight", "classifier.weight", "classifier.out_proj.weight")):
            return int(tensor.shape[0])
    return None


def load_teacher_reranker(name: str | None = None, *, flag: str = "--teacher",
                          dtype: Any = None, device: str | None = None,
                          batch_size: int | None = None) -> Any:
    """The pointwise reranker ``name`` names (default: the packaged MiniLM bi-encoder).

    ``dtype`` defaults to float32 for bi- and cross-encoders and to bfloat16 for decoder
    rerankers (RankLLaMA is 7B: 28 GB in float32). Cross-encoders and decoders go to the
    run's device (``bench.core.device``; under ``auto`` this process's GPU when there is
    one, ``LOCAL_RANK`` under accelerate); the bi-encoder stays where it always ran (CPU), so
    the default teacher's scores and cache key do not change. A peft adapter is merged
    into its base (one plain model to run); its head must be in the adapter's weights
    (``modules_to_save``), else the "teacher" would be a random head: a UsageError.
    """
    from bench.core.assets.models import load_bi_encoder, load_pretrained, resolve_dtype
    from bench.core.device import current as current_policy
    from bench.errors import UsageError

    name = name or TEACHER_DEFAULT
    described = describe_reranker(name, flag=flag)
    if described.kind == "bi-encoder":
        return BiEncoderReranker(load_bi_encoder(name), max_length=256)

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    decoder = described.kind == "decoder"
    torch_dtype = resolve_dtype(dtype, torch.bfloat16 if decoder else torch.float32)
    identity = None
    if described.adapter is not None:
        from peft import PeftModel
        from peft.utils import load_peft_weights

        from bench.core.hf import peft_quietly

        base = described.base
        assert base is not None
        # host memory on purpose: read for the head's shape and hashed, never run
        weights = load_peft_weights(described.source, device="cpu")
        labels = _head_labels(weights)
        if labels is None:
            raise UsageError(f"{flag} {name!r}: the adapter saves no classification head "
                             "(score/classifier in modules_to_save); it is not a reranker")
        model = load_pretrained(AutoModelForSequenceClassification, base.source, base.local,
                                 flag, dtype=torch_dtype, num_labels=labels)
        with peft_quietly():
            model = PeftModel.from_pretrained(model, described.source).merge_and_unload()
        identity = _adapter_identity(described, weights, torch_dtype)
        # RankLLaMA's adapter ships no tokenizer: its model card loads the base's.
        has_tokenizer = _model_files(described.source, described.local, flag,
                                     ("tokenizer_config.json",))["tokenizer_config.json"]
        tok_source = described if has_tokenizer else base
        tokenizer = load_pretrained(AutoTokenizer, tok_source.source, tok_source.local, flag)
    else:
        model = load_pretrained(AutoModelForSequenceClassification, described.source,
                                 described.local, flag, dtype=torch_dtype)
        tokenizer = load_pretrained(AutoTokenizer, described.source, described.local, flag)
    model = model.to(device or current_policy().device).eval()
    kwargs = {"identity": identity} | ({"batch_size": batch_size} if batch_size else {})
    if decoder:
        return DecoderReranker(model, tokenizer, **kwargs)
    return CrossEncoderReranker(model, tokenizer, **kwargs)
