"""Vector decoding and the checks every input vector passes before it reaches the engine.

Policy on norms: vectors are re-normalised to unit length (not rejected) when their norm
is off by more than the tolerance. The engine works on cosine similarity, so the direction
is what matters; a producer that forgot to normalise still gives a usable vector. Zero and
non-finite vectors carry no direction and are rejected.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pybase64

from schemas.errors import ClustererError

FloatArray = npt.NDArray[np.float32]


class InputError(ClustererError, ValueError):
    """A bad input, with a stable machine-readable reason code for dead letters and metrics.
    `error_class` names the exception that revealed it (dead letters carry it), so an
    operator can tell a foreseen rejection from a parser or validator failure."""

    def __init__(self, reason: str, detail: str, error_class: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.error_class = error_class or type(self).__name__


@dataclass(frozen=True)
class ValidationLimits:
    """Limits applied to every input; defaults suit 384-d to 4096-d sentence embeddings."""

    max_payload_bytes: int = 1_000_000
    max_dimension: int = 8192
    norm_tolerance: float = 1e-3
    max_id_length: int = 512
    max_depth: int = 32
    """JSON nesting of a whole message; the parser itself stops at 1,024 levels."""
    max_metadata_values: int = 10_000
    """keys, values and list entries of one metadata object, counted together."""
    max_string_length: int = 65_536
    """characters of any one string inside metadata."""
    max_vectors_per_document: int = 1_000
    """embeddings of one EmbeddedDocument (Stage 3 sends ~30-50)."""


DEFAULT_LIMITS = ValidationLimits()


_NUMBER_TYPES = frozenset((float, int))
# event times must survive conversion to ISO 8601 (datetime covers years 1 to 9999)
MIN_EVENT_TIME = -62_135_596_800.0
MAX_EVENT_TIME = 253_402_300_799.0


def _b64decode(text: str) -> bytes:
    """Strict base64, as the standard library's `b64decode(validate=True)` decides it.
    pybase64 decodes with SIMD, 3-5x faster on a 384-d vector (the router's hot path), and
    gives the same bytes wherever it accepts; it refuses padding past a complete quantum
    ("AAAA="), which the standard library accepts, so the standard library decides
    whatever pybase64 refuses (tests/schemas/test_fast_paths.py compares the two)."""
    try:
        return pybase64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InputError("bad_vector_encoding", f"vector is not valid base64: {exc}") from exc


def decode_vector(raw: Any, limits: ValidationLimits = DEFAULT_LIMITS) -> FloatArray:
    """Turn a JSON number array or a base64 little-endian float32 string into a unit vector.
    Strict: JSON booleans, strings and nulls are not numbers. No Python loop per element:
    the type check and the conversion run in C (`map`, numpy)."""
    if isinstance(raw, str):
        buf = _b64decode(raw)
        if len(buf) % 4:
            raise InputError(
                "bad_vector_encoding", f"base64 vector has {len(buf)} bytes, not a multiple of 4"
            )
        vec = np.frombuffer(buf, dtype="<f4").astype(np.float32)
    elif isinstance(raw, list | tuple):
        if len(raw) > limits.max_dimension:
            raise InputError(
                "dimension_too_large", f"vector has {len(raw)} values, limit {limits.max_dimension}"
            )
        if list(map(type, raw)).count(float) == len(raw):  # the usual case, proved cheapest
            with np.errstate(over="ignore"):  # beyond float32 becomes inf: non_finite below
                return check_vector(np.fromiter(raw, np.float64, len(raw)).astype(np.float32))
        kinds = set(map(type, raw))  # bool is its own type, not int, here
        if not kinds <= _NUMBER_TYPES:
            names = ", ".join(sorted(k.__name__ for k in kinds - _NUMBER_TYPES))
            raise InputError("schema_violation", f"vector holds non-numbers ({names})")
        try:
            with np.errstate(over="ignore"):  # beyond float32 becomes inf: non_finite below
                vec = np.asarray(raw, dtype=np.float64).astype(np.float32)
        except OverflowError as exc:  # an integer beyond float range
            raise InputError("non_finite", "vector holds a number beyond float range") from exc
    elif isinstance(raw, np.ndarray):
        vec = np.asarray(raw, dtype=np.float32).reshape(-1)
    else:
        raise InputError(
            "bad_vector_encoding",
            f"vector must be a float array or base64 string, got {type(raw).__name__}",
        )
    return check_vector(vec, limits)


FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_vector(vec: FloatArray, limits: ValidationLimits = DEFAULT_LIMITS) -> FloatArray:
    """Reject empty, oversize, non-finite and zero vectors; re-normalise off-norm ones."""
    if vec.ndim != 1 or vec.size == 0:
        raise InputError("empty_vector", "vector has no values")
    if vec.size > limits.max_dimension:
        raise InputError(
            "dimension_too_large", f"vector has {vec.size} values, limit {limits.max_dimension}"
        )
    # One pass does both checks: the squares of float32 values cannot overflow float64
    # (8192 x 3.4e38^2 is about 1e81), and they are never negative, so the sum is finite
    # exactly when every value is. The sum is `np.linalg.norm`'s own `x.dot(x)`, so the norm
    # (and the re-normalised vector) is bit for bit what `np.linalg.norm` gives.
    v64 = vec.astype(np.float64)
    sqnorm = float(v64.dot(v64))
    if not math.isfinite(sqnorm):
        raise InputError("non_finite", "vector holds NaN or infinite values (after float32)")
    norm = math.sqrt(sqnorm)
    if norm == 0.0:
        raise InputError("zero_vector", "vector has zero length and no direction")
    if abs(norm - 1.0) > limits.norm_tolerance:
        # a norm past float32's range would become inf in `vec / norm` (a float32 division)
        # and turn the vector into zeros; such vectors are divided in float64
        big = norm > FLOAT32_MAX
        vec = ((v64 if big else vec) / norm).astype(np.float32)
    return vec


def check_event_time(t: float) -> float:
    """Finite and within years 1 to 9999, so every output can print it as ISO 8601."""
    if not MIN_EVENT_TIME <= t <= MAX_EVENT_TIME:  # also false for NaN
        raise ValueError(f"event time {t!r} is outside years 1 to 9999")
    return t


def check_metadata(meta: Any, limits: ValidationLimits = DEFAULT_LIMITS, depth: int = 1) -> None:
    """Bound what one metadata object may cost downstream (facets, labels, storage): nesting,
    number of values and string length. Iterative, so no input can exhaust the stack."""
    stack: list[tuple[Any, int]] = [(meta, depth)]
    seen = 0
    while stack:
        node, level = stack.pop()
        if level > limits.max_depth:
            raise InputError("too_deep", f"metadata nests deeper than {limits.max_depth} levels")
        if isinstance(node, dict):
            seen += len(node)
            for k, v in node.items():
                if len(k) > limits.max_string_length:
                    raise InputError("too_large", "a metadata key is too long")
                stack.append((v, level + 1))
        elif isinstance(node, list):
            seen += len(node)
            stack.extend((v, level + 1) for v in node)
        elif isinstance(node, str) and len(node) > limits.max_string_length:
            raise InputError(
                "too_large",
                f"a metadata string has {len(node)} characters, limit {limits.max_string_length}",
            )
        if seen > limits.max_metadata_values:
            raise InputError(
                "too_large", f"metadata holds more than {limits.max_metadata_values} values"
            )


def dimension_mismatch(scope: str, expected: int, got: int) -> InputError:
    """A scope has one dimension; a vector of another size cannot be compared with it. The
    engine raises it for a batch, the worker dead-letters the one record."""
    return InputError("dimension_mismatch", f"scope {scope} uses {expected} dimensions, got {got}")


def check_matrix(vectors: npt.NDArray[Any]) -> FloatArray:
    """Batch form of the checks for offline files: returns unit float32 rows or raises."""
    if vectors.ndim != 2 or vectors.shape[0] == 0 or vectors.shape[1] == 0:
        raise InputError("bad_shape", f"expected a non-empty 2-d array, got shape {vectors.shape}")
    if not np.issubdtype(vectors.dtype, np.floating):
        raise InputError("bad_dtype", f"expected float rows, got {vectors.dtype}")
    mat = np.ascontiguousarray(vectors, dtype=np.float32)
    bad = ~np.isfinite(mat).all(axis=1)
    if bad.any():
        raise InputError(
            "non_finite",
            f"{int(bad.sum())} rows hold NaN or infinite values (first: row {int(np.argmax(bad))})",
        )
    norms = np.linalg.norm(mat.astype(np.float64), axis=1)
    if (norms == 0).any():
        raise InputError("zero_vector", f"row {int(np.argmax(norms == 0))} is a zero vector")
    off = np.abs(norms - 1.0) > DEFAULT_LIMITS.norm_tolerance
    if off.any():
        mat[off] = (mat[off] / norms[off, None]).astype(np.float32)
    return mat
