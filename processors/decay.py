"""Exponential fading of cluster weights: the one place the decay factor is defined.

A weight that has seen no new member for `dt` seconds of event time is multiplied by
2^(-dt / half_life). The same expression serves Python code (`decay_factor`), numpy arrays
(`decay_factors`) and the compiled assignment kernel (`decay_factor_jit`, numba's compilation
of `decay_factor` itself), so the three agree on the formula and on the order of operations.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import numpy.typing as npt

LN2 = math.log(2.0)


def decay_factor(dt: float, half_life: float) -> float:
    """Weight left after `dt` seconds (dt >= 0) of fading with the given half life."""
    return math.exp(-LN2 * dt / half_life)


def decay_factors(dt: npt.NDArray[np.float64], half_life: float) -> npt.NDArray[np.float64]:
    """`decay_factor` of every element (numpy's exp, vectorised)."""
    return np.asarray(np.exp(-LN2 * dt / half_life))


decay_factor_jit = numba.njit(cache=True, nogil=True)(decay_factor)
