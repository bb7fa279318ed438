"""Time `near_duplicates.hamming_pairs` on a million synthetic 64-bit hashes, by k.

The hashes, shuffled: ``--n`` uniformly random codes; ``--clustered`` codes in clusters
of ``--cluster-size`` around random seeds, each the seed with 0-4 random bits flipped
(no flip: an exact duplicate), as re-encoded or lightly edited copies of one face would
hash; and a group of ``--blank`` equal codes, as blank or uniform images all hash alike.
For each k it prints the substrings the search chose (m), the seconds, the pairs found,
the pairs a brute-force comparison would examine, and the peak resident memory of the
process so far (``resource.getrusage``; k runs in ascending order, after the hashes
are made, whose memory is the first row's baseline).

    python benchmarks/near_duplicates.py                      # k = 0, 4, 6, 8, 10
    python benchmarks/near_duplicates.py --n 100000 --k 0 4 8 12
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np

from fer_pipeline.data.near_duplicates import _choose_m, hamming_pairs


def synthetic_hashes(n: int, clustered: int, cluster_size: int, blank: int, seed: int):
    """``n + clustered + blank`` int64 hashes as the module docstring describes."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    seeds = rng.integers(0, 2**64, -(-clustered // cluster_size), dtype=np.uint64)
    near = np.repeat(seeds, cluster_size)[:clustered]
    for _ in range(4):
        flip = rng.random(clustered) < 0.5
        near ^= flip.astype(np.uint64) << rng.integers(0, 64, clustered).astype(np.uint64)
    blanks = np.full(blank, rng.integers(0, 2**64, dtype=np.uint64), dtype=np.uint64)
    return rng.permutation(np.concatenate([codes, near, blanks])).view(np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="random codes")
    parser.add_argument("--clustered", type=int, default=100_000, help="codes in clusters")
    parser.add_argument("--cluster-size", type=int, default=20)
    parser.add_argument("--blank", type=int, default=1_000, help="equal codes")
    parser.add_argument("--k", type=int, nargs="+", default=[0, 4, 6, 8, 10])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    hashes = synthetic_hashes(args.n, args.clustered, args.cluster_size, args.blank, args.seed)
    total = len(hashes)
    print(
        f"{total:,} hashes ({args.n:,} random, {args.clustered:,} in clusters of "
        f"{args.cluster_size}, {args.blank:,} equal; {len(np.unique(hashes)):,} distinct) "
        f"on {os.cpu_count()} cores; brute force would compare {total * (total - 1) // 2:.2e} "
        f"pairs; memory before the search {_peak_mb():,.0f} MB"
    )
    print(f"{'k':>3} {'m':>2} {'seconds':>8} {'pairs':>12} {'peak RSS MB':>12}")
    for k in sorted(args.k):
        start = time.perf_counter()
        pairs = hamming_pairs(hashes, k)
        seconds = time.perf_counter() - start
        m = _choose_m(len(np.unique(hashes)), k) if k else "-"  # k = 0: no search
        print(f"{k:>3} {m:>2} {seconds:>8.2f} {len(pairs):>12,} {_peak_mb():>12,.0f}")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


if __name__ == "__main__":
    main()
