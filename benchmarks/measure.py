"""Measurements shared by the benchmark scripts (issue 15): the machine's matmul rate as the reference for a
FLOP/s fraction, peak resident memory beside every time, and device-synchronised timing.

Scripts in this folder import it as ``from measure import ...`` (``benchmarks/`` is the running script's
directory, so it is on ``sys.path``).
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable

import torch as th


def sync(device: th.device | str) -> None:
    """Wait for queued CUDA work on ``device`` (no-op on CPU) so that a clock read after it is honest."""
    if th.device(device).type == "cuda":
        th.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: th.device | str) -> tuple[float, float]:
    """``(wall seconds, this process's CPU seconds)`` of ``fn()``, synchronised with ``device`` before and
    after; the CPU time does not count the time the process waits for a core, so it is the steadier figure
    on a shared machine (one thread)."""
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def matmul_flops_per_second(
    device: th.device | str, size: int = 2048, repeats: int = 5, shape: tuple[int, int, int] | None = None
) -> float:
    """Best-of-``repeats`` dense float32 matmul throughput in FLOP/s (``2 m k n`` per product).

    :param size: a square ``size x size @ size x size`` product when ``shape`` is not given.
    :param shape: ``(m, k, n)`` for an ``(m, k) @ (k, n)`` product of the benchmarked network's shape; small
        products that fit in cache can run faster than the 2048 square one on CPU.
    """
    m, k, n = shape if shape is not None else (size, size, size)
    a, b = th.randn(m, k, device=device), th.randn(k, n, device=device)
    inner = max(1, int(2e8 // (2 * m * k * n)))  # ~0.2 GFLOP per timed block, so small shapes are measurable
    th.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        for _ in range(inner):
            th.matmul(a, b)
        sync(device)
        best = min(best, (time.perf_counter() - start) / inner)
    return 2 * m * k * n / best


def _own_peak_rss_mb() -> float | None:
    """``VmHWM`` of ``/proc/self/status`` in MiB (Linux), the peak of this process's own memory map; ``None``
    where there is no such file."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def peak_rss_mb() -> dict[str, float]:
    """Peak resident set size so far, in MiB, of this process (``self``) and of its waited-for children
    (``children``: SubprocVecEnv or compiler workers).

    ``self`` is ``VmHWM`` where ``/proc`` has it: ``getrusage``'s ``ru_maxrss`` is kept across ``fork`` and
    ``execve`` on Linux, so a benchmark's child process would report its parent's peak if that was larger.
    Elsewhere, and for ``children``, ``getrusage`` (``ru_maxrss`` is in KiB on Linux, bytes on macOS).
    """
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024
    own = _own_peak_rss_mb()
    return {
        "self": own if own is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale,
        "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / scale,
    }
