"""Theorem 1 against simulation: the ratio of means matches eq. 6 within 0.05 degrees on every row.

eq. 6 is a ratio of expectations, so the measured figure is the ratio of means
degrees(acos(sum dot / sqrt(sum ||d(t)||^2 sum ||d(t-1)||^2))) over all iterations and seeds.
The runs are long enough that THEOREM1_SIGMAS (3) jackknife standard errors fit inside
the band (``resolved``), so agreement is a real check, not a wide band. The draws are
fixed (seeded, counter-based), so each check is deterministic. These use smaller models
than ``autodrop nqm theorem1`` (n = 300 and 1000, not 10^4) to stay within seconds; the
zhang2019 family keeps n_eff ~ 24 there (57 at n = 10^4), figure1 n_eff ~ 500-600.
"""

from __future__ import annotations

import math

import pytest

from autodrop_core.nqm import (
    FIGURE1_LRS,
    THEOREM1_SIGMAS,
    THEOREM1_TOLERANCE,
    figure1_model,
    theorem1_rows,
    zhang2019_model,
)


def _check_every_row(rows) -> None:
    assert [row.lr for row in rows] == list(FIGURE1_LRS)
    for row in rows:
        assert abs(row.measured - row.predicted) <= 0.05, row
        assert row.agrees and row.tolerance == THEOREM1_TOLERANCE == 0.05
        assert row.resolved and THEOREM1_SIGMAS * row.standard_error <= 0.05, row
        assert row.ratio_of_means == row.measured


def test_ratio_of_means_matches_theorem1_on_every_figure1_row() -> None:
    rows = theorem1_rows(figure1_model(n=1000), FIGURE1_LRS, seeds=8, iters=5000)
    _check_every_row(rows)
    assert rows[0].measured > rows[1].measured > rows[2].measured > rows[3].measured > 90


def test_ratio_of_means_matches_theorem1_on_every_zhang2019_row() -> None:
    rows = theorem1_rows(zhang2019_model(n=300), FIGURE1_LRS, seeds=16, iters=30000)
    _check_every_row(rows)
    for row in rows:
        assert 20 < row.n_eff < 30
    # the band is not loose: a flat 90 degrees would fail at the two larger lrs, and so
    # would the lr 0.06 prediction at lr 0.03
    assert abs(rows[0].predicted - 90.0) > 8 * THEOREM1_TOLERANCE
    assert abs(rows[1].predicted - 90.0) > 4 * THEOREM1_TOLERANCE
    assert abs(rows[1].measured - rows[0].predicted) > THEOREM1_TOLERANCE


def test_jackknife_standard_error_shrinks_like_one_over_root_seeds() -> None:
    model = zhang2019_model(n=100)
    few = theorem1_rows(model, (0.06,), seeds=4, iters=4000)[0]
    many = theorem1_rows(model, (0.06,), seeds=64, iters=4000)[0]
    assert 2.0 < few.standard_error / many.standard_error < 8.0  # sqrt(16) = 4, jackknife noise aside
    assert many.measured == pytest.approx(many.predicted, abs=4 * many.standard_error)
    assert math.isfinite(many.mean_angle) and math.isfinite(many.mean_cosine_angle)


def test_to_dict_keeps_predicted_and_every_measured_figure() -> None:
    row = theorem1_rows(zhang2019_model(n=20), (0.01,), seeds=2, iters=50)[0].to_dict()
    assert {"predicted", "measured", "ratio_of_means", "mean_angle", "mean_cosine_angle", "n_eff",
            "standard_error", "mean_angle_standard_error", "resolved", "agrees"} <= set(row)
    assert row["ratio_of_means"] == row["measured"]


def test_theorem1_needs_two_seeds_for_a_standard_error() -> None:
    with pytest.raises(ValueError, match=r"seeds=1 is invalid: expected >= 2"):
        theorem1_rows(zhang2019_model(n=10), (0.01,), seeds=1, iters=10)
