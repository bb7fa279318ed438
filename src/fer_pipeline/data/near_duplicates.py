"""Near-duplicate search among 64-bit perceptual hashes (``images.phashes``).

``hamming_pairs`` finds every pair within Hamming distance ``k`` by multi-index hashing
(Norouzi, Punjani and Fleet, "Fast search in Hamming space with multi-index hashing",
CVPR 2012), never comparing all pairs. Equal hashes are collapsed first. The 64 bits are
dealt into ``m`` substrings of 12-22 bits (substring ``s`` holds bits ``s, s + m, ...``,
so each gets low and high DCT frequencies alike). By pigeonhole, two codes within ``k``
differ in at most ``r = k // m`` bits on one of the first ``k % m + 1`` substrings, or
in at most ``r - 1`` on one of the others. Per substring, the codes are sorted by their
key and every key ``x`` is looked up as ``x ^ mask`` for each mask of at most that
radius in tables over all ``2 ** width`` keys; each candidate is verified on all 64 bits
and kept only by the first substring that can find it, so no pair comes twice. ``m``
(3-5) comes from a cost model of look-ups and candidates for ``n`` random codes: 3 at a
million codes. The look-ups run on a thread pool (numpy releases the GIL in them), in
steps of at most ``_LOOKUPS`` codes; memory stays within a few hundred MB beyond the
input and output at 1.5 million hashes.

``shifted_correlation`` gives a second look at candidate pairs: a hash within a few bits
finds only part of the shifted or cropped copies, and a larger distance links unrelated
look-alikes too; comparing the stored thumbnails of the candidates, one shifted by up to
2 pixels, keeps the copies and drops the look-alikes (measured: docs/data.md).

``components`` labels the connected components of those pairs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from itertools import combinations
from math import comb

import numpy as np

_LOOKUPS = 1 << 17
"""Codes looked up per vectorised step (per mask)."""
_CANDIDATES = 1 << 21
"""Candidate pairs expanded and verified per vectorised step."""
_CANDIDATE_COST = 4.0
"""A candidate's cost in table look-ups (measured), for choosing ``m``."""
_WORKERS = min(8, os.cpu_count() or 1)
"""Threads for the look-ups."""


def hamming_pairs(hashes: np.ndarray, k: int) -> np.ndarray:
    """Every index pair ``(i, j)``, ``i < j``, whose 64-bit hashes differ in at most ``k``
    bits (``k = 0``: equal hashes), as an ``(m, 2)`` int64 array in lexicographic order.

    ``hashes`` is a 1-D array of 64-bit integers (int64 as ``phashes`` gives, or uint64).
    Time grows with the number of bit-flip masks, steeply in ``k``: meant for ``k`` up to
    about 10 at a million hashes. A group of ``g`` equal hashes gives all its
    ``g * (g - 1) / 2`` pairs.
    """
    h = np.asarray(hashes)
    if h.ndim != 1 or h.dtype.kind not in "iu" or h.dtype.itemsize != 8:
        raise ValueError(f"hashes must be a 1-D array of 64-bit integers, not {h.dtype}")
    if k < 0:
        raise ValueError(f"k must be >= 0, not {k}")
    n = len(h)
    uniques, inverse, sizes = np.unique(h.view(np.uint64), return_inverse=True, return_counts=True)
    a, b = _unique_pairs(uniques, k)
    members = np.argsort(inverse, kind="stable")  # grouped by unique, ascending within
    starts = np.cumsum(sizes) - sizes
    across = _spans(starts[a], sizes[a]), *np.repeat([starts[b], sizes[b]], sizes[a], axis=1)
    keys = []
    for rows in (across, _within(starts, sizes)):
        for p, q in _rows(*rows):
            i, j = members.take(p), members.take(q)
            keys.append(np.minimum(i, j) * n + np.maximum(i, j))
    key = np.sort(np.concatenate(keys)) if keys else np.empty(0, np.int64)
    return np.stack(np.divmod(key, n), axis=1).astype(np.int64, copy=False)


def shifted_correlation(
    thumbnails: np.ndarray, pairs: np.ndarray, shift: int = 2, step: int = 1 << 16
) -> np.ndarray:
    """For each pair ``(i, j)`` of ``pairs``, the highest correlation between the centre
    of ``thumbnails[i]`` (its side less ``shift`` on each side) and the window of
    ``thumbnails[j]`` shifted by up to ``shift`` pixels each way, as float32 in [-1, 1]
    (0 where either window is uniform). ``thumbnails``: ``(n, side, side)`` grayscale;
    ``step`` pairs at a time."""
    thumbnails = np.asarray(thumbnails)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    inner = thumbnails.shape[1] - 2 * shift
    if thumbnails.ndim != 3 or thumbnails.shape[1] != thumbnails.shape[2] or inner < 1:
        raise ValueError(f"thumbnails must be (n, side, side) with side > {2 * shift}")

    def normalised(windows: np.ndarray) -> np.ndarray:
        flat = windows.reshape(len(windows), -1).astype(np.float32)
        flat -= flat.mean(axis=1, keepdims=True)
        norm = np.linalg.norm(flat, axis=1, keepdims=True)
        return np.divide(flat, norm, out=np.zeros_like(flat), where=norm > 0)

    best = np.zeros(len(pairs), np.float32)
    for start in range(0, len(pairs), step):
        i, j = pairs[start : start + step].T
        centre = normalised(thumbnails[i, shift : shift + inner, shift : shift + inner])
        chunk = np.full(len(i), -1.0, np.float32)
        for dy in range(2 * shift + 1):
            for dx in range(2 * shift + 1):
                window = normalised(thumbnails[j, dy : dy + inner, dx : dx + inner])
                np.maximum(chunk, np.einsum("ij,ij->i", centre, window), out=chunk)
        best[start : start + len(i)] = chunk
    return best


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
        i, j, pi, pj = i[apart], j[apart], pi[apart], pj[apart]
        np.minimum.at(parent, np.maximum(pi, pj), np.minimum(pi, pj))
        while not np.array_equal(grand := parent[parent], parent):
            parent = grand


def _choose_m(n: int, k: int) -> int:
    """The number of substrings (3-5) of least estimated cost for ``n`` random codes:
    look-ups (masks times half the codes) plus candidates (masks times the pairs
    expected to share a key), weighted."""

    def cost(m: int) -> float:
        total = 0.0
        for width, radius in zip(*_substrings(m, k)):
            masks = sum(comb(width, d) for d in range(radius + 1))
            total += (masks - 1) * n / 2 + _CANDIDATE_COST * masks * n * n / 2 ** (width + 1)
        return total

    return min((3, 4, 5), key=cost)


def _substrings(m: int, k: int) -> tuple[list[int], list[int]]:
    """The widths of ``m`` substrings (wider first) and their search radii (-1: none)."""
    widths = [len(range(s, 64, m)) for s in range(m)]
    radii = [k // m - (s > k % m) for s in range(m)]
    return widths, radii


def _unique_pairs(codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The index pairs of distinct ``codes`` within distance ``k``, each once."""
    found_a, found_b = [np.empty(0, np.intp)], [np.empty(0, np.intp)]
    if len(codes) < 2 or k == 0:
        return found_a[0], found_b[0]
    m = _choose_m(len(codes), k)
    widths, radii = _substrings(m, k)
    fields = [np.uint64(sum(1 << bit for bit in range(s, 64, m))) for s in range(m)]
    one = np.uint64(1)
    with ThreadPoolExecutor(_WORKERS) as pool:
        for s, (width, radius) in enumerate(zip(widths, radii)):
            if radius < 0:
                continue
            earlier = [(f, r) for f, r in zip(fields[:s], radii[:s]) if r >= 0]
            key = np.zeros(len(codes), dtype=np.uint64)
            for i, bit in enumerate(range(s, 64, m)):
                key |= ((codes >> np.uint64(bit)) & one) << np.uint64(i)
            order = np.argsort(key, kind="stable")
            key, vals = key[order].astype(np.intp), codes[order]
            for p, q in _substring_pairs(key, vals, width, radius, k, pool):
                x = vals.take(p) ^ vals.take(q)
                new = np.ones(len(x), dtype=bool)
                for field, r in earlier:  # a pair is kept by the first substring finding it
                    new &= np.bitwise_count(x & field) > r
                found_a.append(order.take(p[new]))
                found_b.append(order.take(q[new]))
    return np.concatenate(found_a), np.concatenate(found_b)


def _substring_pairs(
    key: np.ndarray, vals: np.ndarray, width: int, radius: int, k: int, pool: Executor
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Position pairs ``p < q`` of codes ``vals`` (sorted by their ``width``-bit substring
    ``key``) within distance ``k`` whose keys differ in at most ``radius`` bits, each
    once. The look-ups run on ``pool``, one task per mask's top bit."""
    first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    size = np.diff(np.r_[first, len(key)])
    yield from _close(vals, k, _within(first, size))
    if radius == 0:
        return
    # per key: present, with several codes, its first code and its positions
    present, several = np.zeros((2, 1 << width), dtype=bool)
    present[key[first]], several[key[first]] = True, size > 1
    code = np.empty(1 << width, dtype=np.uint64)
    code[key[first]] = vals[first]
    begin, end = np.empty((2, 1 << width), dtype=np.int32)
    begin[key[first]], end[key[first]] = first, first + size

    def search(top: int, masks: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        found = []
        # key ^ mask > key where key lacks the mask's top bit: each key pair comes once
        lacking = np.flatnonzero(((key >> top) & 1) == 0)
        for c in range(0, len(lacking), _LOOKUPS):
            xp = lacking[c : c + _LOOKUPS]
            xk, xv = key.take(xp), vals.take(xp)
            for mask in masks:
                y = xk ^ mask
                at = np.flatnonzero(present.take(y))
                y = y.take(at)
                ok = np.flatnonzero(np.bitwise_count(xv.take(at) ^ code.take(y)) <= k)
                found.append((xp.take(at.take(ok)), begin.take(y.take(ok)).astype(np.intp)))
                more = np.flatnonzero(several.take(y))  # keys with other codes: the second
                if len(more):
                    y, at = y.take(more), at.take(more)
                    second = begin.take(y).astype(np.intp) + 1
                    ok = np.flatnonzero(np.bitwise_count(xv.take(at) ^ vals.take(second)) <= k)
                    found.append((xp.take(at.take(ok)), second.take(ok)))
                    rest = end.take(y) - second - 1  # and the third onwards
                    more = np.flatnonzero(rest)
                    rows = xp.take(at.take(more)), second.take(more) + 1, rest.take(more)
                    found.extend(_close(vals, k, rows))
        return found

    for found in pool.map(lambda task: search(*task), _masks(width, radius)):
        yield from found


def _masks(width: int, radius: int) -> Iterator[tuple[int, np.ndarray]]:
    """The non-zero masks of ``width`` bits with at most ``radius`` set, by top bit."""
    for top in range(width):
        lower = [
            sum(1 << b for b in bits) for d in range(radius) for bits in combinations(range(top), d)
        ]
        yield top, (1 << top) | np.array(lower, dtype=np.intp)


def _close(
    vals: np.ndarray, k: int, rows: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The position pairs of ``rows`` (see ``_rows``) whose codes are within ``k``."""
    for p, q in _rows(*rows):
        ok = np.flatnonzero(np.bitwise_count(vals.take(p) ^ vals.take(q)) <= k)
        yield p.take(ok), q.take(ok)


def _spans(start: np.ndarray, size: np.ndarray) -> np.ndarray:
    """The ranges ``start[i] .. start[i] + size[i] - 1``, one after another."""
    ends = np.cumsum(size)
    return np.repeat(start - (ends - size), size) + np.arange(ends[-1] if len(ends) else 0)


def _within(start: np.ndarray, size: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows (see ``_rows``) pairing each position of each block with the later ones."""
    size = np.maximum(size - 1, 0)
    p = _spans(start, size)
    return p, p + 1, np.repeat(start + size, size) - p


def _rows(
    a: np.ndarray, b_start: np.ndarray, b_size: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Position pairs ``(a[i], b_start[i] + j)`` for ``j < b_size[i]``, in steps of at
    most ``_CANDIDATES`` pairs (a row may be split)."""
    ends = np.cumsum(b_size)
    begins = ends - b_size
    total = int(ends[-1]) if len(ends) else 0
    for g0 in range(0, total, _CANDIDATES):
        g1 = min(g0 + _CANDIDATES, total)
        lo, hi = np.searchsorted(ends, g0, "right"), np.searchsorted(begins, g1, "left")
        part = np.minimum(ends[lo:hi], g1) - np.maximum(begins[lo:hi], g0)
        offset = np.repeat(b_start[lo:hi] - begins[lo:hi], part)
        yield np.repeat(a[lo:hi], part), offset + np.arange(g0, g1)
