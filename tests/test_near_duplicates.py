"""Near-duplicate search: hamming_pairs against brute force, and components."""

from __future__ import annotations

import numpy as np
import pytest

from fer_pipeline.data import near_duplicates
from fer_pipeline.data.near_duplicates import components, hamming_pairs


@pytest.fixture(scope="module")
def hashes() -> np.ndarray:
    """3,000 int64 hashes, shuffled: random codes; clusters of 40 around 20 seeds, each
    with 0-4 bits flipped; sparse codes (a tenth of the bits set, so many pairs lie near
    any k); exact copies of all three kinds; a group of 60 equal codes."""
    rng = np.random.default_rng(0)
    random = rng.integers(0, 2**64, 1000, dtype=np.uint64)
    near = np.repeat(rng.integers(0, 2**64, 20, dtype=np.uint64), 40)
    for _ in range(4):
        flip = (rng.random(len(near)) < 0.5).astype(np.uint64)
        near ^= flip << rng.integers(0, 64, len(near)).astype(np.uint64)
    sparse = np.packbits(rng.random((700, 64)) < 0.1, axis=1).view(">u8").ravel()
    codes = np.concatenate([random, near, sparse.astype(np.uint64)])
    copies = rng.choice(codes, 240)
    blank = np.full(60, codes[5])
    return rng.permutation(np.concatenate([codes, copies, blank])).view(np.int64)


@pytest.fixture(scope="module")
def distances(hashes: np.ndarray) -> np.ndarray:
    codes = hashes.view(np.uint64)
    return np.bitwise_count(codes[:, None] ^ codes[None, :])


def brute_force(distances: np.ndarray, k: int) -> np.ndarray:
    i, j = np.nonzero(np.triu(distances <= k, 1))
    return np.stack([i, j], axis=1)


@pytest.mark.parametrize("k", [0, 2, 5, 10, 12])
def test_pairs_match_brute_force(hashes, distances, k):
    pairs = hamming_pairs(hashes, k)
    assert pairs.dtype == np.int64 and pairs.shape[1] == 2
    np.testing.assert_array_equal(pairs, brute_force(distances, k))


@pytest.mark.parametrize("m", [3, 4, 5])
@pytest.mark.parametrize("k", [1, 3, 7, 10])
def test_every_split_matches_brute_force(hashes, distances, monkeypatch, m, k):
    """Each number of substrings, with radii that leave substrings out (k = 1, 3) or
    differ between substrings (7, 10)."""
    monkeypatch.setattr(near_duplicates, "_choose_m", lambda n, k: m)
    np.testing.assert_array_equal(hamming_pairs(hashes, k), brute_force(distances, k))


def test_small_steps_split_rows(hashes, distances, monkeypatch):
    """Steps far smaller than the blocks: rows are split across steps."""
    monkeypatch.setattr(near_duplicates, "_CANDIDATES", 97)
    monkeypatch.setattr(near_duplicates, "_LOOKUPS", 101)
    monkeypatch.setattr(near_duplicates, "_choose_m", lambda n, k: 5)
    np.testing.assert_array_equal(hamming_pairs(hashes, 8), brute_force(distances, 8))


def test_uint64_input_and_high_bit():
    codes = np.array([2**63 + 1, 2**63, 1, 2**63 + 1], dtype=np.uint64)
    expected = [[0, 1], [0, 2], [0, 3], [1, 3], [2, 3]]
    np.testing.assert_array_equal(hamming_pairs(codes, 1), expected)
    np.testing.assert_array_equal(hamming_pairs(codes.view(np.int64), 1), expected)


def test_k_zero_pairs_equal_hashes():
    hashes = np.array([5, 7, 5, 5, 7, 9, -1, 6], dtype=np.int64)
    np.testing.assert_array_equal(hamming_pairs(hashes, 0), [[0, 2], [0, 3], [1, 4], [2, 3]])


@pytest.mark.parametrize("n", [0, 1])
def test_empty_and_single(n):
    pairs = hamming_pairs(np.zeros(n, dtype=np.int64), 4)
    assert pairs.shape == (0, 2) and pairs.dtype == np.int64


@pytest.mark.parametrize(
    ("hashes", "k"),
    [
        (np.zeros(3), 1),
        (np.zeros((2, 2), np.int64), 1),
        (np.zeros(3, np.int32), 1),
        (np.zeros(3, np.int64), -1),
    ],
)
def test_bad_input(hashes, k):
    with pytest.raises(ValueError):
        hamming_pairs(hashes, k)


def test_components_of_a_known_graph():
    pairs = np.array([[3, 5], [1, 2], [2, 6], [0, 3], [7, 8]])
    np.testing.assert_array_equal(components(9, pairs), [0, 1, 1, 0, 4, 0, 1, 7, 7])
    np.testing.assert_array_equal(components(3, np.empty((0, 2), np.int64)), [0, 1, 2])
    assert components(0, np.empty((0, 2), np.int64)).shape == (0,)
    with pytest.raises(ValueError):
        components(3, np.array([[0, 3]]))


def test_components_match_union_find():
    rng = np.random.default_rng(1)
    n = 500
    pairs = rng.integers(0, n, (400, 2))
    parent = list(range(n))

    def root(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = root(a), root(b)
        parent[max(ra, rb)] = min(ra, rb)
    expected = [root(x) for x in range(n)]  # the smallest member: roots only ever lower
    np.testing.assert_array_equal(components(n, pairs), expected)


def test_components_of_hamming_pairs(hashes, distances):
    """Components of the pairs within 8 bits: a cluster's members share one label."""
    labels = components(len(hashes), hamming_pairs(hashes, 8))
    i, j = brute_force(distances, 8).T
    assert (labels[i] == labels[j]).all()
    assert (labels <= np.arange(len(hashes))).all()
    assert (labels[labels] == labels).all()


@pytest.fixture(scope="module")
def real_faces(shared_data) -> list[np.ndarray]:
    """40 RAF-DB training faces (100 x 100 RGB), decoded."""
    from fer_pipeline.data.images import decode_image
    from fer_pipeline.datasets import RafDbRelease

    release = RafDbRelease(str(shared_data / "rafdb/basic")).load()
    rows = release.table[release.table["source_split"] == "train"].head(40)
    return [decode_image(data) for data in release.reader.images(rows)]


def _copy(face: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A near copy as the planted ones of ``benchmarks/scale_data.py``: scaled by
    0.8-1.25, the box shifted and resized by up to 4 % of the side, re-encoded."""
    import cv2

    from fer_pipeline.data.images import decode_image, encode_jpeg

    side = face.shape[0]
    big = cv2.resize(face, (2 * side, 2 * side), interpolation=cv2.INTER_CUBIC)
    dx, dy, dw = (rng.uniform(-0.04, 0.04, 3) * 2 * side).round().astype(int)
    x0, y0 = max(0, dx), max(0, dy)
    crop = big[y0 : y0 + 2 * side + dw, x0 : x0 + 2 * side + dw]
    scaled = round(side * rng.uniform(0.8, 1.25))
    crop = cv2.resize(crop, (scaled, scaled), interpolation=cv2.INTER_AREA)
    return decode_image(encode_jpeg(crop, int(rng.integers(60, 90))))


def test_shifted_thumbnails_tell_copies_from_other_faces(real_faces):
    """Every shifted, rescaled, re-encoded copy of a real face correlates at least 0.85
    with it (the default ``near_duplicate_correlation``); most other faces do not."""
    from fer_pipeline.data.images import NEAR_THUMBNAIL_SIDE, near_thumbnail

    rng = np.random.default_rng(0)
    side = NEAR_THUMBNAIL_SIDE
    images = real_faces + [_copy(face, rng) for face in real_faces]
    small = np.stack(
        [np.frombuffer(near_thumbnail(x), np.uint8).reshape(side, side) for x in images]
    )
    n = len(real_faces)
    copies = np.stack([np.arange(n), np.arange(n) + n], axis=1)
    others = np.stack(np.nonzero(np.triu(np.ones((n, n), bool), 1)), axis=1)
    assert near_duplicates.shifted_correlation(small, copies).min() >= 0.85
    other = near_duplicates.shifted_correlation(small, others)
    assert np.median(other) < 0.6 and (other >= 0.85).mean() < 0.02
    itself = near_duplicates.shifted_correlation(small, np.array([[0, 0]]))
    np.testing.assert_allclose(itself, 1.0, atol=1e-5)


def test_shifted_correlation_finds_the_shift_and_handles_blank_windows():
    rng = np.random.default_rng(1)
    texture = rng.integers(0, 256, (26, 26), dtype=np.uint8)
    small = np.stack([texture[3:23, 3:23], texture[5:25, 4:24], np.full((20, 20), 7, np.uint8)])
    pairs = np.array([[0, 1], [1, 0], [0, 2], [2, 2]])
    got = near_duplicates.shifted_correlation(small, pairs, step=3)  # two chunks
    np.testing.assert_allclose(got[:2], 1.0, atol=1e-5)  # shifted by (2, 1): found
    assert got[2] == 0 and got[3] == 0  # a uniform window correlates with nothing
    unshifted = near_duplicates.shifted_correlation(small, pairs[:1], shift=0)
    assert unshifted[0] < 0.5
    with pytest.raises(ValueError, match="side"):
        near_duplicates.shifted_correlation(small[:, :4, :4], pairs, shift=2)
