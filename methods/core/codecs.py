"""Compact, exact storage codecs for sparse diffs and binary masks.

Methods write each task's artifact as a dict of tensors (saved with safetensors) plus a JSON sidecar. This
module turns sparse data into a few uint8 / typed tensors plus a small JSON-able ``meta`` dict, and back,
bit-exactly. It is vectorised with numpy: the only Python loops run over bit planes (at most 63), varint
byte slots (at most 10) or the tensors of a pack, never over elements.

Position sets
    ``k`` sorted, unique flat indices into a vector of ``numel`` elements. The information-theoretic
    minimum is ``log2 C(numel, k)`` bits (:func:`positions_lower_bound_bits`): about
    ``log2(numel / k) + 1.44`` bits per position for sparse sets, 9.1 at 0.5% density. Schemes:

    ``empty`` / ``full``  k == 0 / k == numel; no payload at all.
    ``plain``   little-endian int32 positions (int64 when numel > 2**31): 32 bits each; the baseline.
    ``varint``  LEB128 varints of the gaps ``idx[i] - idx[i-1] - 1`` (first gap ``idx[0]``): 8 bits per
                gap below 128, so it wins on clustered sets (runs of neighbouring positions).
    ``bitmap``  one bit per element (``np.packbits``, little bit order): wins on dense sets (density
                above about 1/4), where it is near the bound anyway.
    ``ef``      Elias-Fano: the low ``l`` bits of every position, packed, then the high parts
                ``h_i = idx[i] >> l`` in unary (bit ``h_i + i`` of an upper bitmap is set). It costs about
                ``2 + log2(numel / k)`` bits per position, within ~5% of the bound for spread-out sparse
                sets (9.6 vs 9.1 bits at 0.5%). ``l`` minimises ``k*l + (numel-1) >> l``, so it is a
                function of ``(numel, k)`` and is not stored.

    ``scheme="auto"`` computes the exact size of every scheme in closed form (varint from its gap
    lengths) and encodes only the smallest, so it is never larger than any single scheme.

Sparse vectors
    Positions plus values stored as a torch tensor in ``float32``, ``float16`` or ``bfloat16`` (numpy has
    no bfloat16). Values are cast to that dtype: whether the rounding keeps accuracy must be measured.

Packs
    An artifact holds ~100 per-weight-tensor diffs or masks, and each safetensors entry costs ~80-100
    header bytes. :func:`pack_sparse_tensors` and :func:`pack_masks` choose a scheme per tensor but write
    all position payloads into one uint8 tensor and all values into one typed tensor, with per-tensor
    scheme, count and byte length in ``meta`` (offsets are cumulative sums, so they are not stored).

Masks
    ``bits`` coding stores 1 bit per element. ``entropy`` coding stores the positions of each mask's
    minority symbol with the position encoder: at 5% zeros that is ~0.31 bits per element against
    H2(0.05) = 0.29 (:func:`mask_lower_bound_bits`).

Errors: bad arguments raise ``ValueError`` (a :class:`~stream.core.errors.ConfigError` for an unknown scheme or
dtype); a payload or meta that does not decode to what it claims raises :class:`~stream.core.errors.ArtifactError`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from methods.core.config import VALUE_DTYPE_NAMES
from stream.core.errors import ArtifactError
from stream.core.validation import check_choice

POSITION_SCHEMES = ("empty", "full", "plain", "varint", "bitmap", "ef")
VALUE_DTYPES = {name: getattr(torch, name) for name in VALUE_DTYPE_NAMES}
SPARSE_FORMAT = "taskstream.sparse.v1"
MASKS_FORMAT = "taskstream.masks.v1"
_VARINT_MAX_BYTES = 10  # ceil(64 / 7): enough for any gap below 2**64


@dataclass(frozen=True, eq=False)
class EncodedPositions:
    """A position set in one scheme: ``payload`` (uint8, 1-D) decodes to ``count`` indices below ``numel``."""

    scheme: str
    numel: int
    count: int
    payload: np.ndarray

    @property
    def nbytes(self) -> int:
        """Payload size in bytes (the scheme, numel and count live in the meta)."""
        return int(self.payload.nbytes)


@dataclass(frozen=True, eq=False)
class EncodedSparse:
    """A sparse vector: encoded positions plus ``values`` (count,) in the stored dtype, on the CPU."""

    positions: EncodedPositions
    values: torch.Tensor

    @property
    def nbytes(self) -> int:
        """Payload bytes of positions and values together."""
        return self.positions.nbytes + self.values.numel() * self.values.element_size()


# ----------------------------------------------------------------------------------------- lower bounds
def positions_lower_bound_bits(numel: int, count: int) -> float:
    """``log2 C(numel, count)``: the fewest bits any code can spend on a ``count``-subset of ``numel``."""
    numel = _check_numel(numel)
    if isinstance(count, bool) or not isinstance(count, numbers.Integral) or not 0 <= count <= numel:
        raise ValueError(f"count must be an integer in [0, numel={numel}]; got {count!r}.")
    log_binom = math.lgamma(numel + 1) - math.lgamma(count + 1) - math.lgamma(numel - count + 1)
    return max(0.0, log_binom / math.log(2))


def sparse_lower_bound_bits(numel: int, count: int, value_bits: int) -> float:
    """Bound for a sparse vector: the positions' bound plus ``value_bits`` per stored value."""
    return positions_lower_bound_bits(numel, count) + count * value_bits


def mask_lower_bound_bits(numel: int, ones: int) -> float:
    """Bound for a binary mask with ``ones`` set elements: ``log2 C(numel, ones)``, i.e. ~numel * H2(rho)."""
    return positions_lower_bound_bits(numel, ones)


# ------------------------------------------------------------------------------------ input checking
def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _check_numel(numel: Any) -> int:
    if isinstance(numel, bool) or not isinstance(numel, numbers.Integral) or numel < 0:
        raise ValueError(f"numel must be a non-negative integer; got {numel!r}.")
    return int(numel)


def _check_positions(idx: Any, numel: int) -> np.ndarray:
    """Return ``idx`` as int64 (k,) after checking that it is sorted, unique and inside [0, numel)."""
    arr = _to_numpy(idx)
    if arr.ndim != 1:
        raise ValueError(f"positions must be a 1-D array; got shape {arr.shape}.")
    if arr.size == 0:
        return np.zeros(0, np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"positions must have an integer dtype; got {arr.dtype}.")
    arr = arr.astype(np.int64, copy=False)
    steps = np.diff(arr)
    bad = np.flatnonzero(steps <= 0)
    if bad.size:
        i = int(bad[0]) + 1
        what = "a duplicate of" if steps[i - 1] == 0 else "smaller than"
        raise ValueError(f"positions must be sorted and unique; idx[{i}]={arr[i]} is {what} "
                         f"idx[{i - 1}]={arr[i - 1]}.")
    if arr[0] < 0 or arr[-1] >= numel:
        i = 0 if arr[0] < 0 else arr.size - 1
        raise ValueError(f"positions must lie in [0, numel={numel}); got idx[{i}]={arr[i]}.")
    return arr


# ------------------------------------------------------------------------------------- scheme sizes
def _plain_width(numel: int) -> int:
    return 4 if numel <= 2**31 else 8  # the largest index, numel - 1, must fit a signed int32


def _gaps(idx: np.ndarray) -> np.ndarray:
    return (np.diff(idx, prepend=-1) - 1).astype(np.uint64)  # (k,) >= 0, since idx is strictly increasing


def _varint_lengths(gaps: np.ndarray) -> np.ndarray:
    """Bytes of each LEB128 varint, (k,) int64: one per started 7-bit group."""
    lengths = np.ones(gaps.shape, np.int64)
    for j in range(1, _VARINT_MAX_BYTES):
        longer = gaps >= np.uint64(1 << (7 * j))
        if not longer.any():
            break
        lengths += longer
    return lengths


def _ef_low_bits(numel: int, count: int) -> int:
    """Low-bit width minimising the worst-case Elias-Fano size ``count*l + count + (numel-1) >> l`` bits."""
    if count == 0:
        return 0
    top = numel - 1
    return min(range(top.bit_length() + 1), key=lambda low: count * low + (top >> low))


def _encoded_nbytes(scheme: str, idx: np.ndarray, numel: int) -> int:
    k = idx.size
    if scheme in ("empty", "full"):
        return 0
    if scheme == "plain":
        return k * _plain_width(numel)
    if scheme == "bitmap":
        return (numel + 7) // 8
    if scheme == "varint":
        return int(_varint_lengths(_gaps(idx)).sum())
    low = _ef_low_bits(numel, k)
    return (k * low + (k + (int(idx[-1]) >> low) if k else 0) + 7) // 8


# ----------------------------------------------------------------------------------------- encoders
def _encode_nothing(idx: np.ndarray, numel: int) -> np.ndarray:
    return np.zeros(0, np.uint8)


def _encode_plain(idx: np.ndarray, numel: int) -> np.ndarray:
    return idx.astype("<i4" if _plain_width(numel) == 4 else "<i8").view(np.uint8)


def _encode_varint(idx: np.ndarray, numel: int) -> np.ndarray:
    gaps = _gaps(idx)
    lengths = _varint_lengths(gaps)
    starts = np.cumsum(lengths) - lengths  # (k,) first byte of each varint
    out = np.empty(int(lengths.sum()), np.uint8)
    for j in range(int(lengths.max(initial=0))):  # byte slot j of every varint that has one
        has = np.flatnonzero(lengths > j)
        byte = ((gaps[has] >> np.uint64(7 * j)) & np.uint64(0x7F)).astype(np.uint8)
        byte[lengths[has] > j + 1] |= 0x80  # continuation bit: more bytes follow
        out[starts[has] + j] = byte
    return out


def _encode_bitmap(idx: np.ndarray, numel: int) -> np.ndarray:
    bits = np.zeros(numel, bool)
    bits[idx] = True
    return np.packbits(bits, bitorder="little")


def _encode_ef(idx: np.ndarray, numel: int) -> np.ndarray:
    k = idx.size
    if k == 0:
        return np.zeros(0, np.uint8)
    low = _ef_low_bits(numel, k)
    low_bits = np.empty((k, low), np.uint8)  # (k, l): bit j of position i's low part
    for j in range(low):
        low_bits[:, j] = (idx >> j) & 1
    high = idx >> low  # (k,) non-decreasing, so high + arange(k) is strictly increasing
    upper = np.zeros(k + int(high[-1]), np.uint8)
    upper[high + np.arange(k)] = 1
    return np.packbits(np.concatenate([low_bits.ravel(), upper]), bitorder="little")


_ENCODERS = {"empty": _encode_nothing, "full": _encode_nothing, "plain": _encode_plain,
             "varint": _encode_varint, "bitmap": _encode_bitmap, "ef": _encode_ef}


def encode_positions(idx: Any, numel: int, scheme: str = "auto") -> EncodedPositions:
    """Encode sorted unique flat indices ``idx`` (k,) into a vector of ``numel`` elements.

    ``scheme`` is one of :data:`POSITION_SCHEMES` or ``"auto"`` (the smallest payload; see the module
    docstring). Raises ``ValueError`` if ``idx`` is not 1-D integer, sorted, unique and in range, or if
    ``"empty"`` / ``"full"`` is asked for a set that is not.
    """
    check_choice("encode_positions", "scheme", scheme, ("auto", *POSITION_SCHEMES))
    numel = _check_numel(numel)
    idx = _check_positions(idx, numel)
    k = idx.size
    if scheme == "auto":
        if k in (0, numel):
            scheme = "empty" if k == 0 else "full"
        else:
            scheme = min(("ef", "bitmap", "varint", "plain"), key=lambda s: _encoded_nbytes(s, idx, numel))
    elif (scheme == "empty" and k != 0) or (scheme == "full" and k != numel):
        raise ValueError(f"scheme {scheme!r} needs {'no' if scheme == 'empty' else 'all'} positions; "
                         f"got {k} of numel={numel}.")
    return EncodedPositions(scheme, numel, k, _ENCODERS[scheme](idx, numel))


# ----------------------------------------------------------------------------------------- decoders
def _corrupt(enc: EncodedPositions, problem: str) -> ArtifactError:
    return ArtifactError(f"Corrupt {enc.scheme!r} position payload ({enc.nbytes} bytes, count={enc.count}, "
                         f"numel={enc.numel}): {problem}.")


def _expect_nbytes(enc: EncodedPositions, nbytes: int) -> None:
    if enc.nbytes != nbytes:
        raise _corrupt(enc, f"expected {nbytes} bytes")


def _decode_empty(enc: EncodedPositions) -> np.ndarray:
    _expect_nbytes(enc, 0)
    return np.zeros(0, np.int64)


def _decode_full(enc: EncodedPositions) -> np.ndarray:
    _expect_nbytes(enc, 0)
    return np.arange(enc.numel, dtype=np.int64)


def _decode_plain(enc: EncodedPositions) -> np.ndarray:
    width = _plain_width(enc.numel)
    _expect_nbytes(enc, enc.count * width)
    return np.ascontiguousarray(enc.payload).view("<i4" if width == 4 else "<i8").astype(np.int64)


def _decode_varint(enc: EncodedPositions) -> np.ndarray:
    data = enc.payload
    last = np.flatnonzero(data < 0x80)  # final byte of each varint: continuation bit clear
    if last.size != enc.count or (int(last[-1]) + 1 if last.size else 0) != data.size:
        raise _corrupt(enc, f"found {last.size} complete varints")
    if enc.count == 0:
        return np.zeros(0, np.int64)
    first = np.concatenate(([0], last[:-1] + 1))
    lengths = last - first + 1
    if lengths.max() > _VARINT_MAX_BYTES:
        raise _corrupt(enc, f"a varint is longer than {_VARINT_MAX_BYTES} bytes")
    shifts = 7 * (np.arange(data.size) - np.repeat(first, lengths))  # (nbytes,) 7 * slot within its varint
    groups = (data & 0x7F).astype(np.uint64) << shifts.astype(np.uint64)
    gaps = np.add.reduceat(groups, first)  # groups never overlap, so the sum is the bitwise or
    return np.cumsum(gaps.astype(np.int64) + 1) - 1


def _decode_bitmap(enc: EncodedPositions) -> np.ndarray:
    _expect_nbytes(enc, (enc.numel + 7) // 8)
    return np.flatnonzero(np.unpackbits(enc.payload, count=enc.numel, bitorder="little"))


def _decode_ef(enc: EncodedPositions) -> np.ndarray:
    k = enc.count
    low = _ef_low_bits(enc.numel, k)
    bits = np.unpackbits(enc.payload, bitorder="little")
    ones = np.flatnonzero(bits[k * low:])  # (k,) upper-bitmap positions high + arange(k)
    if ones.size != k or enc.nbytes != (k * low + (int(ones[-1]) + 1 if k else 0) + 7) // 8:
        raise _corrupt(enc, f"upper bitmap has {ones.size} set bits")
    low_bits = bits[:k * low].reshape(k, low)
    idx = (ones - np.arange(k)) << low
    for j in range(low):
        idx |= low_bits[:, j].astype(np.int64) << j
    return idx


_DECODERS = {"empty": _decode_empty, "full": _decode_full, "plain": _decode_plain,
             "varint": _decode_varint, "bitmap": _decode_bitmap, "ef": _decode_ef}


def decode_positions(enc: EncodedPositions) -> np.ndarray:
    """Decode to the sorted int64 indices (count,) that were encoded.

    Raises :class:`~stream.core.errors.ArtifactError` if the payload does not decode to ``count`` sorted,
    unique indices below ``numel`` (a truncated or tampered artifact).
    """
    for field in ("numel", "count"):
        value = getattr(enc, field)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise ArtifactError(f"Position set {field} must be a non-negative integer; got {value!r}.")
    if enc.scheme not in _DECODERS:
        raise ArtifactError(f"Unknown position scheme {enc.scheme!r}; known: {', '.join(POSITION_SCHEMES)}.")
    if not isinstance(enc.payload, np.ndarray) or enc.payload.dtype != np.uint8 or enc.payload.ndim != 1:
        raise _corrupt(enc, "payload must be a 1-D uint8 array")
    idx = _DECODERS[enc.scheme](enc)
    try:
        idx = _check_positions(idx, enc.numel)
    except ValueError as err:
        raise _corrupt(enc, str(err).rstrip(".")) from err
    if idx.size != enc.count:
        raise _corrupt(enc, f"decoded {idx.size} positions")
    return idx


# ------------------------------------------------------------------------------------ sparse vectors
def encode_sparse(idx: Any, values: Any, numel: int, value_dtype: str = "float32",
                  scheme: str = "auto") -> EncodedSparse:
    """Encode a sparse vector of ``numel`` elements from its positions and values.

    ``idx`` (k,) is checked and encoded as in :func:`encode_positions`; ``values`` (k,), numpy or torch,
    is cast to ``value_dtype`` (a key of :data:`VALUE_DTYPES`) and copied to the CPU.
    """
    check_choice("encode_sparse", "value_dtype", value_dtype, VALUE_DTYPES)
    positions = encode_positions(idx, numel, scheme)
    vals = values.detach().cpu() if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values))
    if vals.shape != (positions.count,):
        raise ValueError(f"values must be 1-D with one entry per position ({positions.count}); "
                         f"got shape {tuple(vals.shape)}.")
    return EncodedSparse(positions, vals.to(VALUE_DTYPES[value_dtype], copy=True).contiguous())


def decode_sparse(enc: EncodedSparse) -> tuple[np.ndarray, torch.Tensor]:
    """Return ``(idx, values)``: int64 positions (k,) and the stored values (k,) in their dtype."""
    if enc.values.shape != (enc.positions.count,):
        raise ArtifactError(f"Sparse vector has {enc.positions.count} positions but values of shape "
                            f"{tuple(enc.values.shape)}.")
    return decode_positions(enc.positions), enc.values


# ------------------------------------------------------------------------------------------- packing
def _concat_positions(encoded: Sequence[EncodedPositions]) -> tuple[torch.Tensor, dict[str, list]]:
    """One uint8 tensor holding every payload back to back, and the meta columns that split it again."""
    payload = np.concatenate([e.payload for e in encoded] + [np.zeros(0, np.uint8)])
    columns = {"scheme": [e.scheme for e in encoded], "count": [e.count for e in encoded],
               "nbytes": [e.nbytes for e in encoded]}
    return torch.from_numpy(payload), columns


def _split_positions(payload: torch.Tensor, meta: Mapping, numels: Sequence[int]) -> list[np.ndarray]:
    """Inverse of :func:`_concat_positions`: the decoded indices of each packed set, in order."""
    data = payload.numpy()
    nbytes = np.asarray(meta["nbytes"], np.int64)
    if int(nbytes.sum()) != data.size:
        raise ArtifactError(f"Position tensor has {data.size} bytes; meta lists {int(nbytes.sum())}.")
    ends = np.cumsum(nbytes)
    starts = ends - nbytes
    return [decode_positions(EncodedPositions(scheme, int(numel), int(count), data[start:end]))
            for scheme, numel, count, start, end in zip(meta["scheme"], numels, meta["count"], starts, ends)]


def _check_meta(meta: Mapping, fmt: str, columns: Sequence[str]) -> None:
    if not isinstance(meta, Mapping) or meta.get("format") != fmt:
        found = meta.get("format") if isinstance(meta, Mapping) else type(meta).__name__
        raise ArtifactError(f"Expected meta with format {fmt!r}; got {found!r}.")
    missing = [c for c in ("key", "names", *columns) if c not in meta]
    if missing:
        raise ArtifactError(f"Meta of format {fmt!r} lacks {', '.join(missing)}.")
    if any(len(meta[c]) != len(meta["names"]) for c in columns):
        raise ArtifactError(f"Meta of format {fmt!r} has columns of different lengths.")


def _get_tensor(tensors: Mapping[str, torch.Tensor], name: str, dtype: torch.dtype) -> torch.Tensor:
    if name not in tensors:
        raise ArtifactError(f"Artifact has no tensor {name!r}; it has {', '.join(sorted(tensors)) or 'none'}.")
    tensor = tensors[name].detach().cpu()
    if tensor.dtype != dtype or tensor.ndim != 1:
        raise ArtifactError(f"Tensor {name!r} must be 1-D {dtype}; got {tensor.dtype} {tuple(tensor.shape)}.")
    return tensor


def pack_sparse_tensors(named: Mapping[str, tuple[Any, Any, int]], value_dtype: str = "float32", *,
                        key: str = "sparse") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Pack many sparse vectors ``{name: (idx, values, numel)}`` into two tensors and a JSON-able meta.

    Each vector gets its own best position scheme; all payloads go into ``f"{key}.positions"`` (uint8)
    and all values into ``f"{key}.values"`` (``value_dtype``), so the safetensors header has two entries
    whatever the number of vectors. Use a method-specific ``key`` (e.g. ``"diff"``) to avoid clashes.
    """
    check_choice("pack_sparse_tensors", "value_dtype", value_dtype, VALUE_DTYPES)
    encoded: dict[str, EncodedSparse] = {}
    for name, entry in named.items():
        try:
            idx, values, numel = entry
            encoded[name] = encode_sparse(idx, values, numel, value_dtype)
        except ValueError as err:
            raise ValueError(f"Sparse tensor {name!r}: {err}") from err
    positions, columns = _concat_positions([e.positions for e in encoded.values()])
    values = [e.values for e in encoded.values()]
    tensors = {f"{key}.positions": positions,
               f"{key}.values": torch.cat([*values, torch.zeros(0, dtype=VALUE_DTYPES[value_dtype])])}
    meta = {"format": SPARSE_FORMAT, "key": key, "value_dtype": value_dtype, "names": list(encoded),
            "numel": [e.positions.numel for e in encoded.values()], **columns}
    return tensors, meta


def unpack_sparse_tensors(tensors: Mapping[str, torch.Tensor],
                          meta: Mapping[str, Any]) -> dict[str, tuple[np.ndarray, torch.Tensor]]:
    """Inverse of :func:`pack_sparse_tensors`: ``{name: (idx int64 (k,), values (k,))}``.

    The values are views into the packed values tensor. Raises :class:`~stream.core.errors.ArtifactError` if
    the tensors and meta do not agree.
    """
    _check_meta(meta, SPARSE_FORMAT, ("numel", "scheme", "count", "nbytes"))
    if meta.get("value_dtype") not in VALUE_DTYPES:
        raise ArtifactError(f"Unknown value dtype {meta.get('value_dtype')!r}; known: {', '.join(VALUE_DTYPES)}.")
    payload = _get_tensor(tensors, f"{meta['key']}.positions", torch.uint8)
    values = _get_tensor(tensors, f"{meta['key']}.values", VALUE_DTYPES[meta["value_dtype"]])
    counts = np.asarray(meta["count"], np.int64)
    if int(counts.sum()) != values.numel():
        raise ArtifactError(f"Values tensor has {values.numel()} entries; meta lists {int(counts.sum())}.")
    value_ends = np.cumsum(counts)
    indices = _split_positions(payload, meta, meta["numel"])
    return {name: (idx, values[int(end) - idx.size:int(end)])
            for name, idx, end in zip(meta["names"], indices, value_ends)}


# --------------------------------------------------------------------------------------------- masks
def _mask_array(mask: Any, name: str = "mask") -> np.ndarray:
    arr = _to_numpy(mask)
    if arr.dtype != np.bool_:
        raise ValueError(f"{name} must be a bool tensor; got dtype {arr.dtype}.")
    return arr


def pack_mask_bits(mask: Any) -> torch.Tensor:
    """Pack a bool mask of any shape into (ceil(numel / 8),) uint8, 1 bit per element.

    Element i in row-major order is bit i % 8 (least significant first) of byte i // 8.
    """
    return torch.from_numpy(np.packbits(_mask_array(mask).ravel(), bitorder="little"))


def unpack_mask_bits(packed: Any, shape: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`pack_mask_bits`: a bool tensor of ``shape``."""
    shape = tuple(int(s) for s in shape)
    numel = math.prod(shape)
    data = _to_numpy(packed)
    if data.dtype != np.uint8 or data.shape != ((numel + 7) // 8,):
        raise ArtifactError(f"Packed mask for shape {shape} must be ({(numel + 7) // 8},) uint8; "
                            f"got {data.dtype} {data.shape}.")
    return torch.from_numpy(np.unpackbits(data, count=numel, bitorder="little").view(bool).reshape(shape))


def pack_masks(named: Mapping[str, Any], *, entropy_coded: bool = False,
               key: str = "mask") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Pack bool masks ``{name: mask}`` into one uint8 tensor and a JSON-able meta.

    ``entropy_coded=False`` writes every mask's bits back to back into ``f"{key}.bits"`` (1 bit per
    element). ``entropy_coded=True`` writes, for each mask, the positions of its minority symbol with the
    best position scheme into ``f"{key}.positions"`` (never much above 1 bit per element, near the
    bound ``numel * H2(density)`` for skewed masks).
    """
    arrays = {name: _mask_array(mask, f"mask {name!r}") for name, mask in named.items()}
    meta: dict[str, Any] = {"format": MASKS_FORMAT, "key": key, "names": list(arrays),
                            "shapes": [list(a.shape) for a in arrays.values()]}
    if not entropy_coded:
        flat = np.concatenate([a.ravel() for a in arrays.values()] + [np.zeros(0, bool)])
        return {f"{key}.bits": pack_mask_bits(flat)}, {**meta, "coding": "bits"}
    stored, encoded = [], []
    for arr in arrays.values():
        flat = arr.ravel()
        symbol = 2 * int(np.count_nonzero(flat)) <= flat.size  # True: the ones are the minority
        stored.append(int(symbol))
        encoded.append(encode_positions(np.flatnonzero(flat == symbol), flat.size))
    positions, columns = _concat_positions(encoded)
    return {f"{key}.positions": positions}, {**meta, "coding": "entropy", "stored": stored, **columns}


def unpack_masks(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`pack_masks`: ``{name: bool tensor}`` in the original shapes."""
    entropy = isinstance(meta, Mapping) and meta.get("coding") == "entropy"
    _check_meta(meta, MASKS_FORMAT, ("shapes", "stored", "scheme", "count", "nbytes") if entropy else ("shapes",))
    shapes = [tuple(int(s) for s in shape) for shape in meta["shapes"]]
    numels = [math.prod(shape) for shape in shapes]
    if not entropy:
        if meta.get("coding") != "bits":
            raise ArtifactError(f"Unknown mask coding {meta.get('coding')!r}; known: 'bits', 'entropy'.")
        flat = unpack_mask_bits(_get_tensor(tensors, f"{meta['key']}.bits", torch.uint8), (sum(numels),))
        parts = torch.split(flat, numels)
        return {name: part.reshape(shape) for name, part, shape in zip(meta["names"], parts, shapes)}
    payload = _get_tensor(tensors, f"{meta['key']}.positions", torch.uint8)
    masks = {}
    for name, idx, symbol, shape in zip(meta["names"], _split_positions(payload, meta, numels),
                                        meta["stored"], shapes):
        flat = np.full(math.prod(shape), not symbol, dtype=bool)
        flat[idx] = bool(symbol)
        masks[name] = torch.from_numpy(flat.reshape(shape))
    return masks
