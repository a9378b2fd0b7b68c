"""Theorem 1 against simulation: the mean stationary angle matches eq. 6 within a stated band.

The band is THEOREM1_SIGMAS (4) standard errors of the measured mean, estimated from the
spread of independent seeds. The draws are fixed (seeded, counter-based), so each check
is deterministic; the band says how far sampling error alone could move the mean.
"""

from __future__ import annotations

import pytest

from autodrop_core.nqm import THEOREM1_SIGMAS, figure1_model, theorem1_rows, zhang2019_model


def test_mean_angle_matches_theorem1_on_the_figure1_spectrum_at_several_lrs() -> None:
    rows = theorem1_rows(figure1_model(n=1000), (0.06, 0.03, 0.01), seeds=6, iters=300)
    for row in rows:
        assert row.agrees, row
        assert row.tolerance < 0.3  # a band that is small next to the angles' spread (90..106 deg)
        assert abs(row.ratio_of_means - row.predicted) < 0.3
    assert rows[0].measured > rows[1].measured > rows[2].measured > 90


def test_mean_angle_matches_theorem1_on_the_zhang_spectrum_despite_few_contributing_coordinates() -> None:
    rows = theorem1_rows(zhang2019_model(n=100), (0.06, 0.01), seeds=32, iters=2500)
    for row in rows:
        assert row.n_eff < 2
        assert row.agrees, row
        assert row.tolerance < 0.7
    assert abs(rows[0].predicted - 90.0) > rows[0].tolerance  # a flat 90 degrees would have failed
    assert rows[0].tolerance == pytest.approx(THEOREM1_SIGMAS * rows[0].standard_error)


def test_theorem1_needs_two_seeds_for_a_standard_error() -> None:
    with pytest.raises(ValueError, match=r"seeds=1 is invalid: expected >= 2"):
        theorem1_rows(zhang2019_model(n=10), (0.01,), seeds=1, iters=10)
