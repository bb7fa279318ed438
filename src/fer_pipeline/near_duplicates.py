"""Near-duplicate search among 64-bit perceptual hashes (``images.phashes``).

``hamming_pairs`` finds every pair within Hamming distance ``k`` by multi-index hashing
(Norouzi, Punjani and Fleet, "Fast search in Hamming space with multi-index hashing",
CVPR 2012), without ever comparing all pairs: identical hashes are collapsed first; the
64 bits are cut into ``m`` substrings of 12-22 bits; by pigeonhole, two codes within
``k`` agree within ``r = k // m`` bits on one of the first ``k % m + 1`` substrings or
within ``r - 1`` bits on one of the others. For each substring, codes are sorted by its
key, and each key ``x`` is looked up as ``x ^ mask`` for every mask of at most that
radius in a table over all keys; the codes of the two buckets are candidates, each
verified on all 64 bits and kept only by the first substring that can find it, so no
pair comes twice. ``m`` (3-5) is chosen per call by a cost model: look-ups grow with
the substring's width, candidates with the bucket sizes. Work runs in vectorised steps
of bounded size: at 1.5 million hashes the search needs a few hundred MB beyond its
input and output.

``components`` labels the connected components of those pairs.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import combinations
from math import comb

import numpy as np

_LOOKUPS = 1 << 22
"""Table look-ups per vectorised step."""
_CANDIDATES = 1 << 21
"""Candidate pairs generated and verified per vectorised step."""
_CANDIDATE_COST = 5.0
"""A candidate's cost in table look-ups (measured), for choosing ``m``."""


def hamming_pairs(hashes: np.ndarray, k: int) -> np.ndarray:
    """Every index pair ``(i, j)``, ``i < j``, whose 64-bit hashes differ in at most ``k``
    bits (``k = 0``: equal hashes), as an ``(m, 2)`` int64 array in lexicographic order.

    ``hashes`` is a 1-D array of 64-bit integers (int64 as ``phashes`` gives, or uint64).
    Time grows with the number of bit-flip masks, steeply in ``k``: meant for ``k`` up to
    about 12 at a million hashes. The output holds all pairs of a group of equal hashes:
    ``g * (g - 1) / 2`` rows for a group of ``g``.
    """
    h = np.asarray(hashes)
    if h.ndim != 1 or h.dtype.kind not in "iu" or h.dtype.itemsize != 8:
        raise ValueError(f"hashes must be a 1-D array of 64-bit integers, not {h.dtype}")
    if k < 0:
        raise ValueError(f"k must be >= 0, not {k}")
    n = len(h)
    uniques, inverse, sizes = np.unique(h.view(np.uint64), return_inverse=True,
                                        return_counts=True)
    a, b = _unique_pairs(uniques, k)
    members = np.argsort(inverse, kind="stable")  # grouped by unique, ascending within
    starts = np.cumsum(sizes) - sizes
    keys = []
    for p, q in _block_pairs(starts[a], sizes[a], starts[b], sizes[b]):
        i, j = members[p], members[q]
        keys.append(np.minimum(i, j) * n + np.maximum(i, j))
    equal = sizes >= 2
    for p, q in _block_pairs(starts[equal], sizes[equal]):
        keys.append(members[p] * n + members[q])
    key = np.sort(np.concatenate(keys)) if keys else np.empty(0, np.int64)
    return np.stack(np.divmod(key, n), axis=1).astype(np.int64, copy=False)


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """The connected component of each of ``n`` indices under the edges ``pairs``
    (``(m, 2)``), labelled by its smallest index."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if len(pairs) and (pairs.min() < 0 or pairs.max() >= n):
        raise ValueError(f"pairs must hold indices in [0, {n})")
    parent = np.arange(n, dtype=np.int64)
    i, j = pairs[:, 0], pairs[:, 1]
    while True:  # hook each edge's larger root under its smaller, then flatten the trees
        pi, pj = parent[i], parent[j]
        apart = pi != pj
        if not apart.any():
            return parent
        pi, pj = pi[apart], pj[apart]
        np.minimum.at(parent, np.maximum(pi, pj), np.minimum(pi, pj))
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
        i, j = i[apart], j[apart]


def _choose_m(n: int, k: int) -> int:
    """The number of substrings (3-5) with the least estimated cost for ``n`` random codes:
    look-ups (masks times distinct keys, halved) plus weighted candidates (masks times
    the expected pairs per key pair)."""

    def cost(m: int) -> float:
        total = 0.0
        for width, radius in zip(*_substrings(m, k)):
            masks = sum(comb(width, d) for d in range(radius + 1))
            total += (masks - 1) * min(n, 2**width) / 2
            total += _CANDIDATE_COST * masks * n * n / 2 ** (width + 1)
        return total

    return min((3, 4, 5), key=cost)


def _substrings(m: int, k: int) -> tuple[list[int], list[int]]:
    """The widths of ``m`` substrings (wider first) and their search radii (-1: none)."""
    widths = [64 // m + (s < 64 % m) for s in range(m)]
    radii = [k // m - (s > k % m) for s in range(m)]
    return widths, radii


def _unique_pairs(codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The index pairs of distinct sorted ``codes`` within distance ``k``, each once."""
    n = len(codes)
    found_a, found_b = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    if n < 2 or k == 0:
        return found_a[0], found_b[0]
    widths, radii = _substrings(_choose_m(n, k), k)
    shifts = np.cumsum([0, *widths[:-1]])
    fields = [np.uint64(((1 << w) - 1) << int(s)) for w, s in zip(widths, shifts)]
    for s, (width, shift, radius) in enumerate(zip(widths, shifts, radii)):
        if radius < 0:
            continue
        earlier = [(f, r) for f, r in zip(fields[:s], radii[:s]) if r >= 0]
        key = ((codes >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.intp)
        order = np.argsort(key, kind="stable")
        key, vals = key[order], codes[order]
        first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        size = np.diff(np.r_[first, n])
        distinct = key[first]

        def verify(p: np.ndarray, q: np.ndarray) -> None:
            x = vals[p] ^ vals[q]
            keep = np.bitwise_count(x) <= k
            for field, r in earlier:  # found there already
                keep &= np.bitwise_count(x & field) > r
            found_a.append(order[p[keep]])
            found_b.append(order[q[keep]])

        shared = size >= 2
        for p, q in _block_pairs(first[shared], size[shared]):
            verify(p, q)
        if radius == 0:
            continue
        slot = np.full(1 << width, -1, dtype=np.intp)
        slot[distinct] = np.arange(len(distinct))
        for top, masks in _masks(width, radius):
            # x ^ mask > x when x lacks the mask's top bit: each key pair is seen once
            xi = np.flatnonzero(((distinct >> top) & 1) == 0)
            if not len(xi):
                continue
            xs = distinct[xi]
            step = max(1, _LOOKUPS // len(xs))
            for m0 in range(0, len(masks), step):
                hits = slot[(xs ^ masks[m0 : m0 + step, None]).ravel()]
                at = np.flatnonzero(hits >= 0)
                xa, ya = xi[at % len(xs)], hits[at]
                for p, q in _block_pairs(first[xa], size[xa], first[ya], size[ya]):
                    verify(p, q)
    return np.concatenate(found_a), np.concatenate(found_b)


def _masks(width: int, radius: int) -> Iterator[tuple[int, np.ndarray]]:
    """The non-zero masks of ``width`` bits with at most ``radius`` set, by top bit."""
    for top in range(width):
        lower = [
            sum(1 << b for b in bits)
            for d in range(radius)
            for bits in combinations(range(top), d)
        ]
        yield top, (1 << top) | np.array(lower, dtype=np.intp)


def _block_pairs(
    a_start: np.ndarray,
    a_size: np.ndarray,
    b_start: np.ndarray | None = None,
    b_size: np.ndarray | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Position pairs of blocks, in steps of at most ``_CANDIDATES``: each block's
    ``a`` positions times its ``b`` positions, or without ``b``, its ``a`` positions two
    by two (``p < q``). A block may be split across steps."""
    same = b_start is None
    width = a_size * (a_size - 1) // 2 if same else a_size * b_size
    ends = np.cumsum(width, dtype=np.int64)
    begins = ends - width
    total = int(ends[-1]) if len(ends) else 0
    for g0 in range(0, total, _CANDIDATES):
        g1 = min(g0 + _CANDIDATES, total)
        lo, hi = np.searchsorted(ends, g0, "right"), np.searchsorted(begins, g1, "left")
        part = np.minimum(ends[lo:hi], g1) - np.maximum(begins[lo:hi], g0)
        block = np.repeat(np.arange(lo, hi), part)
        o = np.arange(g0, g1, dtype=np.int64) - begins[block]
        if same:  # o = q (q - 1) / 2 + p with p < q
            q = ((1 + np.sqrt(8 * o + 1.0)) // 2).astype(np.int64)
            q -= q * (q - 1) // 2 > o
            q += q * (q + 1) // 2 <= o
            yield a_start[block] + o - q * (q - 1) // 2, a_start[block] + q
        else:
            yield a_start[block] + o // b_size[block], b_start[block] + o % b_size[block]
