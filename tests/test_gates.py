"""The hard-concrete gate's closed-form distribution (analysis/gates.py) against sampling and its identities."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.gates import gate_distribution, gate_table, plot_gate_distribution


def _samples(log_alpha: float, lower: float, upper: float, n: int, seed: int) -> np.ndarray:
    """z drawn as the method draws it: clip(sigmoid(logit(u) + log_alpha) * (r - l) + l, 0, 1)."""
    u = np.random.default_rng(seed).uniform(size=n)
    s = 1.0 / (1.0 + np.exp(-(np.log(u / (1.0 - u)) + log_alpha)))
    return np.clip(s * (upper - lower) + lower, 0.0, 1.0)


@pytest.mark.parametrize("log_alpha", [-4.0, -1.0, 0.0, 1.0, 3.0, 5.0])
@pytest.mark.parametrize("lower,upper", [(-1.5, 1.5), (-0.1, 1.1)])
def test_closed_form_matches_monte_carlo(log_alpha, lower, upper):
    n = 200_000
    z = _samples(log_alpha, lower, upper, n, seed=int(10 * log_alpha) + 100)
    d = gate_distribution(log_alpha, lower, upper)
    for empirical, exact in (((z == 0).mean(), d.p_zero), ((z == 1).mean(), d.p_one)):
        assert abs(empirical - exact) <= 5 * math.sqrt(exact * (1 - exact) / n) + 1e-4
    assert abs(z.mean() - d.mean) <= 5 * z.std() / math.sqrt(n)
    # The continuous part: the histogram of the samples strictly inside (0, 1) against the density.
    inside = z[(z > 0) & (z < 1)]
    counts, _ = np.histogram(inside, bins=10, range=(0.0, 1.0))
    # Each bin's probability from the density (midpoint rule over the grid points in the bin).
    expected = np.array([d.density[(d.z >= i / 10) & (d.z < (i + 1) / 10)].sum() for i in range(10)]) / d.z.size * n
    assert np.all(np.abs(counts - expected) <= 5 * np.sqrt(expected) + 0.01 * expected + 5)


def test_masses_density_and_identities():
    for log_alpha in (-3.0, 0.0, 2.0, 5.0):
        d = gate_distribution(log_alpha)
        assert d.p_zero + d.p_between + d.p_one == pytest.approx(1.0)
        assert np.sum(d.density) / d.z.size == pytest.approx(d.p_between, rel=1e-5)
        # P(z != 0) is the expected-L0 term: sigmoid(log_alpha - log(-l / r)), = sigmoid(log_alpha) at l = -r.
        assert d.p_nonzero == pytest.approx(1 / (1 + math.exp(-log_alpha)))
    centre = gate_distribution(0.0)
    assert (centre.p_zero, centre.p_one, centre.mean) == pytest.approx((0.5, 1 / 6, 1 / 3))
    assert np.allclose(centre.density, 1 / 3)  # at log-alpha 0 the in-between part is uniform
    # The evaluation gate is exactly 0 at or below log-alpha 0 and exactly 1 from logit(2.5 / 3) on.
    assert gate_distribution(-0.5).deterministic == 0.0 and gate_distribution(1.7).deterministic == 1.0
    assert gate_distribution(1.0).deterministic == pytest.approx(3 / (1 + math.exp(-1.0)) - 1.5)


def test_table_and_figure():
    table = gate_table([-2.0, 5.0])
    assert list(table.columns) == ["log_alpha", "P(z=0)", "P(0<z<1)", "P(z=1)", "P(z!=0)", "E[z]", "eval z"]
    assert table["P(z=0)"].is_monotonic_decreasing and table["E[z]"].is_monotonic_increasing
    fig = plot_gate_distribution([-2.0, 0.0, 5.0])
    assert len(fig.subfigs) == 2 and len(fig.subfigs[0].axes) == 6  # three panels, each with a point-mass axis
    with pytest.raises(ValueError, match="lower < 0 and upper > 1"):
        gate_distribution(0.0, lower=0.1)
