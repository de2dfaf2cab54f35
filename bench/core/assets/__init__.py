"""Offline models and datasets: registry, checks, cache, loaders.

Importing this package is cheap (no torch, no transformers, no asset packages) so that
``bench ls`` and ``bench assets check`` stay fast; loaders import heavy libraries inside.
It also switches the Hugging Face libraries to offline mode for the rest of the process
(unless ``DISTILLBENCH_ONLINE=1``), because anything that later imports transformers,
datasets or lm-eval must not reach for a network this machine does not have.

    from bench.core.assets import ASSETS, check_all, format_status, load_causal_lm
    print(format_status(check_all()))
    model, tok = load_causal_lm()                  # packaged SmolLM2-135M-Instruct
    student = first_k_layers_student(model, 8)
"""

from __future__ import annotations

from bench.core.assets.data import DATA_FILES, data_file, java_home
from bench.core.assets.models import (
    BiEncoder,
    configure_offline,
    is_prepared,
    layer_count,
    load_bi_encoder,
    load_causal_lm,
    online_mode,
    prepare,
    prepared_dir,
)
from bench.core.assets.specs import ASSETS, AssetSpec, asset_path, cache_dir, spec
from bench.core.assets.status import AssetStatus, check, check_all, format_status
from bench.core.assets.students import first_k_layers_student, narrow_student, narrow_student_config

configure_offline()

__all__ = [
    "ASSETS", "AssetSpec", "AssetStatus", "BiEncoder", "DATA_FILES", "asset_path", "cache_dir",
    "check", "check_all", "configure_offline", "data_file", "first_k_layers_student",
    "format_status", "is_prepared", "java_home", "layer_count", "load_bi_encoder", "load_causal_lm",
    "narrow_student", "narrow_student_config", "online_mode", "prepare", "prepared_dir", "spec",
]
