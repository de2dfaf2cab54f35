"""Loading teachers, students and the bi-encoder offline; one-time GGUF conversion.

The packaged SmolLM2 (and the optional Gemma-3) ship as quantised GGUF files. Dequantising a
GGUF through transformers takes ~20-30 s on two cores, while reloading float32 safetensors
takes ~0.4 s, so :func:`prepare` converts each GGUF once into ``<cache>/models/`` and every
later load reads the converted copy. The conversion is built in a temporary sibling
directory and renamed into place, so an interrupted run never leaves a half-written model
that a later run would trust.

Any other model string (a local directory or an HF model id) goes through the very same
``from_pretrained`` call: that is the real-scale path. It stays offline unless the user sets
``DISTILLBENCH_ONLINE=1``, because a benchmark run must not silently depend on a network.
torch and transformers are imported inside the functions, never at module import.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.core.assets.specs import (
    ASSETS,
    AssetSpec,
    asset_path,
    cache_dir,
    key_file_path,
    root_of,
    spec,
)
from bench.errors import AssetMissingError

if TYPE_CHECKING:
    import torch

PREPARED_MARKER = "distillbench-prepared.json"
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def online_mode() -> bool:
    """True when the user opted into network access with ``DISTILLBENCH_ONLINE=1``."""
    return os.environ.get("DISTILLBENCH_ONLINE", "").strip().lower() in ("1", "true", "yes")


def configure_offline() -> bool:
    """Force the HF libraries offline unless online mode is on; returns whether offline.

    The variables must be set before huggingface_hub is imported (it reads them once); if it
    already was, its constant is patched too, and loaders also pass ``local_files_only``.
    """
    if online_mode():
        return False
    for var in _OFFLINE_VARS:
        os.environ[var] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]
    return True


def _log(progress: bool, message: str) -> None:
    if progress:
        print(f"[assets] {message}", file=sys.stderr, flush=True)


def prepared_dir(name: str) -> Path:
    """Cache directory of an asset's converted form (it may not exist yet)."""
    s = spec(name)
    return cache_dir() / "models" / f"{s.name}-{s.version}-float32"


def is_prepared(name: str) -> bool:
    return (prepared_dir(name) / PREPARED_MARKER).is_file()


def prepare(names: Iterable[str] | None = None, progress: bool = True) -> dict[str, Path]:
    """Run the one-time conversions into the cache; idempotent and atomic.

    Without ``names``, every installed asset that needs a conversion is prepared and absent
    optional ones are skipped. A named asset that is absent is installed first when it is
    marked ``install_on_use`` (as its suite would on first use), else raises
    AssetMissingError.
    Returns ``{name: prepared directory}``.
    """
    explicit = names is not None
    todo = list(names) if explicit else [
        n for n in ASSETS.names() if ASSETS.get(n).prepare and
        (root_of(ASSETS.get(n)) is not None or not ASSETS.get(n).optional)]
    done: dict[str, Path] = {}
    for name in todo:
        s = spec(name)
        if explicit:
            from bench.core.assets.install import ensure_installed

            ensure_installed(name, progress=progress)
        if not s.prepare:
            done[name] = asset_path(name)  # nothing to convert: the package is used as is
            continue
        target = prepared_dir(name)
        if is_prepared(name):
            _log(progress, f"{name}: already prepared in {target}")
        else:
            asset_path(name)  # raises with the install command if absent
            module_name, _, attr = s.prepare.partition(":")
            fn = getattr(__import__(module_name, fromlist=[attr]), attr)
            _build_atomically(target, lambda tmp, s=s, fn=fn: fn(s, tmp, progress))
            _log(progress, f"{name}: prepared in {target}")
        done[name] = target
    return done


def _build_atomically(target: Path, build: Any) -> None:
    """Call ``build(tmp_dir)`` in a sibling temp dir, then rename it to ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the cache is shareable
        if target.exists():  # a stale, incomplete copy (no marker): replace it
            if (target / PREPARED_MARKER).is_file():
                return  # another process finished first; keep its copy
            shutil.rmtree(target)
        os.rename(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _assemble_gguf(s: AssetSpec, root: Path, out: Path) -> None:
    """Concatenate a chunked GGUF (e.g. Gemma-3) and verify its pinned sha256."""
    digest = hashlib.sha256()
    with open(out, "wb") as sink:
        for key in s.key_files:
            with open(key_file_path(s, key, root), "rb") as part:
                for block in iter(lambda p=part: p.read(1 << 20), b""):
                    digest.update(block)
                    sink.write(block)
    if digest.hexdigest() != s.meta["assembled_sha256"]:
        raise AssetMissingError(f"asset {s.name!r}: assembled GGUF has the wrong sha256; "
                                f"reinstall with: {s.install}")


@contextlib.contextmanager
def _gguf_bar_off() -> Iterator[None]:
    """transformers' GGUF reader draws a plain tqdm bar that its own progress switch does
    not reach; turn that one bar off for the duration (the module attribute is restored)."""
    import functools

    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    bar = getattr(gguf_utils, "tqdm", None)
    if bar is None:  # another transformers layout: nothing to silence
        yield
        return
    gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


def prepare_gguf_model(s: AssetSpec, out: Path, progress: bool = True) -> None:
    """Dequantise a packaged GGUF causal LM to float32 safetensors + tokenizer in ``out``."""
    configure_offline()
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bench.core import hf

    # transformers' own bars (GGUF tensors, weights, shards) would repeat what the
    # "[assets] ..." lines already say, one carriage-return line each in a log file.
    hf.quiet_progress()
    root = asset_path(s.name)
    gguf = s.meta["gguf_file"]
    src = root
    if "assembled_sha256" in s.meta:  # chunked: build the single file first
        src = out / ".gguf"
        src.mkdir()
        _assemble_gguf(s, root, src / gguf)
    t0 = time.perf_counter()
    _log(progress, f"{s.name}: dequantising {gguf} to float32 (one-time, ~30 s)")
    with _gguf_bar_off():
        model = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf, dtype=torch.float32,
                                                     local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=gguf, local_files_only=True)
    t_load = time.perf_counter() - t0
    if needs_chat_template(s) and not getattr(tokenizer, "chat_template", None):
        raise RuntimeError(f"{s.name}: the GGUF tokenizer has no chat template")
    # The weights are plain float32 now; drop the GGUF quantiser so save_pretrained writes
    # ordinary safetensors and the reload does not try to re-read a GGUF.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    if src != root:
        shutil.rmtree(src)
    record = {
        "asset": s.name, "version": s.version, "source": str(root / gguf),
        "dtype": "float32", "transformers": transformers.__version__,
        "torch": torch.__version__, "convert_seconds": round(t_load, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (out / PREPARED_MARKER).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def needs_chat_template(s: AssetSpec) -> bool:
    """Instruct models must keep their chat template through the conversion; a base model
    (``meta["chat_template"] == "none"``, e.g. Gemma-3-270M) has none to keep."""
    return s.meta.get("chat_template") != "none"


def resolve_dtype(dtype: Any, default: Any) -> Any:
    import torch

    if dtype is None:
        return default
    if isinstance(dtype, str) and dtype != "auto":
        resolved = getattr(torch, dtype, None)
        if not isinstance(resolved, torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}; use e.g. 'float32' or 'bfloat16'")
        return resolved
    return dtype


def resolve_model_source(name_or_path: str, kind: str) -> tuple[str, bool]:
    """``(where to load from, is it a local directory)`` for an asset, path or hub id."""
    if name_or_path in ASSETS:
        s = spec(name_or_path)
        if s.kind != "model":
            raise ValueError(f"asset {name_or_path!r} is {s.kind}, not a model")
        if s.prepare:
            if not is_prepared(name_or_path):
                prepare([name_or_path], progress=True)
            return str(prepared_dir(name_or_path)), True
        return str(asset_path(name_or_path)), True
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return str(path), True
    if name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1:
        raise AssetMissingError(f"{kind} {name_or_path!r}: no such directory; pass a local "
                                f"model directory, an HF model id, or one of: "
                                f"{', '.join(n for n in ASSETS.names() if spec(n).kind == 'model')}")
    return name_or_path, False


def layer_count(name_or_path: str) -> int | None:
    """Decoder layers of a causal LM, read from its config alone (no weights are loaded);
    None when the config does not say."""
    from transformers import AutoConfig

    source, local = resolve_model_source(name_or_path, "model")
    n = getattr(load_pretrained(AutoConfig, source, local, "model"), "num_hidden_layers", None)
    return None if n is None else int(n)


def load_pretrained(loader: Any, source: str, local: bool, kind: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained(source)`` offline unless allowed; a loaded model is marked
    with its weight source (:func:`bench.core.hf.mark_source`)."""
    import torch

    from bench.core import hf

    hf.quiet_progress()
    offline = configure_offline()
    try:
        loaded = loader.from_pretrained(source, local_files_only=offline or local, **kwargs)
    except OSError as exc:
        if local or not offline:
            raise
        raise AssetMissingError(
            f"{kind} {source!r} is not a local directory and not in the local HF cache "
            f"(offline mode); pass a local path, or set DISTILLBENCH_ONLINE=1 to download it"
        ) from exc
    if isinstance(loaded, torch.nn.Module):  # cache keys need not re-hash its weights
        hf.mark_source(loaded, hf.weights_source_key(source, local, loaded))
    return loaded


def load_causal_lm(name_or_path: str = "smollm2-135m-instruct",
                   dtype: torch.dtype | str | None = None,
                   **kwargs: Any) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for a packaged asset name, a local directory or an HF id.

    The packaged SmolLM2 is read from its float32 conversion (created on first use);
    ``dtype`` defaults to float32 there and to the checkpoint's own dtype ("auto")
    elsewhere. The model is returned in eval mode. A tokenizer without a pad token gets the
    EOS token as pad, which batched scoring and generation need.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, local = resolve_model_source(name_or_path, "model")
    packaged = name_or_path in ASSETS
    torch_dtype = resolve_dtype(dtype, torch.float32 if packaged else "auto")
    model = load_pretrained(AutoModelForCausalLM, source, local, "model",
                             dtype=torch_dtype, **kwargs)
    tokenizer = load_pretrained(AutoTokenizer, source, local, "tokenizer")
    if packaged and needs_chat_template(spec(name_or_path)) and \
            not getattr(tokenizer, "chat_template", None):
        raise AssetMissingError(f"{source}: converted tokenizer lost its chat template; "
                                f"delete that directory and run `bench assets prepare`")
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer


@dataclass
class BiEncoder:
    """A sentence-transformers-style encoder: mean pooling over tokens, then L2 norm."""

    model: Any
    tokenizer: Any
    name: str = ""

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def encode(self, texts: Sequence[str], batch_size: int = 32,
               max_length: int = 256, normalize: bool = True) -> torch.Tensor:
        """``[len(texts), dim]`` float32 CPU embeddings, in the order of ``texts``.

        Texts are batched by length (less padding, ~1.5x faster on CPU) and put back in order.
        """
        import torch

        if isinstance(texts, str):
            raise TypeError("encode() takes a list of texts, not a single string")
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        out = torch.empty(len(texts), self.dim, dtype=torch.float32)
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                       max_length=max_length, return_tensors="pt").to(device)
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                if normalize:
                    pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
                out[torch.tensor(idx)] = pooled.float().cpu()
        return out


def load_bi_encoder(name_or_path: str = "all-minilm-l6-v2",
                    dtype: torch.dtype | str | None = None) -> BiEncoder:
    """The packaged all-MiniLM-L6-v2 (or any local/HF encoder) as a :class:`BiEncoder`."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    source, local = resolve_model_source(name_or_path, "bi-encoder")
    model = load_pretrained(AutoModel, source, local, "bi-encoder",
                             dtype=resolve_dtype(dtype, torch.float32))
    tokenizer = load_pretrained(AutoTokenizer, source, local, "tokenizer")
    model.eval()
    return BiEncoder(model=model, tokenizer=tokenizer, name=name_or_path)
