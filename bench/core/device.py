"""The one device and precision policy of a run.

``bench run --device auto|cpu|cuda[:N]`` resolves its flag once with :func:`resolve_device`
and installs it with :func:`set_current`; code deep in a suite or recipe asks
:func:`current` (or uses :func:`autocast` with no device) instead of choosing a device
itself, and the result records :func:`describe`.

- ``auto``: ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without an index is
  this process's GPU (``LOCAL_RANK`` under ``accelerate launch``, else 0).
- ``dtype`` is the run's base precision (``float32`` unless told otherwise); recipes may
  still autocast a pass to bf16/fp16 with :func:`autocast`, which picks the autocast device
  type from the device, so the same line works on CPU and GPU.

torch is imported inside the functions only: ``bench.core`` stays importable without it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.errors import UsageError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
_DTYPES = {"float32": "float32", "fp32": "float32", "float": "float32",
           "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16", "half": "float16"}


@dataclass(frozen=True)
class Policy:
    """The device and base dtype every part of a run uses."""

    device: torch.device
    dtype: torch.dtype

    def describe(self) -> dict[str, str]:
        return {"device": str(self.device), "dtype": str(self.dtype).removeprefix("torch.")}


_current: Policy | None = None


def cuda_available() -> bool:
    """Whether torch sees a CUDA GPU (a fact about the machine, not the run's choice:
    use :func:`current` to place work)."""
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(spec: Any = "auto") -> torch.device:
    """``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` -> a ``torch.device``; a bad or unusable
    spec is a one-line :class:`UsageError` naming ``--device``."""
    import torch

    text = str(spec).strip().lower()
    if text == "cpu":
        return torch.device("cpu")
    if text == "auto":
        return _local_cuda() if cuda_available() else torch.device("cpu")
    kind, sep, index = text.partition(":")
    if kind != "cuda" or (sep and not index.isdigit()):
        raise UsageError(f"--device {spec}: expected {DEVICE_CHOICES} "
                         "(N a GPU index, e.g. cuda:0)")
    if not cuda_available():
        why = ("this torch build has no CUDA support" if torch.version.cuda is None
               else "torch sees no CUDA GPU (check the driver and CUDA_VISIBLE_DEVICES)")
        raise UsageError(f"--device {spec}: {why}; use --device cpu (or auto)")
    if not sep:
        return _local_cuda()
    count = torch.cuda.device_count()
    if int(index) >= count:
        raise UsageError(f"--device {spec}: torch sees {count} CUDA GPU(s) "
                         f"(cuda:0..cuda:{count - 1}); pick one of those or use --device cuda")
    return torch.device("cuda", int(index))


def _local_cuda() -> torch.device:
    import torch

    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))


def resolve_dtype(spec: Any = "float32") -> torch.dtype:
    """``float32``/``fp32``, ``bfloat16``/``bf16``, ``float16``/``fp16`` or a torch dtype."""
    import torch

    if isinstance(spec, torch.dtype):
        name = str(spec).removeprefix("torch.")
    else:
        name = _DTYPES.get(str(spec).strip().lower(), "")
    if name not in _DTYPES.values():
        raise UsageError(f"dtype {spec}: expected float32, bfloat16 or float16")
    return getattr(torch, name)


def set_current(device: Any = "auto", dtype: Any = "float32") -> Policy:
    """Install the run's policy (a spec as :func:`resolve_device` takes, or a device) and
    return it. A CUDA device also becomes torch's current device, so ``"cuda"`` elsewhere
    (accelerate included) means the same GPU."""
    global _current
    import torch

    resolved = device if isinstance(device, torch.device) else resolve_device(device)
    if resolved.type == "cuda" and resolved.index is not None:
        torch.cuda.set_device(resolved)
    _current = Policy(resolved, resolve_dtype(dtype))
    return _current


def current() -> Policy:
    """The run's policy: what :func:`set_current` installed, else ``auto`` / float32."""
    if _current is not None:
        return _current
    return Policy(resolve_device("auto"), resolve_dtype("float32"))


def installed() -> Policy | None:
    """The policy :func:`set_current` installed, or None (then nothing is recorded)."""
    return _current


def reset() -> None:
    """Forget the installed policy (back to ``auto`` / float32)."""
    global _current
    _current = None


@contextlib.contextmanager
def using(device: Any = "auto", dtype: Any = "float32") -> Iterator[Policy]:
    """:func:`set_current` for a block, restoring the previous policy after it."""
    global _current
    before = _current
    try:
        yield set_current(device, dtype)
    finally:
        _current = before


def describe() -> dict[str, str]:
    """``{"device": "cuda:0", "dtype": "float32"}`` of the run, to record in results."""
    return current().describe()


def autocast(device: Any = None, dtype: Any = None) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` to ``dtype`` (bf16/fp16) for ``device``'s type (``cpu``/``cuda``);
    a no-op for float32, which leaves any enclosing autocast as it is (use
    :func:`no_autocast` to switch one off). ``None`` means the run's device / dtype."""
    import torch

    torch_dtype = resolve_dtype(current().dtype if dtype is None else dtype)
    if torch_dtype == torch.float32:
        return contextlib.nullcontext()
    device_type = torch.device(current().device if device is None else device).type
    return torch.autocast(device_type, dtype=torch_dtype)


def no_autocast(device: Any = None) -> contextlib.AbstractContextManager[Any]:
    """Switch off an enclosing autocast for ``device``'s type (default: the run's device)."""
    import torch

    device_type = torch.device(current().device if device is None else device).type
    return torch.autocast(device_type, enabled=False)
