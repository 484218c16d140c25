"""Tests for methods.core.codecs: exact round trips, sizes against the lower bound, speed, bad input."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from safetensors.torch import load, save

from methods.core.codecs import (
    POSITION_SCHEMES,
    EncodedPositions,
    decode_positions,
    decode_sparse,
    encode_positions,
    encode_sparse,
    mask_lower_bound_bits,
    pack_mask_bits,
    pack_masks,
    pack_sparse_tensors,
    positions_lower_bound_bits,
    sparse_lower_bound_bits,
    unpack_mask_bits,
    unpack_masks,
    unpack_sparse_tensors,
)
from stream.core.errors import ArtifactError

# Schemes that can encode any set (empty/full only encode their one set).
GENERAL_SCHEMES = ("plain", "varint", "bitmap", "ef")
# Integer views used to compare floats bit for bit (NaN payloads, -0.0 and subnormals included).
INT_VIEW = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}
FAST = settings(max_examples=60, deadline=None)


@st.composite
def position_sets(draw: st.DrawFn, max_numel: int = 5000) -> tuple[np.ndarray, int]:
    """(idx, numel): sorted unique positions in the shapes that stress each scheme."""
    numel = draw(st.integers(0, max_numel))
    kinds = ["empty", "full"] + (["first", "last", "small", "block", "random"] if numel else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "empty":
        return np.zeros(0, np.int64), numel
    if kind == "full":
        return np.arange(numel), numel
    if kind in ("first", "last"):
        return np.array([0 if kind == "first" else numel - 1]), numel
    if kind == "small":  # hypothesis-shrinkable explicit sets
        return np.array(sorted(draw(st.sets(st.integers(0, numel - 1), max_size=40))), np.int64), numel
    if kind == "block":  # one contiguous run: gaps of 0, where varint shines
        start = draw(st.integers(0, numel - 1))
        return np.arange(start, draw(st.integers(start + 1, numel))), numel
    density = draw(st.sampled_from([1e-3, 5e-3, 0.02, 0.1, 0.3, 0.5, 0.9, 0.999]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return np.flatnonzero(rng.random(numel) < density), numel


def random_positions(numel: int, density: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(numel, int(numel * density), replace=False))


# ------------------------------------------------------------------------------------------ positions
@FAST
@given(position_sets(), st.sampled_from(GENERAL_SCHEMES))
def test_every_scheme_round_trips(case: tuple[np.ndarray, int], scheme: str) -> None:
    idx, numel = case
    enc = encode_positions(idx, numel, scheme)
    assert (enc.scheme, enc.numel, enc.count) == (scheme, numel, idx.size)
    assert enc.payload.dtype == np.uint8 and enc.payload.ndim == 1
    out = decode_positions(enc)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, idx)


@FAST
@given(position_sets())
def test_auto_round_trips_and_is_never_larger_than_any_scheme(case: tuple[np.ndarray, int]) -> None:
    idx, numel = case
    auto = encode_positions(idx, numel)
    np.testing.assert_array_equal(decode_positions(auto), idx)
    for scheme in GENERAL_SCHEMES:
        assert auto.nbytes <= encode_positions(idx, numel, scheme).nbytes, scheme
    if idx.size in (0, numel):
        assert auto.scheme in ("empty", "full") and auto.nbytes == 0


@pytest.mark.parametrize("numel", [0, 1, 7, 8, 9, 1000])
def test_empty_and_full_cost_nothing(numel: int) -> None:
    for scheme, idx in (("empty", np.zeros(0, np.int64)), ("full", np.arange(numel))):
        enc = encode_positions(idx, numel, scheme)
        assert enc.nbytes == 0
        np.testing.assert_array_equal(decode_positions(enc), idx)


def test_scheme_sizes_match_their_cost_model() -> None:
    numel = 100_000
    idx = random_positions(numel, 0.01)  # k = 1000 spread-out positions
    sizes = {s: encode_positions(idx, numel, s).nbytes for s in GENERAL_SCHEMES}
    assert sizes["plain"] == 4 * idx.size
    assert sizes["bitmap"] == numel // 8
    # EF: l = floor(log2(100)) = 6 low bits + 1 stop bit + ~100/64 unary high bits per position.
    assert 8.4 * idx.size / 8 < sizes["ef"] < 8.7 * idx.size / 8
    assert encode_positions(idx, numel).scheme == "ef"
    block = np.arange(500, 60_000)  # clustered: gaps of 0 take one varint byte, the first gap (500) two
    assert encode_positions(block, numel, "varint").nbytes == block.size + 1
    assert encode_positions(np.arange(0, numel, 2), numel).scheme == "bitmap"


@pytest.mark.parametrize("density", [0.005, 0.001])
def test_elias_fano_is_near_the_lower_bound(density: float) -> None:
    numel = 1_000_000
    idx = random_positions(numel, density, seed=1)
    enc = encode_positions(idx, numel, "ef")
    ratio = 8 * enc.nbytes / positions_lower_bound_bits(numel, idx.size)
    assert 1.0 <= ratio <= 1.15, ratio  # measured ~1.05 at both densities
    assert encode_positions(idx, numel).nbytes == enc.nbytes


def test_full_size_round_trip_is_fast() -> None:
    numel = 22_700_000  # all-MiniLM-L6-v2's parameter count at the paper's 0.5% density
    idx = random_positions(numel, 0.005, seed=2)
    start = time.perf_counter()
    enc = encode_positions(idx, numel)
    out = decode_positions(enc)
    elapsed = time.perf_counter() - start
    np.testing.assert_array_equal(out, idx)
    assert enc.scheme == "ef" and 8 * enc.nbytes / idx.size < 9.7
    assert elapsed < 2.0, elapsed


def test_int64_positions_beyond_int32() -> None:
    numel = 2**33
    idx = np.array([0, 5, 2**31, 2**32 + 17, numel - 1])
    for scheme in ("plain", "varint", "ef"):  # a 2**33-bit bitmap would take 1 GiB
        enc = encode_positions(idx, numel, scheme)
        np.testing.assert_array_equal(decode_positions(enc), idx)
    assert encode_positions(idx, numel, "plain").nbytes == 8 * idx.size


def test_lower_bounds() -> None:
    assert positions_lower_bound_bits(10, 0) == 0.0
    assert positions_lower_bound_bits(10, 10) == 0.0
    assert positions_lower_bound_bits(10, 3) == pytest.approx(math.log2(math.comb(10, 3)))
    per_position = positions_lower_bound_bits(22_700_000, 113_500) / 113_500
    assert per_position == pytest.approx(9.08, abs=0.01)  # the "about 9.1 bits" of the design notes
    assert sparse_lower_bound_bits(10, 3, 16) == pytest.approx(math.log2(120) + 48)
    assert mask_lower_bound_bits(1000, 50) == positions_lower_bound_bits(1000, 50)


# --------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("idx", "numel", "message"), [
    ([3, 1, 5], 10, r"sorted and unique; idx\[1\]=1 is smaller than idx\[0\]=3"),
    ([1, 4, 4], 10, r"idx\[2\]=4 is a duplicate of idx\[1\]=4"),
    ([-1, 2], 10, r"\[0, numel=10\); got idx\[0\]=-1"),
    ([2, 10], 10, r"\[0, numel=10\); got idx\[1\]=10"),
    ([0.0, 1.0], 10, "integer dtype"),
    ([[0, 1]], 10, "1-D"),
    ([0], -1, "non-negative integer"),
])
def test_invalid_positions_are_rejected(idx: list, numel: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_positions(np.array(idx), numel)


def test_invalid_scheme_and_misapplied_trivial_schemes() -> None:
    with pytest.raises(ValueError, match="scheme must be one of .*Did you mean 'bitmap'"):
        encode_positions([1], 10, "bitmapp")
    with pytest.raises(ValueError, match="'full' needs all positions; got 1 of numel=10"):
        encode_positions([1], 10, "full")
    with pytest.raises(ValueError, match="'empty' needs no positions"):
        encode_positions([1], 10, "empty")


@pytest.mark.parametrize("scheme", GENERAL_SCHEMES)
def test_truncated_or_padded_payloads_raise_artifact_error(scheme: str) -> None:
    idx = np.array([3, 40, 41, 900, 999])
    enc = encode_positions(idx, 1000, scheme)
    for payload in (enc.payload[:-1], np.concatenate([enc.payload, [0]]).astype(np.uint8)):
        with pytest.raises(ArtifactError, match="Corrupt"):
            decode_positions(EncodedPositions(scheme, enc.numel, enc.count, payload))
    with pytest.raises(ArtifactError, match="Unknown position scheme"):
        decode_positions(EncodedPositions("zip", enc.numel, enc.count, enc.payload))


def test_payload_that_decodes_out_of_range_raises_artifact_error() -> None:
    enc = encode_positions([1, 900], 1000, "plain")
    with pytest.raises(ArtifactError, match="lie in"):
        decode_positions(EncodedPositions("plain", 500, 2, enc.payload))


# ------------------------------------------------------------------------------------ sparse vectors
@FAST
@given(position_sets(max_numel=2000), st.sampled_from(["float32", "float16", "bfloat16"]),
       st.integers(0, 2**32 - 1))
def test_sparse_values_round_trip_bit_exactly(case: tuple[np.ndarray, int], value_dtype: str,
                                              seed: int) -> None:
    idx, numel = case
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[value_dtype]
    # Random bit patterns: every NaN payload, infinity, -0.0 and subnormal of the dtype can appear.
    bits = torch.randint(-(2**15), 2**15, (idx.size,), generator=torch.Generator().manual_seed(seed))
    values = bits.to(INT_VIEW[dtype]).view(dtype) if dtype != torch.float32 else \
        (bits * 65_537).to(torch.int32).view(torch.float32)
    enc = encode_sparse(torch.from_numpy(idx), values, numel, value_dtype)
    out_idx, out_values = decode_sparse(enc)
    np.testing.assert_array_equal(out_idx, idx)
    assert out_values.dtype == dtype
    assert torch.equal(out_values.view(INT_VIEW[dtype]), values.view(INT_VIEW[dtype]))
    assert enc.nbytes == enc.positions.nbytes + idx.size * values.element_size()


def test_sparse_casts_values_and_checks_their_length() -> None:
    enc = encode_sparse([1, 3], np.array([1.0, 1 / 3]), 5, "bfloat16")
    assert enc.values.dtype == torch.bfloat16
    assert torch.equal(enc.values, torch.tensor([1.0, 1 / 3]).to(torch.bfloat16))
    with pytest.raises(ValueError, match=r"one entry per position \(2\); got shape \(3,\)"):
        encode_sparse([1, 3], [1.0, 2.0, 3.0], 5)
    with pytest.raises(ValueError, match="value_dtype must be one of"):
        encode_sparse([1, 3], [1.0, 2.0], 5, "float64")


def test_pack_sparse_tensors_round_trips_through_safetensors_and_json() -> None:
    rng = np.random.default_rng(3)
    named = {
        "empty.weight": (np.zeros(0, np.int64), torch.zeros(0), 300),
        "full.bias": (np.arange(64), torch.randn(64), 64),
        "zero_size": (np.zeros(0, np.int64), torch.zeros(0), 0),
        "sparse.weight": (random_positions(150_000, 0.005, seed=4), None, 150_000),
        "dense.weight": (np.flatnonzero(rng.random(5000) < 0.6), None, 5000),
        "block.weight": (np.arange(70_000, 70_050), None, 100_000),
    }
    named = {name: (idx, torch.randn(idx.size) if values is None else values, numel)
             for name, (idx, values, numel) in named.items()}
    tensors, meta = pack_sparse_tensors(named, "bfloat16", key="diff")
    assert set(tensors) == {"diff.positions", "diff.values"}
    assert meta["scheme"] == ["empty", "full", "empty", "ef", "bitmap", "varint"]
    meta = json.loads(json.dumps(meta))  # the sidecar is JSON
    unpacked = unpack_sparse_tensors(load(save(tensors)), meta)
    assert list(unpacked) == list(named)
    for name, (idx, values, _) in named.items():
        np.testing.assert_array_equal(unpacked[name][0], idx)
        assert torch.equal(unpacked[name][1], values.to(torch.bfloat16))
    assert len(json.dumps(meta, separators=(",", ":"))) < 500


def test_pack_sparse_tensors_names_the_bad_tensor_and_detects_mismatches() -> None:
    with pytest.raises(ValueError, match="Sparse tensor 'w': positions must be sorted"):
        pack_sparse_tensors({"ok": ([0], [1.0], 2), "w": ([2, 1], [1.0, 2.0], 3)})
    tensors, meta = pack_sparse_tensors({"w": ([1, 2], [1.0, 2.0], 3)})
    with pytest.raises(ArtifactError, match="Values tensor has 1 entries; meta lists 2"):
        unpack_sparse_tensors({**tensors, "sparse.values": tensors["sparse.values"][:1]}, meta)
    with pytest.raises(ArtifactError, match="must be 1-D torch.float32; got torch.float16"):
        unpack_sparse_tensors({**tensors, "sparse.values": tensors["sparse.values"].half()}, meta)
    with pytest.raises(ArtifactError, match="no tensor 'sparse.positions'"):
        unpack_sparse_tensors({"sparse.values": tensors["sparse.values"]}, meta)
    with pytest.raises(ArtifactError, match="format"):
        unpack_sparse_tensors(tensors, {**meta, "format": "other"})


# --------------------------------------------------------------------------------------------- masks
@FAST
@given(hnp.arrays(bool, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=9)))
def test_mask_bits_round_trip(mask: np.ndarray) -> None:
    packed = pack_mask_bits(torch.from_numpy(mask))
    assert packed.dtype == torch.uint8 and packed.numel() == (mask.size + 7) // 8
    out = unpack_mask_bits(packed, mask.shape)
    assert out.dtype == torch.bool and out.shape == mask.shape
    np.testing.assert_array_equal(out.numpy(), mask)


@FAST
@given(st.lists(hnp.arrays(bool, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=12)),
                max_size=5), st.booleans())
def test_pack_masks_round_trip(masks: list[np.ndarray], entropy_coded: bool) -> None:
    named = {f"layer{i}.mask": torch.from_numpy(m) for i, m in enumerate(masks)}
    tensors, meta = pack_masks(named, entropy_coded=entropy_coded, key="mask")
    assert len(tensors) == 1
    out = unpack_masks(load(save(tensors)), json.loads(json.dumps(meta)))
    assert list(out) == list(named)
    for name, mask in named.items():
        assert out[name].dtype == torch.bool and torch.equal(out[name], mask)


def test_entropy_coded_masks_beat_plain_bits_at_5_percent_zeros() -> None:
    rng = np.random.default_rng(5)
    named = {"query": rng.random((384, 384)) >= 0.05, "intermediate": rng.random((1536, 384)) >= 0.05,
             "all_ones": np.ones((384,), bool)}
    named = {name: torch.from_numpy(m) for name, m in named.items()}
    plain, _ = pack_masks(named)
    coded, meta = pack_masks(named, entropy_coded=True)
    plain_bytes, coded_bytes = plain["mask.bits"].numel(), coded["mask.positions"].numel()
    bound_bits = sum(mask_lower_bound_bits(m.numel(), int(m.sum())) for m in named.values())
    assert coded_bytes < 0.35 * plain_bytes  # ~0.31 bits per weight instead of 1
    assert 8 * coded_bytes < 1.15 * bound_bits
    assert meta["stored"] == [0, 0, 0] and meta["scheme"][2] == "empty"
    out = unpack_masks(coded, meta)
    assert all(torch.equal(out[name], mask) for name, mask in named.items())


def test_bad_masks_are_rejected() -> None:
    with pytest.raises(ValueError, match="mask 'w' must be a bool tensor; got dtype float32"):
        pack_masks({"w": torch.zeros(3)})
    with pytest.raises(ArtifactError, match=r"must be \(2,\) uint8"):
        unpack_mask_bits(torch.zeros(1, dtype=torch.uint8), (3, 4))
    tensors, meta = pack_masks({"w": torch.ones(3, dtype=torch.bool)}, entropy_coded=True)
    with pytest.raises(ArtifactError, match="Unknown mask coding"):
        unpack_masks(tensors, {**meta, "coding": "rle"})


def test_position_scheme_list_is_complete() -> None:
    assert set(POSITION_SCHEMES) == set(GENERAL_SCHEMES) | {"empty", "full"}
