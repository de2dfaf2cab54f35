"""Peak memory and time of the forward-KL loss, forward + backward: chunked vs plain path.

Paths, all on the same seeded logits ``[tokens, vocab]`` (student requires grad, teacher
does not; both are inputs of every path, so the figure that matters is the peak *above* them):

- ``plain``    ``forward_kl(s, t)``: float32 log-probabilities of every token at once.
- ``chunked``  ``forward_kl(s, t, chunk_size=k)``: the library's path; each chunk's value
               and gradient are computed in forward into one preallocated gradient buffer,
               so nothing is recomputed in backward.
- ``checkpointed``  the library's earlier path (chunks under activation checkpointing: each
               chunk's forward runs twice), kept to show why it was replaced.

Every (path, vocab, repeat) runs in a fresh subprocess; CPU peak is ``ru_maxrss`` of that
child minus its RSS once the inputs exist (CUDA: ``max_memory_allocated``). Repeats are
interleaved and medians reported. A child that would not fit in MemAvailable (checked in
/proc/meminfo first), or that runs out of memory, is reported as OOM; if ``plain`` is OOM at
the requested size, every path is also run at the largest halved token count where it fits.

    python benchmarks/kd_loss_memory.py [--quick] [--sweep] [--dtype bfloat16|float32]
        [--tokens 8x1024] [--vocab 49152 151936] [--repeats 3] [--chunk-size 256]
        [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from methods.losses.divergences import forward_kl  # noqa: E402
from methods.losses.token_core import kl_rows, rows_loss  # noqa: E402

MIB = 2**20
PATHS = ("plain", "chunked", "checkpointed")
TARGET_MEM, TARGET_TIME = 4.0, 1.3
# From `--sweep` (2 shared CPU cores, bf16): 256 rows was the fastest chunked setting and the
# largest memory cut at every size tried; 2048 misses the 4x memory target.
DEFAULT_CHUNK = 256
OOM_EXIT = 3


def _fkl_rows(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return kl_rows(t, s)


def checkpointed_forward_kl(student: torch.Tensor, teacher: torch.Tensor, chunk_size: int,
                            temperature: float = 1.0) -> torch.Tensor:
    """The earlier library path, kept here for comparison: chunks under activation
    checkpointing, so each chunk's forward runs again in backward."""
    from torch.utils.checkpoint import checkpoint

    s, t = student.reshape(-1, student.shape[-1]), teacher.reshape(-1, teacher.shape[-1])
    total = s.new_zeros((), dtype=torch.float32)
    for s_chunk, t_chunk in zip(torch.split(s, chunk_size), torch.split(t, chunk_size),
                                strict=True):
        total = total + checkpoint(rows_loss, _fkl_rows, s_chunk, t_chunk, temperature,
                                   use_reentrant=False)
    return total / s.shape[0]


def _loss(path: str, s: torch.Tensor, t: torch.Tensor, chunk: int) -> torch.Tensor:
    if path == "plain":
        return forward_kl(s, t)
    if path == "chunked":
        return forward_kl(s, t, chunk_size=chunk)
    return checkpointed_forward_kl(s, t, chunk)


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _mem_available() -> int:
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def _inputs(n: int, v: int, dtype: torch.dtype, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded logits, filled by 64-row slabs (rolled copies of one random block): no
    full-size float32 temporary, so building them never sets the child's peak."""
    gen = torch.Generator().manual_seed(0)
    block_s = 2.0 * torch.randn(64, v, generator=gen)
    block_t = 0.8 * block_s + 1.2 * torch.randn(64, v, generator=gen)
    s = torch.empty(1, n, v, dtype=dtype, device=device)
    t = torch.empty_like(s)
    for k, start in enumerate(range(0, n, 64)):
        rows = min(64, n - start)
        s[0, start:start + rows] = block_s[:rows].roll(97 * k, dims=-1)
        t[0, start:start + rows] = block_t[:rows].roll(97 * k, dims=-1)
    return s.requires_grad_(True), t


def worker(path: str, n: int, v: int, dtype: str, chunk: int, device: str) -> dict[str, float]:
    cuda = device == "cuda"
    s, t = _inputs(n, v, getattr(torch, dtype), device)
    warm_s = s[:, :8].detach().requires_grad_(True)  # kernels and thread pools, not timed
    _loss(path, warm_s, t[:, :8], 4).backward()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() if cuda else _rss()
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    loss = _loss(path, s, t, chunk)
    loss.backward()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    peak = (torch.cuda.max_memory_allocated() if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    assert s.grad is not None
    grad_abs = sum(g.float().abs().sum().item() for g in s.grad.split(256, dim=1))
    return {"seconds": seconds, "peak_mib": peak / MIB, "extra_mib": (peak - base) / MIB,
            "loss": loss.item(), "grad_abs_sum": grad_abs,
            "user_s": after.ru_utime - before.ru_utime, "sys_s": after.ru_stime - before.ru_stime,
            "faulted_gib": (after.ru_minflt - before.ru_minflt) * os.sysconf("SC_PAGE_SIZE") / 2**30}


def _estimate(path: str, n: int, v: int, elem: int, chunk: int) -> int:
    """Bytes a child needs (inputs + peak above them), from measured factors: the plain path
    peaks at ~8.3 float32 [n, v] tensors; a chunk's working set at ~8.3 float32 [chunk, v];
    the checkpointed path holds the gradient twice (split grads + cat), the chunked once."""
    extra = {"plain": 8.5 * n * v * 4,
             "checkpointed": 2 * n * v * elem + 8.5 * min(chunk, n) * v * 4,
             "chunked": n * v * elem + 8.5 * min(chunk, n) * v * 4}[path]
    return int(2 * n * v * elem + extra + 700 * MIB)


def _run_child(args: argparse.Namespace, path: str, n: int, v: int, chunk: int) -> dict | str:
    if args.device == "cpu":
        need, free = _estimate(path, n, v, torch.finfo(getattr(torch, args.dtype)).bits // 8,
                               chunk), _mem_available()
        if need > 0.92 * free:
            return f"OOM (needs ~{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB available)"
    cmd = [sys.executable, __file__, "--worker", path, "--tokens", str(n), "--vocab", str(v),
           "--dtype", args.dtype, "--chunk-size", str(chunk), "--device", args.device]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode == OOM_EXIT or out.returncode == -9:
        return "OOM (out of memory)" if out.returncode == OOM_EXIT else "OOM (killed)"
    if out.returncode != 0:
        raise RuntimeError(f"{path} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _measure(args: argparse.Namespace, configs: list[tuple[int, int, int]]) -> dict:
    """configs: (vocab, tokens, chunk). Returns {(vocab, tokens, path, chunk): [runs] | str}."""
    keys = list(dict.fromkeys((v, n, p, 0 if p == "plain" else c)
                              for v, n, c in configs for p in args.paths))
    results: dict = {}
    for _ in range(args.repeats):  # interleaved: every key once per round
        for v, n, path, chunk in keys:
            key = (v, n, path, chunk)
            if isinstance(results.get(key), str):
                continue  # OOM once, OOM always
            got = _run_child(args, path, n, v, chunk)
            results[key] = got if isinstance(got, str) else results.get(key, []) + [got]
            print(f"  ran {path:<8} V={v} N={n} chunk={chunk}: "
                  f"{got if isinstance(got, str) else round(got['seconds'], 2)}", flush=True)
    return results


def _median(runs: list[dict], field: str) -> float:
    return statistics.median(r[field] for r in runs)


def _report(args: argparse.Namespace, results: dict) -> None:
    metric = "CUDA max_memory_allocated" if args.device == "cuda" else "ru_maxrss"
    print(f"\nforward KL, forward+backward, {args.device}, {args.dtype} inputs, "
          f"median of {args.repeats} fresh-process repeats; peak = {metric}, "
          "extra = peak above the inputs' footprint; user/sys = CPU seconds of this process, "
          "faulted = GiB of fresh pages touched (minor page faults x page size)")
    print(f"{'vocab':>7} {'dtype':>8} {'tokens':>6} {'path':<8} {'chunk':>5} {'median s':>9} "
          f"{'peak MiB':>9} {'extra MiB':>9} {'user s':>7} {'sys s':>7} {'faulted':>7}  loss")
    for (v, n, path, chunk), runs in sorted(results.items()):
        head = f"{v:>7} {args.dtype:>8} {n:>6} {path:<8} {chunk or '-':>5}"
        if isinstance(runs, str):
            print(f"{head} {runs}")
            continue
        print(f"{head} {_median(runs, 'seconds'):>9.2f} {_median(runs, 'peak_mib'):>9.0f} "
              f"{_median(runs, 'extra_mib'):>9.0f} {_median(runs, 'user_s'):>7.1f} "
              f"{_median(runs, 'sys_s'):>7.1f} {_median(runs, 'faulted_gib'):>7.1f}  "
              f"{runs[0]['loss']:.7f}")
    print(f"\nratios vs plain (target: extra memory cut >= {TARGET_MEM:.0f}x, "
          f"time <= {TARGET_TIME}x; loss equal within 1e-5 relative)")
    for (v, n, path, chunk), runs in sorted(results.items()):
        plain = results.get((v, n, "plain", 0))
        if path == "plain" or isinstance(runs, str):
            continue
        label = f"{v:>7} N={n:<5} {path:<8} chunk={chunk:<5}"
        if not isinstance(plain, list):
            est = _estimate("plain", n, v, 0, 0) - 700 * MIB
            print(f"{label} plain OOM here (would need ~{est / MIB:.0f} MiB above the inputs, "
                  f"~{est / MIB / _median(runs, 'extra_mib'):.1f}x this path's); time n/a")
            continue
        t_ratio = _median(runs, "seconds") / _median(plain, "seconds")
        m_ratio = _median(plain, "extra_mib") / max(_median(runs, "extra_mib"), 1.0)
        rel = abs(runs[0]["loss"] - plain[0]["loss"]) / abs(plain[0]["loss"])
        g_rel = abs(runs[0]["grad_abs_sum"] - plain[0]["grad_abs_sum"]) / plain[0]["grad_abs_sum"]
        ok = m_ratio >= TARGET_MEM and t_ratio <= TARGET_TIME
        print(f"{label} time x{t_ratio:.2f}  memory cut x{m_ratio:.1f}  "
              f"target {'MET' if ok else 'MISSED'}  loss rel diff {rel:.1e} "
              f"({'ok' if rel <= 1e-5 else 'FAIL'})  |grad| sum rel diff {g_rel:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, nargs="+", default=[49152, 151936])
    parser.add_argument("--tokens", default="8x1024", help="BATCHxSEQ or a token count")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--repeats", type=int, default=None, help="3 (--quick: 1)")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK)
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--sweep", action="store_true", help="chunk sizes 256..2048 as well")
    parser.add_argument("--quick", action="store_true", help="2x256 tokens, vocab 32000, 1 repeat")
    parser.add_argument("--worker", choices=PATHS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    n = 1
    for part in args.tokens.lower().split("x"):  # "8x1024" -> 8192
        n *= int(part)
    if args.worker:
        if args.device == "cpu":  # fail with an error, not the kernel's OOM killer
            limit = _mem_available() + 2**30
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        try:
            out = worker(args.worker, n, args.vocab[0], args.dtype, args.chunk_size, args.device)
        except (MemoryError, torch.cuda.OutOfMemoryError):
            sys.exit(OOM_EXIT)
        except RuntimeError as err:
            if "memory" in str(err):
                sys.exit(OOM_EXIT)
            raise
        print(json.dumps(out))
        return
    if args.quick:
        n, args.vocab, args.chunk_size = 512, [32000], 128
    args.repeats = args.repeats or (1 if args.quick else 3)
    chunks = [256, 512, 1024, 2048] if args.sweep else [args.chunk_size]
    configs = [(v, n, c) for v in args.vocab for c in chunks]
    elem = torch.finfo(getattr(torch, args.dtype)).bits // 8
    for v in args.vocab:  # plain would not fit: also measure where it does, for the ratios
        small = n
        while args.device == "cpu" and "plain" in args.paths and small > 64 and (
                _estimate("plain", small, v, elem, 0) > 0.92 * _mem_available()):
            small //= 2
        if small != n:
            configs += [(v, small, c) for c in chunks]
    print(f"{len(configs)} configurations x {len(args.paths)} paths x {args.repeats} repeats; "
          f"MemAvailable {_mem_available() / 2**30:.1f} GiB, {os.cpu_count()} CPUs "
          "(shared with other jobs: timings are noisy)")
    _report(args, _measure(args, configs))


if __name__ == "__main__":
    main()
