"""The trainer's checkpoints: written atomically, found, and loaded for exact resume.

A checkpoint is ``<output_dir>/checkpoints/step-<step, 8 digits>``: accelerate's
``save_state`` (model, optimizer, scheduler, RNG states) plus the trainer's data position
and its own copy of each process's RNG states. It is written into ``.tmp-step-...`` and
renamed once every process has written its files, so a kill never leaves a half
checkpoint; only folders with ``trainer_state.json`` count, and the last
``keep_checkpoints`` are kept. :class:`methods.trainer.Trainer` saves and resumes through
these functions.

Checkpoints and trust. The trainer's own files in a checkpoint are plain data: the
position in ``trainer_state.json`` and each process's RNG states in
``trainer_rng_<process>.json`` (Python's and numpy's Mersenne-Twister words as lists,
torch's CPU/CUDA generator bytes as base64), read without pickle. A ``trainer_rng_*.pt``
from older versions (a pickle) is never loaded: resume says so and keeps the RNG state
accelerate restored. What accelerate's ``load_state`` reads is still pickle-based, so a
checkpoint folder is trusted input, like a model you load. With accelerate 1.16 on one
device or DDP: the weights come from ``model.safetensors`` (no pickle), while
``optimizer.bin``, ``scheduler.bin`` and ``random_states_<process>.pkl`` are unpickled by
``torch.load(weights_only=True)`` with numpy's array reconstructors, ``numpy.dtype`` and
``codecs.encode`` allow-listed (``accelerate.utils.other.load``): torch's restricted
unpickler, which builds tensors and containers and calls only those functions. Code can
run from a checkpoint only where accelerate unpickles fully: ``custom_checkpoint_<i>.pkl``
(``weights_only=False``; the trainer registers no custom objects, so a planted one makes
``load_state`` raise instead of loading it) and, under FSDP with sharded state dicts,
torch.distributed.checkpoint's ``.metadata`` (``pickle.load``); DeepSpeed and Megatron-LM
load through their own code (not checked). Older accelerate versions may load more with
``weights_only=False``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from bench.core.device import cuda_available
from methods.trainer_config import TrainConfig

STATE_FILE = "trainer_state.json"
RNG_FILE = "trainer_rng"


def _encode_generator(state: torch.Tensor) -> str:
    return base64.b64encode(state.cpu().numpy().tobytes()).decode("ascii")


def _decode_generator(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text, validate=True)),
                            dtype=torch.uint8).clone()


def rng_states() -> dict[str, Any]:
    """This process's RNG states as JSON-able data (no pickle): see the module doc."""
    import random

    import numpy as np

    version, words, gauss_next = random.getstate()
    algorithm, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    states: dict[str, Any] = {
        "format": 1,
        "python": {"version": version, "state": list(words), "gauss_next": gauss_next},
        "numpy": {"algorithm": str(algorithm), "keys": [int(k) for k in keys],
                  "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached_gaussian)},
        "torch": _encode_generator(torch.get_rng_state()),
    }
    if cuda_available():
        states["cuda"] = [_encode_generator(s) for s in torch.cuda.get_rng_state_all()]
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore :func:`rng_states`' output; all or nothing (raises on a malformed state)."""
    import random

    import numpy as np

    py, npy = states["python"], states["numpy"]
    python_state = (int(py["version"]), tuple(int(w) for w in py["state"]),
                    None if py["gauss_next"] is None else float(py["gauss_next"]))
    numpy_state = (str(npy["algorithm"]), np.array(npy["keys"], dtype=np.uint32),
                   int(npy["pos"]), int(npy["has_gauss"]), float(npy["cached_gaussian"]))
    torch_state = _decode_generator(states["torch"])
    cuda_states = [_decode_generator(s) for s in states.get("cuda") or []]
    before = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    try:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)
        if cuda_states and cuda_available():
            torch.cuda.set_rng_state_all(cuda_states)
    except BaseException:
        random.setstate(before[0])
        np.random.set_state(before[1])
        torch.set_rng_state(before[2])
        raise


def _load_rng_file(checkpoint: Path, process_index: int) -> None:
    """Restore the trainer's RNG copy for this process, if the checkpoint has a usable one.

    The copy is optional state (accelerate restores RNG states too), so a missing,
    old-format or malformed file is a warning, never a lost run. The warnings point at
    the code that called ``Trainer.resume`` (through :func:`load_checkpoint`).
    """
    path = checkpoint / f"{RNG_FILE}_{process_index}.json"
    legacy = checkpoint / f"{RNG_FILE}_{process_index}.pt"
    if not path.exists():
        if legacy.exists():
            warnings.warn(f"{legacy}: old pickled RNG file, not loaded (pickle can run code); "
                          "resuming with the RNG state accelerate restored, so random draws "
                          "after resume (e.g. dropout) may differ from an uninterrupted run",
                          stacklevel=4)
        return
    try:
        set_rng_states(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, KeyError, TypeError, ValueError, RuntimeError, binascii.Error) as exc:
        warnings.warn(f"{path}: unreadable RNG state ({type(exc).__name__}: {exc}); resuming "
                      "with the RNG state accelerate restored, so random draws after resume "
                      "may differ from an uninterrupted run", stacklevel=4)


def _drop_tied_copies(models: list[Any], weights: list[dict[str, Any]], output_dir: str) -> None:
    """``save_state`` pre-hook: keep one name per tied parameter in the saved state dicts.

    safetensors cannot store two names for one tensor, so accelerate drops the later
    names itself, with a "Removed shared tensor ... This should be OK" warning at every
    checkpoint of a tied-embedding model (``lm_head.weight`` is ``embed_tokens.weight``).
    Dropping the copies first is the same file without the warning. It is harmless:
    on load, safetensors' ``load_model`` recognises names that share a tensor in the live
    model, which is still tied, so loading the kept name restores both. Only exact
    aliases (same storage, offset, shape, strides and dtype) count as tied; any other
    sharing still reaches accelerate and its warning.
    """
    for state in weights:
        seen: set[tuple[Any, ...]] = set()
        for name in list(state):
            tensor = state[name]
            if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
                continue
            key = (tensor.device, tensor.untyped_storage().data_ptr(), tensor.storage_offset(),
                   tuple(tensor.shape), tensor.stride(), tensor.dtype)
            if key in seen:
                del state[name]
            else:
                seen.add(key)


def checkpoint_name(step: int) -> str:
    """The folder name of step ``step``'s checkpoint."""
    return f"step-{step:08d}"


def finished(output_dir: Path, max_steps: int) -> bool:
    """Whether a trainer writing into ``output_dir`` has trained all ``max_steps``: its
    newest complete checkpoint is that step's (a rerun would only load it)."""
    done = find_latest_checkpoint(Path(output_dir) / "checkpoints")
    return done is not None and done.name == checkpoint_name(max_steps)


def find_latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root`` (one with ``trainer_state.json``)."""
    done = sorted(p for p in root.glob("step-*") if (p / STATE_FILE).exists())
    return done[-1] if done else None


def write_checkpoint(accelerator: Any, root: Path, state: dict[str, Any],
                     cfg: TrainConfig) -> Path:
    """Write the checkpoint of ``state["step"]`` under ``root`` and return its folder.

    Every process calls this: each writes its own RNG copy, the main process the trainer
    state (``state`` plus ``cfg``) and the rename; older checkpoints beyond
    ``cfg.keep_checkpoints`` are removed.
    """
    target = root / checkpoint_name(state["step"])
    tmp = root / f".tmp-{target.name}"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    hook = accelerator.register_save_state_pre_hook(_drop_tied_copies)
    try:
        accelerator.save_state(str(tmp))
    finally:
        hook.remove()
    # accelerate's own RNG restore can fail silently (it loads a pickle through
    # torch.load's weights-only mode, which some numpy versions' states do not pass),
    # so the trainer keeps its own copy per process, as JSON.
    (tmp / f"{RNG_FILE}_{accelerator.process_index}.json").write_text(
        json.dumps(rng_states()), encoding="utf-8")
    # save_state does not wait for the other processes' files (their RNG states, the
    # trainer's copy above): rename only once every process has written into tmp.
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps(
            {**state, "config": asdict(cfg)}, indent=2, default=str))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
        kept = sorted(p for p in root.glob("step-*"))
        for old in kept[: -cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return target


def load_checkpoint(accelerator: Any, checkpoint: Path) -> dict[str, Any]:
    """Restore ``checkpoint`` into ``accelerator`` (model, optimizer, scheduler, RNG
    states, then the trainer's RNG copy) and return the saved trainer state."""
    accelerator.load_state(str(checkpoint))
    _load_rng_file(checkpoint, accelerator.process_index)
    return json.loads((checkpoint / STATE_FILE).read_text())
