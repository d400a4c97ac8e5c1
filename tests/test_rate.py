"""ecnn/rate.py: the estimate agrees with the real coded size."""

import doctest

import numpy as np
import pytest

from ecnn import rate


@pytest.mark.parametrize(
    "make",
    [
        lambda r: r.laplace(0, 3, (200, 100)),
        lambda r: r.laplace(0, 30, (50, 500)),
        lambda r: r.standard_normal((300, 64)) * np.exp(r.standard_normal(300) * 0.7)[:, None] * 10,
        lambda r: np.where(r.random((256, 128)) < 0.9, 0, r.integers(-3, 4, (256, 128))),  # sparse
        lambda r: r.laplace(0, 2, 5000),  # 1-D
    ],
)
def test_estimate_within_one_percent(make):
    q = np.rint(make(np.random.default_rng(0))).astype(np.int32)
    exact = rate.exact_bytes(q)
    est = rate.estimate_bytes(q)
    assert abs(est - exact) <= 0.01 * exact + 16, (est, exact)


def test_doctest():
    assert doctest.testmod(rate).failed == 0
