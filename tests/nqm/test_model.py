"""The presets are the models they claim to be: G. Zhang et al.'s NQM and the Figure 1 spectrum.

G. Zhang et al. 2019 specify a_i = 1/i and gradient-noise covariance H / B. Here the
gradient is A (x - c), whose noise -A c has covariance A Sigma A, so the preset must have
S_i = 1 / (a_i B): S_i * a_i == 1 / B for every coordinate. (An earlier preset used
S_i = a_i, whose step lived on one or two coordinates: n_eff about 1.4.)
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from autodrop_core.nqm import (
    FIGURE1_LRS,
    ZHANG2019_BATCH_SIZE,
    participation_ratio,
    preset,
    theorem1_angle,
    zhang2019_model,
)


@pytest.mark.parametrize("batch_size", [ZHANG2019_BATCH_SIZE, 8.0, 0.5])
def test_zhang2019_has_curvature_one_over_i_and_gradient_noise_h_over_b(batch_size: float) -> None:
    model = zhang2019_model(n=1000, batch_size=batch_size)
    i = np.arange(1, 1001)
    np.testing.assert_allclose(model.curvature, 1.0 / i, rtol=1e-15)
    np.testing.assert_allclose(model.variance * model.curvature, 1.0 / batch_size, rtol=1e-14)
    # the gradient noise A c has variance a_i^2 S_i = a_i / B: the diagonal of H / B
    np.testing.assert_allclose(model.curvature**2 * model.variance, model.curvature / batch_size, rtol=1e-14)


def test_the_zhang2019_preset_is_n_10000_with_the_default_batch_size() -> None:
    model = preset("zhang2019")
    assert model.n == 10_000 and ZHANG2019_BATCH_SIZE == 1.0
    np.testing.assert_allclose(model.variance, np.arange(1, 10_001, dtype=np.float64), rtol=1e-15)


@pytest.mark.parametrize("lr", FIGURE1_LRS)
def test_zhang2019_participation_ratio_is_about_57_at_n_10000(lr: float) -> None:
    n_eff = participation_ratio(preset("zhang2019"), lr)
    assert 55.0 < n_eff < 59.0
    # w_i ~ 1 / (2 B i), so n_eff ~ (sum 1/i)^2 / sum 1/i^2 = (ln n + 0.5772)^2 / (pi^2 / 6)
    assert n_eff == pytest.approx((math.log(10_000) + 0.5772) ** 2 / (math.pi**2 / 6), rel=0.04)


def test_the_batch_size_scales_the_noise_but_not_the_angle_or_n_eff() -> None:
    one, many = zhang2019_model(n=500), zhang2019_model(n=500, batch_size=64)
    assert theorem1_angle(one, 0.06) == pytest.approx(theorem1_angle(many, 0.06), abs=1e-12)
    assert participation_ratio(one, 0.06) == pytest.approx(participation_ratio(many, 0.06), rel=1e-12)
    assert many.name == "zhang2019(n=500, B=64)" and one.name == "zhang2019(n=500)"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, r"n=0 is invalid: expected an integer >= 1"),
        ({"n": 2.5}, r"n=2\.5 is invalid"),
        ({"batch_size": 0.0}, r"batch_size=0\.0 is invalid: expected a finite number > 0"),
        ({"batch_size": math.inf}, r"batch_size=inf is invalid"),
        ({"batch_size": True}, r"batch_size=True is invalid"),
    ],
)
def test_bad_zhang2019_arguments_are_refused_by_name(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        zhang2019_model(**kwargs)  # type: ignore[arg-type]
