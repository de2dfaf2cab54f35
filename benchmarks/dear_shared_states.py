"""Scoring two DeAR rows that share frozen lower layers: two full forwards vs shared states.

DeAR's default reranks every test pair with the untrained student and with DeAR-P. With
``frozen_layers = F`` both keep the same pretrained first F layers, and the pipeline runs
them once per pair (``methods.retrieval.frozen_layers.SharedLowerStates``). This script
scores the same BM25 candidate pairs (offline/boolq test queries) both ways with bf16
students, as the pipeline does: ``full`` calls each student's own forward, ``shared`` runs
the lower layers once and each student's upper layers on them. Repeats alternate the
order (full, shared, shared, full, ...) and medians are reported; this machine is noisy.
The second student stands in for a trained one: its upper layers and head are perturbed.

    python benchmarks/dear_shared_states.py [--pairs 96] [--layers 12] [--frozen 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=96)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--frozen", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    import torch
    from rerank_throughput import _pairs

    from methods.retrieval.dear import DeARConfig, build_student, for_inference
    from methods.retrieval.frozen_layers import SharedLowerStates, SharedStatesReranker

    torch.manual_seed(0)
    queries, docs = _pairs(args.pairs)
    order = sorted(range(len(queries)), key=lambda i: len(queries[i]) + len(docs[i]),
                   reverse=True)  # as bench.retrieval.rerank batches them
    batches = [order[s:s + args.batch_size] for s in range(0, len(order), args.batch_size)]
    cfg = DeARConfig(student_layers=args.layers, frozen_layers=args.frozen)
    init, trained = build_student(cfg), build_student(cfg)
    with torch.no_grad():
        for layer in trained.lm.get_decoder().layers[args.frozen:]:
            for p in layer.parameters():
                p.add_(0.01 * torch.randn_like(p))
    students = [for_inference(init), for_inference(trained)]

    def score_all(rows: list) -> list[list[float]]:
        out = []
        for row in rows:
            scores = [0.0] * len(queries)
            for idx in batches:
                for i, s in zip(idx, row.score([queries[i] for i in idx],
                                               [docs[i] for i in idx]), strict=True):
                    scores[i] = s
            out.append(scores)
        return out

    def run(mode: str) -> tuple[float, list[list[float]]]:
        rows = students
        if mode == "shared":
            shared = SharedLowerStates(students[1], args.frozen)
            rows = [SharedStatesReranker(m, shared) for m in students]
        start = time.perf_counter()
        with torch.inference_mode():
            scores = score_all(rows)
        return time.perf_counter() - start, scores

    run("full")  # warm-up
    seconds: dict[str, list[float]] = {"full": [], "shared": []}
    scores: dict[str, list[list[float]]] = {}
    for r in range(args.repeats):
        for mode in (("full", "shared") if r % 2 == 0 else ("shared", "full")):
            t, scores[mode] = run(mode)
            seconds[mode].append(t)
    diff = max(abs(a - b) for fs, ss in zip(scores["full"], scores["shared"], strict=True)
               for a, b in zip(fs, ss, strict=True))
    spread = statistics.pstdev([s for row in scores["full"] for s in row])
    print(f"{len(queries)} pairs x 2 students, {args.layers} layers ({args.frozen} frozen), "
          f"bf16, batch {args.batch_size}, {torch.get_num_threads()} threads, "
          f"{args.repeats} alternating repeats (medians)")
    med = {m: statistics.median(v) for m, v in seconds.items()}
    for mode in ("full", "shared"):
        print(f"{mode:<8}{med[mode]:>8.2f} s  {1000 * med[mode] / len(queries):>8.1f} ms/pair "
              f"(both rows)")
    expected = (2 * args.layers) / (args.layers + (args.layers - args.frozen))
    print(f"speed-up {med['full'] / med['shared']:.2f}x (layer passes {expected:.2f}x); "
          f"max |score difference| {diff:.4f} (score SD {spread:.4f})")


if __name__ == "__main__":
    main()
