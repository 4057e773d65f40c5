from __future__ import annotations

import numpy as np

from processors.decay import decay_factor, decay_factor_jit, decay_factors


def test_half_life_halves_and_zero_time_keeps():
    assert decay_factor(0.0, 10.0) == 1.0
    assert abs(decay_factor(10.0, 10.0) - 0.5) < 1e-15
    assert abs(decay_factor(30.0, 10.0) - 0.125) < 1e-15


def test_python_kernel_and_array_forms_agree():
    """The compiled kernel and Python code agree to the bit (batch == one by one relies
    on it); numpy's vectorised exp to the last digit or so."""
    dt = np.random.default_rng(0).exponential(1e5, 5000)
    py = np.array([decay_factor(float(d), 172_800.0) for d in dt])
    jit = np.array([decay_factor_jit(float(d), 172_800.0) for d in dt])
    assert np.array_equal(py, jit)
    assert np.allclose(decay_factors(dt, 172_800.0), py, rtol=1e-14, atol=0)
