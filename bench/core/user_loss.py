"""``bench run --loss path/to/file.py:fn``: train with a researcher's own token-level loss.

The function must have the library's signature, ``fn(student_logits, teacher_logits, *,
mask=None, temperature=1.0, **hp) -> scalar`` (logits ``[batch, seq, vocab]``, mean over
masked-in tokens), like every loss in :mod:`methods.losses`. Before any training it is
called once on small random logits: it must return a finite 0-dim tensor that
back-propagates to the student, be (near) zero when student and teacher agree, and accept
``mask`` and ``temperature``; otherwise the user gets one line saying which check failed.
The file's sha256 goes into the result, so a result always names the exact loss it used.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.errors import UsageError


def load_user_loss(spec: str) -> tuple[Callable[..., Any], str, str]:
    """``(fn, name, sha256 of the file)`` for ``"path/to/file.py:function"``."""
    path_text, sep, attr = spec.rpartition(":")
    if not sep or not path_text or not attr:
        raise UsageError(f"--loss {spec!r}: expected FILE.py:FUNCTION, e.g. my_loss.py:my_kl")
    path = Path(path_text)
    if not path.is_file():
        raise UsageError(f"--loss {spec!r}: file {path} does not exist")
    module_name = "distillbench_user_loss_" + re.sub(r"\W", "_", path.stem)
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise UsageError(f"--loss {spec!r}: {path} is not an importable Python file")
    module = importlib.util.module_from_spec(module_spec)
    try:
        with warnings.catch_warnings():  # the one line below is all the user should see
            warnings.simplefilter("ignore")
            module_spec.loader.exec_module(module)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # SystemExit too: the user's file must not end the run
        raise UsageError(f"--loss {spec!r}: importing {path} raised {_where(exc, path)}"
                         ) from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UsageError(f"--loss {spec!r}: {path} has no function {attr!r}")
    check_loss(fn, repr(spec), path)
    return fn, re.sub(r"[^A-Za-z0-9_.-]", "-", attr), \
        hashlib.sha256(path.read_bytes()).hexdigest()


def _where(exc: BaseException, path: Path | None) -> str:
    """``"TypeError: message (file.py, line 12)"``: the exception and the innermost line of
    the user's file it passed through."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if path is not None and Path(f.filename).resolve() == path.resolve()]
    where = f" ({path.name}, line {frames[-1].lineno})" if frames else ""
    message = str(exc) if not isinstance(exc, SystemExit) else f"exit status {exc.code}"
    return f"{type(exc).__name__}: {message}{where}"


def check_loss(fn: Callable[..., Any], label: str, path: Path | None = None) -> None:
    """Call ``fn`` on tiny logits and raise UsageError naming the first failed check."""
    import inspect

    import torch

    gen = torch.Generator().manual_seed(0)
    student = torch.randn(2, 3, 7, generator=gen, requires_grad=True)
    teacher = torch.randn(2, 3, 7, generator=gen)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    try:
        inspect.signature(fn).bind(student, teacher, mask=mask, temperature=2.0)
    except TypeError as exc:
        raise UsageError(f"--loss {label}: must accept (student_logits, teacher_logits, *, "
                         f"mask=None, temperature=1.0): {exc}") from None
    except ValueError:  # no signature to inspect (a builtin): let the call decide
        pass
    try:
        with warnings.catch_warnings():  # a probe: its warnings are not the user's run
            warnings.simplefilter("ignore")
            value = fn(student, teacher, mask=mask, temperature=2.0)
            same = fn(teacher.clone().requires_grad_(True), teacher, mask=mask,
                      temperature=1.0)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        raise UsageError(f"--loss {label}: failed on a [2, 3, 7] test batch: "
                         f"{_where(exc, path)}") from None
    if not isinstance(value, torch.Tensor) or value.dim() != 0:
        raise UsageError(f"--loss {label}: must return a 0-dim tensor (the mean over masked "
                         f"tokens), got {type(value).__name__} "
                         f"{tuple(getattr(value, 'shape', ()))}")
    if not torch.isfinite(value):
        raise UsageError(f"--loss {label}: returned {float(value)} on a random test batch")
    if not value.requires_grad:
        raise UsageError(f"--loss {label}: the result does not depend on student_logits "
                         "(no gradient); do not detach or convert to Python numbers")
    value.backward()
    if student.grad is None or not torch.isfinite(student.grad).all():
        raise UsageError(f"--loss {label}: gradient to student_logits is missing or not finite")
    if abs(float(same.detach())) > 1e-4:
        raise UsageError(f"--loss {label}: should be 0 when student and teacher logits are "
                         f"equal, got {float(same.detach()):.3g}")
