"""Benchmark: fitting ZCA whitening by streaming over batches vs. a plain in-memory NumPy path.

    python bench/preprocess_fit.py           # 50,000 x 3,072 float32 (CIFAR-10 sized), ~2-3 min
    python bench/preprocess_fit.py --quick   # 5,000 x 3,072, one round, a smoke run

Both paths see the same seeded float32 data, generated chunk by chunk with the same generator.
- streaming: `Whiten(kind="zca").fit(batches)`, batches of `--batch` rows made on the fly; the
  time spent generating them is measured inside the generator and subtracted.
- in-memory: the whole array is generated first (untimed), then timed: float64 mean, centring
  in place, X^T X in float32 (one OpenBLAS sgemm: the fastest plain NumPy path; np.cov would
  copy to float64), np.linalg.eigh in float64, and the ZCA matrix U diag(1/sqrt(l+eps)) U^T.

Each run is its own process (multiprocessing "spawn"), so that its peak resident memory
(ru_maxrss) belongs to one path alone; both import torch, so their baselines match, and both
are warmed up on a small fit first. The runs alternate (S, M, M, S, ...) and the medians are
reported, with the CPU time of each (all threads), which a busy shared machine distorts less.
NumPy uses OpenBLAS, torch its own BLAS (MKL on x86 wheels); OPENBLAS_CORETYPE, if set, is
printed and applies to both runs alike (BENCHMARKS.md). Timings belong here, never in unit
tests. Exits 0.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_RATIO = 1.5  # the brief's target: streaming no slower than 1.5x the in-memory path
LATENT = 64  # rank of the shared structure in the synthetic data (image-like correlations)
OFFSET = 120.0  # pixel-like mean, far from zero, so the fit must centre carefully


def _chunks(n: int, d: int, rows: int, seed: int):
    """Seeded float32 chunks: low-rank correlated signal + noise + offset (as NumPy arrays)."""
    import torch

    mixing = torch.randn(LATENT, d, generator=torch.Generator().manual_seed(seed)) / 4
    for index, start in enumerate(range(0, n, rows)):
        g = torch.Generator().manual_seed(seed * 1_000_003 + index + 1)
        size = min(rows, n - start)
        chunk = torch.randn(size, LATENT, generator=g) @ mixing
        chunk += torch.randn(size, d, generator=g)
        chunk += OFFSET
        yield chunk.numpy()


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _summary(eigenvalues, whitening) -> dict:
    import numpy as np

    whitening = np.asarray(whitening, dtype=np.float64)
    return {
        "top_eigenvalues": [float(v) for v in eigenvalues[:5]],
        "trace_w": float(np.trace(whitening)),
    }


def _with_threads(target, threads: int | None, *args) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)
    target(*args)


def _streaming(n: int, d: int, rows: int, seed: int, queue) -> None:
    import torch

    from babysit.data import Whiten

    generating = generating_cpu = 0.0

    def batches():
        nonlocal generating, generating_cpu
        chunks = _chunks(n, d, rows, seed)
        while True:
            start, start_cpu = time.perf_counter(), time.process_time()
            chunk = next(chunks, None)
            generating += time.perf_counter() - start
            generating_cpu += time.process_time() - start_cpu
            if chunk is None:
                return
            yield torch.from_numpy(chunk)

    Whiten(kind="zca").fit(torch.randn(256, 64))  # warm-up: first calls initialise MKL
    start_rss = _rss_mb()
    start, start_cpu = time.perf_counter(), time.process_time()
    zca = Whiten(kind="zca").fit(batches())
    total, total_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    queue.put(
        {
            "fit_s": total - generating,
            "cpu_s": total_cpu - generating_cpu,
            "generate_s": generating,
            "start_rss_mb": start_rss,
            "peak_rss_mb": _peak_rss_mb(),
            **_summary(zca.explained_variance_.numpy(), zca.whitening_matrix_.numpy()),
        }
    )


def _numpy_zca(x):
    """The plain in-memory ZCA fit; centres x in place. Returns (eigenvalues, ZCA matrix)."""
    import numpy as np

    from babysit.data.preprocess import WHITEN_EPS

    mean = x.mean(axis=0, dtype=np.float64)
    x -= mean.astype(np.float32)
    covariance = (x.T @ x).astype(np.float64) / (len(x) - 1)
    values, vectors = np.linalg.eigh(covariance)
    values = np.clip(values, 0, None)
    return values, (vectors / np.sqrt(values + WHITEN_EPS)) @ vectors.T


def _in_memory(n: int, d: int, rows: int, seed: int, queue) -> None:
    import tracemalloc

    import numpy as np

    _numpy_zca(np.random.default_rng(0).normal(size=(256, 64)).astype(np.float32))  # warm-up
    start_rss = _rss_mb()
    tracemalloc.start()
    x = np.empty((n, d), dtype=np.float32)
    for index, chunk in enumerate(_chunks(n, d, rows, seed)):
        x[index * rows : index * rows + len(chunk)] = chunk
    start, start_cpu = time.perf_counter(), time.process_time()
    values, whitening = _numpy_zca(x)
    fit, fit_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    _, numpy_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    queue.put(
        {
            "fit_s": fit,
            "cpu_s": fit_cpu,
            "start_rss_mb": start_rss,
            "peak_rss_mb": _peak_rss_mb(),
            "numpy_peak_mb": numpy_peak / 2**20,
            **_summary(values[::-1], whitening),
        }
    )


def _run(target, args, threads: int | None) -> dict:
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_with_threads, args=(target, threads, *args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000, help="rows (examples)")
    parser.add_argument("--d", type=int, default=3_072, help="features (3x32x32)")
    parser.add_argument("--batch", type=int, default=1_000, help="rows per streamed batch")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of both paths")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="5,000 rows, one round")
    parser.add_argument("--threads", type=int, help="BLAS/torch threads for both paths")
    args = parser.parse_args()
    if args.threads:  # set before the children import NumPy (OpenBLAS reads it at load time)
        os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(args.threads)
    began = time.perf_counter()
    if args.quick:
        args.n, args.rounds = 5_000, 1

    import numpy as np
    import torch

    print(
        f"ZCA fit on {args.n:,} x {args.d:,} float32 (seed {args.seed}), streaming batches of "
        f"{args.batch:,}; {args.rounds} alternating round(s), each path in its own process"
    )
    print(
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')} for both paths; "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, "
        f"numpy {np.__version__}, {os.cpu_count()} CPUs"
    )
    work = (args.n, args.d, args.batch, args.seed)
    streaming, in_memory = [], []
    for round_ in range(args.rounds):
        order = [(_streaming, streaming), (_in_memory, in_memory)]
        for target, results in order if round_ % 2 == 0 else order[::-1]:
            results.append(_run(target, work, args.threads))
            r = results[-1]
            print(
                f"  round {round_ + 1} {target.__name__.strip('_'):>10}: fit {r['fit_s']:6.2f} s "
                f"(CPU {r['cpu_s']:6.2f} s), "
                f"peak RSS {r['peak_rss_mb']:7.0f} MB (at start {r['start_rss_mb']:.0f} MB)"
            )

    def median(results, key):
        return statistics.median(r[key] for r in results)

    s_fit, m_fit = median(streaming, "fit_s"), median(in_memory, "fit_s")
    s_peak, m_peak = median(streaming, "peak_rss_mb"), median(in_memory, "peak_rss_mb")
    s_start, m_start = median(streaming, "start_rss_mb"), median(in_memory, "start_rss_mb")
    ratio = s_fit / m_fit
    gigabytes = args.n * args.d * 4 / 2**30
    state_mb = args.d**2 * 8 / 2**20
    print(
        f"streaming fit (median): {s_fit:.2f} s (+ {median(streaming, 'generate_s'):.2f} s "
        f"generating batches, not counted)"
    )
    print(f"in-memory NumPy fit (median): {m_fit:.2f} s (data generated beforehand, not counted)")
    print(
        f"peak RSS, whole process (ru_maxrss, median): streaming {s_peak:.0f} MB "
        f"({s_peak - s_start:+.0f} MB over its {s_start:.0f} MB at start), in-memory "
        f"{m_peak:.0f} MB ({m_peak - m_start:+.0f} MB over {m_start:.0f} MB); the data is "
        f"{gigabytes:.2f} GiB, one D x D float64 matrix {state_mb:.0f} MB"
    )
    print(
        f"in-memory NumPy allocations, tracemalloc peak: {median(in_memory, 'numpy_peak_mb'):.0f}"
        f" MB (tracemalloc does not see torch tensors, so the streaming path has no such figure)"
    )
    top_s = np.array(streaming[0]["top_eigenvalues"])
    top_m = np.array(in_memory[0]["top_eigenvalues"])
    trace_s, trace_m = streaming[0]["trace_w"], in_memory[0]["trace_w"]
    print(
        f"agreement: top-5 eigenvalues max rel. diff {np.max(np.abs(top_s / top_m - 1)):.1e}, "
        f"trace of the ZCA matrix rel. diff {abs(trace_s / trace_m - 1):.1e}"
    )
    paired = [s["fit_s"] / m["fit_s"] for s, m in zip(streaming, in_memory, strict=True)]
    print(f"per-round ratios (streaming / in-memory): {', '.join(f'{r:.2f}' for r in paired)}")
    cpu_ratio = median(streaming, "cpu_s") / median(in_memory, "cpu_s")
    print(
        f"CPU time (all threads, median): streaming {median(streaming, 'cpu_s'):.2f} s, "
        f"in-memory {median(in_memory, 'cpu_s'):.2f} s, ratio {cpu_ratio:.2f} (less sensitive to "
        f"other processes on a shared machine than wall time)"
    )
    verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
    print(f"benchmark wall time {time.perf_counter() - began:.0f} s")
    print(f"zca_fit_ratio={ratio:.2f} (streaming / in-memory; target <= {TARGET_RATIO}: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
