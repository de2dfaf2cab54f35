"""The rows of the GPU check (scripts/gpu_check.py runs them): one module per area.

``common`` holds what every row shares; ``losses``, ``trainer``, ``vision``, ``specdec``
and ``retrieval`` each hold their rows, functions ``check(ctx) -> Outcome``.
"""
