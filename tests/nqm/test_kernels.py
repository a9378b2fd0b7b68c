"""The numba kernels: they agree with plain numpy, and the result ignores threads and chunking."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from autodrop_core.nqm import Momentum, NQMRun, heavy_ball, nesterov, sgd, simulate, zhang2019_model
from autodrop_core.nqm._rng import run_key

OPTIMIZERS = [sgd(), heavy_ball(0.8), nesterov(0.8), Momentum(0.5, 0.3, "unified s=0.5")]


@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=lambda o: o.name)
def test_kernel_agrees_with_the_numpy_reference(reference, small_figure1, optimizer) -> None:
    lrs, seeds, iters = [0.05, 0.01], [0, 7], 40
    x0 = np.linspace(-1, 2, small_figure1.n)
    traj = simulate(small_figure1, lrs, seeds, iters, optimizer=optimizer, start=x0)
    for i, lr in enumerate(lrs):
        for j, seed in enumerate(seeds):
            loss, dot, sq, x = reference.run(
                small_figure1.curvature, small_figure1.variance, x0, lr, optimizer.s, optimizer.beta,
                int(run_key(seed)), iters,
            )
            np.testing.assert_allclose(traj.final_x[i, j], x, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(traj.loss[i, j, 1:], loss, rtol=1e-12)
            np.testing.assert_allclose(traj.dot[i, j], dot, rtol=1e-10, atol=1e-12 * sq.max())
            np.testing.assert_allclose(traj.sq_norm[i, j], sq, rtol=1e-12)


def test_result_does_not_depend_on_the_number_of_threads(small_zhang) -> None:
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs at least 2 numba threads")
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = simulate(small_zhang, [0.06, 0.001], range(5), 60)
        numba.set_num_threads(min(4, numba.config.NUMBA_NUM_THREADS))
        many = simulate(small_zhang, [0.06, 0.001], range(5), 60)
    finally:
        numba.set_num_threads(before)
    for field in ("loss", "dot", "sq_norm", "final_x"):
        np.testing.assert_array_equal(getattr(one, field), getattr(many, field))


def test_splitting_iterations_into_chunks_does_not_change_the_result(small_zhang) -> None:
    whole = simulate(small_zhang, [0.03], [1, 2], 50, chunk=50)
    pieces = simulate(small_zhang, [0.03], [1, 2], 50, chunk=7)
    np.testing.assert_array_equal(whole.dot, pieces.dot)
    np.testing.assert_array_equal(whole.final_x, pieces.final_x)


def test_a_stepped_run_equals_the_batch_run(small_figure1) -> None:
    batch = simulate(small_figure1, [0.02], [4], 30, start=1.0)
    run = NQMRun(small_figure1, 0.02, seed=4, start=1.0)
    stepped = [run.step(1) for _ in range(10)] + [run.step(20)]
    dot = np.concatenate([d for _, d, _ in stepped])
    np.testing.assert_array_equal(dot, batch.dot[0, 0])
    np.testing.assert_array_equal(run.x, batch.final_x[0, 0])


def test_the_same_seed_draws_the_same_noise_at_every_lr(small_figure1) -> None:
    # With x(0) = 0, the first step is -lr a (0 - sd z): proportional to lr for the same noise z.
    traj = simulate(small_figure1, [0.04, 0.01], [3], 1, start=0.0)
    np.testing.assert_allclose(traj.final_x[0, 0], 4 * traj.final_x[1, 0, :], rtol=1e-13)


def test_unified_momentum_with_s_one_over_one_minus_beta_is_sgd_with_a_larger_step(small_figure1) -> None:
    beta, lr = 0.5, 0.01
    unified = simulate(small_figure1, [lr], [0], 25, optimizer=Momentum(1 / (1 - beta), beta), start=1.0)
    plain = simulate(small_figure1, [lr / (1 - beta)], [0], 25, start=1.0)
    np.testing.assert_allclose(unified.final_x, plain.final_x, rtol=1e-9, atol=1e-12)


def test_first_angle_is_undefined_and_later_ones_lie_in_0_to_180(small_zhang) -> None:
    angles = simulate(small_zhang, [0.06], [0], 20).angles()
    assert np.isnan(angles[..., 0]).all()
    assert np.all((angles[..., 1:] >= 0) & (angles[..., 1:] <= 180))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lrs": [2.5]}, r"lr=.*2\.5.* expected 0 < lr < 2"),
        ({"lrs": [0.0]}, r"lr=.*0\.0.* expected 0 < lr <"),
        ({"lrs": [float("nan")]}, r"lr=.*nan.* expected 0 < lr <"),
        ({"iters": 0}, r"iters=0 is invalid: expected an integer >= 1"),
        ({"start": [1.0, 2.0]}, r"start of shape \(2,\) is invalid"),
        ({"start": "warm"}, r"start='warm' is invalid"),
        ({"seeds": [-3]}, r"seed=-3 is invalid"),
        ({"optimizer": heavy_ball(0.5)}, r"start='stationary' is plain SGD's law"),
    ],
)
def test_bad_input_is_rejected_naming_the_value_and_the_valid_range(kwargs, message) -> None:
    args = {"lrs": [0.1], "seeds": [0], "iters": 5} | kwargs
    with pytest.raises(ValueError, match=message):
        simulate(zhang2019_model(10), **args)


def test_bad_model_values_are_rejected() -> None:
    from autodrop_core.nqm import NoisyQuadratic

    with pytest.raises(ValueError, match=r"curvature holds -1\.0: expected finite values > 0"):
        NoisyQuadratic(np.array([1.0, -1.0]), np.array([1.0, 1.0]))
    with pytest.raises(ValueError, match=r"variance holds nan"):
        NoisyQuadratic(np.array([1.0]), np.array([np.nan]))
    with pytest.raises(ValueError, match=r"beta=1\.0 is invalid: expected 0 <= beta < 1"):
        Momentum(0.0, 1.0)


def test_a_rejected_lr_change_leaves_the_run_untouched(small_figure1) -> None:
    run = NQMRun(small_figure1, 0.01, seed=0)
    run.step(3)
    x = run.x.copy()
    with pytest.raises(ValueError, match=r"lr=.*inf"):
        run.lr = float("inf")
    assert run.lr == 0.01 and run.iteration == 3
    np.testing.assert_array_equal(run.x, x)


def test_progress_bar_goes_to_stderr_and_leaves_stdout_alone(small_zhang, capsys) -> None:
    pytest.importorskip("tqdm")
    simulate(small_zhang, [0.01], [0], 30, progress=True, chunk=10)
    captured = capsys.readouterr()
    assert captured.out == "" and "nqm zhang2019" in captured.err
