"""The one training loop every recipe uses, on HF Accelerate.

CPU here; bf16, DDP and FSDP on GPUs through ``accelerate launch`` with no code change.
A recipe supplies the model, a ``step_fn(model, batch) -> StepOutput | Tensor`` that
computes its loss, and a map-style dataset; the trainer does the rest:

- gradient accumulation (``grad_accum`` micro-batches per optimizer step; the last step of
  an epoch uses the micro-batches that are left, so no data is dropped or carried over),
- warm-up plus linear / cosine / constant learning-rate schedules,
- a checkpoint every ``checkpoint_every`` steps (``accelerator.save_state``: model,
  optimizer, scheduler, RNG states; plus the data position), written to a temporary
  directory and renamed, so a kill never leaves a half checkpoint; the last
  ``keep_checkpoints`` are kept (:mod:`methods.trainer_checkpoints`, which also says
  what in a checkpoint is trusted input: accelerate's part is pickle-based),
- exact resume: data order is a seeded permutation per epoch, and the loader skips the
  micro-batches the checkpoint had consumed, so an interrupted and resumed run ends with
  the same weights as an uninterrupted one (tested on CPU),
- a NaN/inf guard: a step whose loss or gradient norm is not finite is skipped with a
  warning; ``max_nonfinite`` skipped steps in a row abort with one line saying what to do,
- a progress bar with loss and tokens/s, and one JSON line of metrics per step in
  ``metrics.jsonl`` (lines past the resumed step are dropped on resume).

Several processes (DDP through ``accelerate launch``; on CPU, gloo). ``batch_size`` is the
global batch: each batch is split into ``num_processes`` equal shards (accelerate's
``split_batches``), so one optimizer step sees ``batch_size × grad_accum`` examples
however many processes run, and a recipe's step counts and learning-rate schedule mean the
same with 1 or N processes (``batch_size`` must be a multiple of the process count; a
:class:`~bench.errors.UsageError` says so before the model is prepared). DDP averages the processes' gradients, which weights every process's loss
equally; a loss that is a mean over tokens would then not be the mean over all the step's
tokens whenever the shards hold different numbers of tokens. A ``step_fn`` that sets
``StepOutput.mean_over`` (the number of items its loss is a mean over) gets each process's
loss weighted by ``mean_over / (global mean of mean_over)`` before backward, so the step
is the one a single process with the whole batch takes (tested against one process on
CPU: ``tests/core/test_multiprocess.py``); the logged ``loss`` is that global mean and
``tokens`` the sum over processes. Only the main process writes ``metrics.jsonl``, the
progress bar and the checkpoint's shared files; each process writes its own RNG files into
the checkpoint before it is renamed into place. With one process none of this runs: the
step is the same computation as before. The equivalence needs each epoch's size to be a
multiple of ``batch_size``: accelerate's ``even_batches`` fills the last,
short batch of an epoch with examples from the epoch's start, so they count twice there.

The pieces: :mod:`methods.trainer_config` (:class:`TrainConfig`, :class:`StepOutput`,
step counts, the optimizer and learning-rate schedule), :mod:`methods.trainer_checkpoints`
(checkpoint files, atomic writes, resume) and this module (the loop, its metrics log,
the vocabulary check). Recipes import every name from here.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from bench.core.device import cuda_available
from bench.core.device import current as current_policy
from bench.core.progress import progress_bar
from bench.errors import UsageError
from methods.trainer_checkpoints import (
    RNG_FILE,
    STATE_FILE,
    checkpoint_name,
    find_latest_checkpoint,
    load_checkpoint,
    rng_states,
    set_rng_states,
    write_checkpoint,
)
from methods.trainer_config import (
    StepOutput,
    TrainConfig,
    lr_lambda,
    optimizer_and_scheduler,
    total_steps,
)

__all__ = ["RNG_FILE", "STATE_FILE", "EpochSampler", "StepOutput", "TrainConfig", "Trainer",
           "TrainingDiverged", "check_same_vocabulary", "logged_train_seconds", "lr_lambda",
           "total_steps"]

# The names these helpers had before the split into modules (tests import them).
_rng_states, _set_rng_states = rng_states, set_rng_states


class TrainingDiverged(UsageError):
    """Too many non-finite steps in a row; exit code 3 with one line."""

    exit_code = 3


class EpochSampler(torch.utils.data.Sampler):
    """A seeded permutation per epoch: the data order is a function of (seed, epoch)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):  # type: ignore[override]
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=gen).tolist())

    def __len__(self) -> int:
        return self.n


def _rng_neutral(loader: Any) -> Iterator[Any]:
    """Iterate ``loader`` without touching the global RNG.

    Starting a DataLoader iteration draws a seed from torch's global generator (at the
    first ``next``, since loaders iterate lazily). A resumed run starts one more iteration
    than the original (the skipped part of an epoch), which would shift every dropout
    mask after it; restoring the state around the first fetch keeps resume exact.
    """
    state = torch.get_rng_state()
    iterator = iter(loader)
    try:
        first = next(iterator)
    except StopIteration:
        return
    finally:
        torch.set_rng_state(state)
    yield first
    yield from iterator


def _accelerator(mixed_precision: str) -> Any:
    """An Accelerator with this precision on the run's device. Accelerate keeps one
    process-wide state and refuses a second precision; in a single process (tests, one
    recipe training two models) the state is reset instead, while a distributed launch
    keeps its own. Accelerate picks a visible GPU by itself (the one ``set_current`` made
    current), so only ``--device cpu`` on a GPU machine needs ``cpu=True``; elsewhere it
    stays False, as before (on a CPU machine it would turn a ``LOCAL_RANK`` launch into
    gloo DDP)."""
    from accelerate import Accelerator, DataLoaderConfiguration
    from accelerate.state import AcceleratorState, DistributedType

    cpu = current_policy().device.type == "cpu" and cuda_available()
    loader_cfg = DataLoaderConfiguration(split_batches=True)
    try:
        return Accelerator(mixed_precision=mixed_precision, cpu=cpu,
                           dataloader_config=loader_cfg)
    except ValueError:
        if AcceleratorState().distributed_type != DistributedType.NO:
            raise
        AcceleratorState._reset_state(reset_partial_state=True)
        return Accelerator(mixed_precision=mixed_precision, cpu=cpu,
                           dataloader_config=loader_cfg)


def check_same_vocabulary(teacher_name: str, teacher_tok: Any, student_name: str,
                          student_tok: Any) -> None:
    """Token-level distillation needs one vocabulary; say which two models differ."""
    same = (len(teacher_tok) == len(student_tok)
            and teacher_tok.get_vocab() == student_tok.get_vocab())
    if not same:
        raise UsageError(
            f"teacher {teacher_name!r} ({len(teacher_tok)} tokens) and student "
            f"{student_name!r} ({len(student_tok)} tokens) use different tokenizers; "
            "cross-tokenizer distillation is not supported yet: pick a student that shares "
            "the teacher's tokenizer"
        )


class _StepInForward(torch.nn.Module):
    """The model, with the step function run inside ``forward``.

    DDP reduces gradients only for work done inside its own ``forward``; a step that calls
    parts of the model (``model.model`` then ``lm_head`` on the response positions only,
    or a student and a head in turn) would bypass it. Wrapping the model so that DDP's
    forward runs the whole step keeps every such recipe correct under several processes.
    ``state_dict``/``load_state_dict`` are the model's own, so checkpoints keep its names
    and load into one process or many alike."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, step_fn: Callable[..., Any], batch: Any) -> Any:
        return step_fn(self.model, batch)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        return self.model.state_dict(*args, **kwargs)

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
        return self.model.load_state_dict(*args, **kwargs)


class Trainer:
    def __init__(self, model: torch.nn.Module, step_fn: Callable[..., Any],
                 dataset: Sequence[Any], cfg: TrainConfig, output_dir: str | os.PathLike[str],
                 *, collate_fn: Callable[[list[Any]], Any] | None = None,
                 param_groups: list[dict[str, Any]] | None = None,
                 accelerator: Any = None) -> None:
        if cfg.max_steps < 1 or cfg.grad_accum < 1 or cfg.batch_size < 1:
            raise ValueError("max_steps, grad_accum and batch_size must be positive")
        if len(dataset) == 0:
            raise UsageError("training set is empty; check the suite's training split")
        self.cfg = cfg
        self.step_fn = step_fn
        self.output_dir = Path(output_dir)
        self.accelerator = accelerator or _accelerator(cfg.mixed_precision)
        processes = self.accelerator.num_processes
        if cfg.batch_size % processes:
            raise UsageError(f"batch size {cfg.batch_size} does not split over {processes} "
                             "processes: set the recipe's batch size (--set) to a multiple "
                             "of the process count")
        optimizer, scheduler = optimizer_and_scheduler(model, cfg, param_groups)
        self.sampler = EpochSampler(len(dataset), cfg.seed)
        loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size,
                                             sampler=self.sampler,
                                             collate_fn=collate_fn or (lambda items: items))
        self.step_in_forward = processes > 1
        self.model, self.optimizer, self.loader, self.scheduler = self.accelerator.prepare(
            _StepInForward(model) if self.step_in_forward else model, optimizer, loader,
            scheduler)
        self.state = {"step": 0, "epoch": 0, "consumed": 0, "nonfinite_streak": 0,
                      "skipped_steps": 0}

    # -- checkpoints ---------------------------------------------------------------------
    @property
    def checkpoint_root(self) -> Path:
        return self.output_dir / "checkpoints"

    def latest_checkpoint(self) -> Path | None:
        return find_latest_checkpoint(self.checkpoint_root)

    def save_checkpoint(self) -> Path:
        return write_checkpoint(self.accelerator, self.checkpoint_root, self.state, self.cfg)

    def resume(self) -> bool:
        latest = self.latest_checkpoint()
        if latest is None:
            return False
        saved = load_checkpoint(self.accelerator, latest)
        self.state = {k: saved[k] for k in self.state}
        self._truncate_metrics(self.state["step"])
        return True

    # -- the loop ------------------------------------------------------------------------
    def train(self) -> torch.nn.Module:
        resumed = self.resume()
        cfg, state = self.cfg, self.state
        if resumed and self.accelerator.is_main_process:
            print(resume_message(state["step"], cfg.max_steps, self.latest_checkpoint()),
                  flush=True)
        with progress_bar(cfg.max_steps, "train",
                          enabled=cfg.progress and self.accelerator.is_main_process,
                          done=state["step"]) as advance:
            while state["step"] < cfg.max_steps:
                batches = (self.accelerator.skip_first_batches(self.loader, state["consumed"])
                           if state["consumed"] else self.loader)
                # Accelerate's loaders set their sampler's epoch from their own iteration
                # counter when iterated; pin it to ours, or a resumed run reshuffles as epoch 0.
                for loader in {id(self.loader): self.loader, id(batches): batches}.values():
                    if hasattr(loader, "set_epoch"):
                        loader.set_epoch(state["epoch"])
                self.sampler.set_epoch(state["epoch"])
                micro: list[Any] = []
                for batch in _rng_neutral(batches):
                    micro.append(batch)
                    state["consumed"] += 1
                    if len(micro) == cfg.grad_accum:
                        self._step(micro, advance)
                        micro = []
                        if state["step"] >= cfg.max_steps:
                            break
                else:
                    state["epoch"] += 1
                    state["consumed"] = 0
                    if micro:
                        self._step(micro, advance)
        if self.latest_checkpoint() is None or \
                self.latest_checkpoint().name != checkpoint_name(state["step"]):
            self.save_checkpoint()
        # keep_fp32_wrapper=False: without it the returned model keeps accelerate's autocast
        # forward, so evaluation would silently run in bf16 while results record fp32.
        model = self.accelerator.unwrap_model(self.model, keep_fp32_wrapper=False)
        return model.model if self.step_in_forward else model

    def _step(self, micro: list[Any], advance: Callable[..., None]) -> None:
        cfg, state, acc = self.cfg, self.state, self.accelerator
        start = time.perf_counter()
        self.model.train()
        total = torch.zeros((), device=acc.device)
        tokens, extra = 0, {}
        for i, batch in enumerate(micro):
            sync = i == len(micro) - 1
            with (nullcontext() if sync else acc.no_sync(self.model)), acc.autocast():
                out = (self.model(self.step_fn, batch) if self.step_in_forward
                       else self.step_fn(self.model, batch))
            out = out if isinstance(out, StepOutput) else StepOutput(out)
            loss = out.loss
            if acc.num_processes > 1:
                loss = loss * self._process_weight(out.mean_over)
            acc.backward(loss / len(micro))
            total += loss.detach().float() / len(micro)
            tokens += int(out.n_tokens)
            extra.update(out.metrics)
        if acc.num_processes > 1:  # log the step's loss and tokens, not the main shard's
            total = acc.reduce(total, reduction="mean")
            tokens = int(acc.reduce(torch.tensor(tokens, device=acc.device), reduction="sum"))
        norm = (acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                if cfg.max_grad_norm else torch.zeros(()))
        finite = bool(acc.reduce(torch.isfinite(total).float() * torch.isfinite(
            torch.as_tensor(norm, device=acc.device)).float(), reduction="mean") == 1.0)
        if finite:
            self.optimizer.step()
            state["nonfinite_streak"] = 0
        else:
            state["nonfinite_streak"] += 1
            state["skipped_steps"] += 1
            warnings.warn(f"step {state['step'] + 1}: non-finite loss or gradient; step "
                          f"skipped ({state['nonfinite_streak']} in a row)", stacklevel=2)
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        state["step"] += 1
        if state["nonfinite_streak"] >= cfg.max_nonfinite:
            raise TrainingDiverged(
                f"training diverged: {cfg.max_nonfinite} non-finite steps in a row at step "
                f"{state['step']} (lr {cfg.lr:g}); lower the learning rate or check the data; "
                f"the last good checkpoint is in {self.checkpoint_root}")
        seconds = time.perf_counter() - start
        row = {"step": state["step"], "loss": float(total), "lr": self.scheduler.get_last_lr()[0],
               "grad_norm": float(norm), "tokens": tokens, "seconds": round(seconds, 4),
               "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
               "skipped": not finite, **extra}
        self._log(row)
        advance(1, loss=row["loss"], tok_s=round(row["tokens_per_s"]))
        if state["step"] % cfg.checkpoint_every == 0:
            self.save_checkpoint()

    def _process_weight(self, mean_over: int | None) -> float:
        """This process's loss weight: its ``mean_over`` over the processes' mean of it,
        so DDP's average of the weighted losses' gradients is the gradient of the mean over
        all processes' items. 1 when any process gave no count (or all counted 0). Every
        process joins the gather, whatever it returned, so none waits on another."""
        acc = self.accelerator
        mine = -1.0 if mean_over is None else float(mean_over)
        counts = acc.gather(torch.tensor([mine], dtype=torch.float64, device=acc.device))
        if bool((counts < 0).any()) or float(counts.sum()) == 0.0:
            return 1.0
        return mine * counts.numel() / float(counts.sum())

    def _log(self, row: dict[str, Any]) -> None:
        if not self.accelerator.is_main_process:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with (self.output_dir / "metrics.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")

    def _truncate_metrics(self, step: int) -> None:
        path = self.output_dir / "metrics.jsonl"
        if not self.accelerator.is_main_process or not path.exists():
            return
        keep = [line for line in path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in keep))


def resume_message(step: int, max_steps: int, checkpoint: Path | None) -> str:
    """What a resumed run prints: a finished phase is loaded, not resumed."""
    if step >= max_steps:
        return f"already trained ({step} of {max_steps} steps): loading {checkpoint}"
    return f"resuming from step {step} of {max_steps} ({checkpoint})"


def logged_train_seconds(output_dir: str | Path) -> float | None:
    """Training time of a run from its ``metrics.jsonl``: the sum of its steps' wall times
    (forward, backward, optimizer; not checkpoint writes), the last entry per step, so a
    resumed run counts every step once. ``None`` without a log."""
    path = Path(output_dir) / "metrics.jsonl"
    if not path.exists():
        return None
    per_step: dict[int, float] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        seconds = row.get("seconds")
        if seconds is None and row.get("tokens_per_s"):  # logs written before "seconds"
            seconds = row["tokens"] / row["tokens_per_s"]
        per_step[int(row["step"])] = float(seconds or 0.0)
    return round(sum(per_step.values()), 3)
