"""Streaming exact linear CKA against the Gram-matrix (n x n) form (goal: >= 10x per example).

Five "layers" of 512-d features for two models, Y = X W + noise so the CKA is non-trivial.
Streaming: :class:`CKAAccumulator` (exact, running sums) over n = 20,000 examples in batches of 500,
all five layers' accumulators alive at once, as :func:`feature_similarity` holds them. Gram:
:func:`linear_cka_gram` (centred n x n Gram matrices, HSIC) at n = 5,000, one layer at a time. Same
process, float64 arithmetic in both; generating the features is not timed. Reported per layer:
seconds per 1,000 examples (median over the five layers) and peak resident memory above the start
of each phase (sampled from /proc/self/statm; torch allocations are invisible to tracemalloc),
plus the bytes each method must hold (accumulator state, or the two n x n Gram matrices).
"""

from __future__ import annotations

import os
import resource
import statistics
import threading
import time
from pathlib import Path

import torch

from transferscope.measures.cka import CKAAccumulator, linear_cka_gram

N_STREAM, N_GRAM, LAYERS, DIM, BATCH = 20_000, 5_000, 5, 512, 500
_PAGE = resource.getpagesize()


class PeakRSS:
    """Peak resident set size above the value at entry, sampled every 2 ms (bytes)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._statm = Path("/proc/self/statm")

    def _rss(self) -> int:
        if self._statm.exists():
            return int(self._statm.read_text().split()[1]) * _PAGE
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux units: KiB

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss() - self.start)
            time.sleep(0.002)

    def __enter__(self) -> PeakRSS:
        self.start = self._rss()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss() - self.start)


def _mixers() -> list[tuple[torch.Tensor, float]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(DIM, DIM, generator=g) / DIM**0.5, 0.5 + i) for i in range(LAYERS)]


def _features(
    n: int, layer: int, mixer: tuple[torch.Tensor, float], seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed * 1000 + layer)
    x = torch.relu(torch.randn(n, DIM, generator=g))  # non-negative, like post-ReLU activations
    y = x @ mixer[0] + mixer[1] * torch.randn(n, DIM, generator=g)
    return x, y


def streaming(mixers: list[tuple[torch.Tensor, float]]) -> tuple[list[float], list[float], int]:
    """Seconds per layer over N_STREAM examples, the CKA values, and the accumulators' bytes."""
    accs = [CKAAccumulator() for _ in range(LAYERS)]
    seconds = [0.0] * LAYERS
    for b in range(N_STREAM // BATCH):
        for i, acc in enumerate(accs):
            x, y = _features(BATCH, i, mixers[i], seed=b)
            start = time.perf_counter()
            acc.update(x, y)
            seconds[i] += time.perf_counter() - start
    values = []
    for i, acc in enumerate(accs):
        start = time.perf_counter()
        values.append(acc.compute())
        seconds[i] += time.perf_counter() - start
    return seconds, values, sum(a.state_bytes for a in accs)


def gram(mixers: list[tuple[torch.Tensor, float]]) -> tuple[list[float], list[float]]:
    """Seconds per layer for the Gram form over N_GRAM examples, and the CKA values."""
    seconds, values = [], []
    for i in range(LAYERS):
        x, y = _features(N_GRAM, i, mixers[i], seed=10_000)
        start = time.perf_counter()
        values.append(linear_cka_gram(x, y))
        seconds.append(time.perf_counter() - start)
        del x, y
    return seconds, values


def main() -> dict:
    # One thread by default: on a shared machine, OpenMP threads waiting for busy cores swamp
    # both timings (set CKA_BENCH_THREADS to measure with more).
    torch.set_num_threads(int(os.environ.get("CKA_BENCH_THREADS", "1")))
    mixers = _mixers()
    with PeakRSS() as stream_mem:
        stream_s, stream_cka, state_bytes = streaming(mixers)
    with PeakRSS() as gram_mem:
        gram_s, gram_cka = gram(mixers)
    stream_per_1k = statistics.median(s / N_STREAM * 1000 for s in stream_s)
    gram_per_1k = statistics.median(s / N_GRAM * 1000 for s in gram_s)
    mib = 1024 * 1024
    return {
        "name": "cka",
        "compared": (
            "exact streaming linear CKA (CKAAccumulator, feature-space sums) vs Gram-matrix "
            "linear CKA (centred n x n Grams, HSIC), float64, per layer"
        ),
        "sizes": {
            "stream_examples": N_STREAM,
            "gram_examples": N_GRAM,
            "layers": LAYERS,
            "features": DIM,
            "batch": BATCH,
            "threads": torch.get_num_threads(),
        },
        "medians": {
            "stream_s_per_1k_examples": round(stream_per_1k, 5),
            "gram_s_per_1k_examples": round(gram_per_1k, 5),
        },
        "memory": {
            "stream_peak_rss_mib": round(stream_mem.peak / mib, 1),
            "gram_peak_rss_mib": round(gram_mem.peak / mib, 1),
            "stream_state_mib_all_layers": round(state_bytes / mib, 1),
            "gram_matrices_mib_per_layer": round(2 * N_GRAM**2 * 8 / mib, 1),
        },
        "cka_stream": [round(v, 4) for v in stream_cka],
        "cka_gram": [round(v, 4) for v in gram_cka],
        "ratio": round(gram_per_1k / stream_per_1k, 2),
        "goal": ">= 10 (streaming faster per example)",
    }


if __name__ == "__main__":
    import json

    print(json.dumps(main()))
