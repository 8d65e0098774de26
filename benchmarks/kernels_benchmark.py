"""Cache-blocked vocabulary reductions on the CPU: neuron moments (Figure 6) and logit-lens
statistics (Figures 6, 8), blocked against unblocked, same inputs, same numbers.

    python benchmarks/kernels_benchmark.py            # SmolLM2 shapes, random weights
    python benchmarks/kernels_benchmark.py --threads 1

1. ``core.neurons.layer_moments`` for one layer (1536 neurons x 49152 vocabulary, d_model
   576): the moments of each 256-neuron chunk of cosines taken all at once
   (``rows=256``, as before) or 8 neurons at a time (``rows=8``, the default on the CPU).
2. ``depth.compute.lens_stats`` for one batch of 8 x 127 positions: the whole
   ``[8, 127, 49152]`` logits at once (``block_bytes=None``) or a few rows at a time (the
   default on the CPU).

``--shape gemma3``: Gemma 3 270M's layer instead (2048 x 262,144, d_model 640).

The arithmetic floor: the product's FLOPs (2 x neurons x d_model x vocabulary) at this
machine's measured float32 matmul rate (one large square product, same threads); the
moments cannot be faster than the cosine product they reduce.

Prints the time of each, the ratio, the ratio to the floor, and whether the outputs agree (bit for bit for the
lens; to 1e-12 for the moments, which are float64 sums over a different blocking).
"""
from __future__ import annotations

import argparse
import time

import torch

from stages_of_inference.core import neurons
from stages_of_inference.core.metrics import log_probs
from stages_of_inference.depth.compute import lens_stats

SHAPES = {"smollm2": (576, 1536, 49152), "gemma3": (640, 2048, 262144)}  # d_model, d_mlp, vocabulary


def best_of(n, fn):
    times, out = [], None
    for _ in range(n):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="smollm2")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    d_model, d_mlp, vocab = SHAPES[args.shape]
    a = torch.randn(2048, 2048, generator=g)
    t_mm, _ = best_of(args.repeats, lambda: a @ a)
    rate = 2 * 2048**3 / t_mm
    floor = 2 * d_mlp * d_model * vocab / rate
    print(f"float32 matmul rate: {rate / 1e9:.0f} GFLOP/s ({args.threads} thread(s)); "
          f"floor of one layer's cosines: {floor:.2f} s")
    w_out = torch.randn(d_mlp, d_model, generator=g)
    w_u = neurons._unit(torch.randn(d_model, vocab, generator=g), 0)

    t_old, (s_old, k_old) = best_of(args.repeats, lambda: neurons.layer_moments(w_out, w_u, rows=256))
    t_new, (s_new, k_new) = best_of(args.repeats, lambda: neurons.layer_moments(w_out, w_u))
    agree = max(abs(s_old - s_new).max(), abs(k_old - k_new).max())
    print(f"neuron moments, one layer ({d_mlp} x {vocab}), {args.threads} thread(s):")
    print(f"  unblocked {t_old:6.2f} s   blocked {t_new:6.2f} s   ratio {t_old / t_new:.2f}   max |diff| {agree:.1e}")
    print(f"  blocked / arithmetic floor: {t_new / floor:.2f}   unblocked / floor: {t_old / floor:.2f}")

    n_pos = 127 if vocab <= 65536 else 32  # Gemma's vocabulary: fewer positions, same per-row work
    logits = 3 * torch.randn(8, n_pos, vocab, generator=g)
    final = log_probs(3 * torch.randn(8, n_pos, vocab, generator=g))
    t_old, (kl_old, h_old) = best_of(args.repeats, lambda: lens_stats(logits, final, block_bytes=None))
    t_new, (kl_new, h_new) = best_of(args.repeats, lambda: lens_stats(logits, final))
    same = torch.equal(kl_old, kl_new) and torch.equal(h_old, h_new)
    print(f"logit-lens KL + entropy, one batch (8 x {n_pos} x {vocab}):")
    print(f"  unblocked {t_old:6.2f} s   blocked {t_new:6.2f} s   ratio {t_old / t_new:.2f}   bitwise equal: {same}")


if __name__ == "__main__":
    main()
