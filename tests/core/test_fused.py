"""``autodrop_core.fused``: the DLPack reader on numpy arrays, and the shared pass on raw addresses."""

from __future__ import annotations

import importlib.util
import math

import pytest

np = pytest.importorskip("numpy")

from autodrop_core import fused  # noqa: E402

needs_numba = pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="numba not installed")


def test_a_dense_array_is_read_in_place_with_its_count_and_dtype() -> None:
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    buffer = fused.dlpack_buffer(a.__dlpack__())
    assert buffer == fused.Buffer(a.ctypes.data, 12, "float32", True)


def test_a_strided_view_is_reported_as_not_dense_and_an_int_array_as_no_float_dtype() -> None:
    a = np.zeros((4, 6), dtype=np.float64)
    assert not fused.dlpack_buffer(a[:, ::2].__dlpack__()).dense
    view = a[1:]  # offset but dense
    assert fused.dlpack_buffer(view.__dlpack__()) == fused.Buffer(view.ctypes.data, 18, "float64", True)
    assert fused.dlpack_buffer(np.zeros(3, dtype=np.int32).__dlpack__()).dtype is None


def test_a_consumed_or_foreign_capsule_is_refused_naming_it() -> None:
    capsule = np.zeros(3).__dlpack__()
    np.from_dlpack(type("Once", (), {"__dlpack__": lambda self, **kw: capsule,
                                     "__dlpack_device__": lambda self: (1, 0)})())
    with pytest.raises(ValueError, match="not an unconsumed 'dltensor' DLPack capsule"):
        fused.dlpack_buffer(capsule)
    with pytest.raises(ValueError, match="not an unconsumed"):
        fused.dlpack_buffer(object())


@pytest.mark.parametrize("count", [1, 4095, 4096, 64 * 1024 + 3])
def test_aligned_empty_starts_on_64_bytes(count: int) -> None:
    a = fused.aligned_empty(count)
    assert a.shape == (count,) and a.dtype == np.float64 and a.ctypes.data % 64 == 0


def _row(*arrays: object) -> tuple[int, ...]:
    return tuple(0 if a is None else a.ctypes.data for a in arrays)  # type: ignore[attr-defined]


@needs_numba
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_the_pass_sums_exactly_copies_and_absorbs_and_its_bits_do_not_depend_on_threads(threads: int) -> None:
    rng = np.random.default_rng(0)
    sizes = (3 * fused.SPLIT + 17, 5, 0, 4096)
    xs = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    snaps = [(x + 1e-3 * rng.standard_normal(x.size)).astype(np.float32) for x in xs]
    bases = [(x + 1e-3 * rng.standard_normal(x.size)).astype(np.float32) for x in xs]
    averages = [rng.standard_normal(x.size) for x in xs]
    copies = [np.empty_like(x) for x in xs]
    outs = [np.empty(x.size) for x in xs]
    rows = [_row(x, s, s, b, c, w, o) for x, s, b, c, w, o in zip(xs, snaps, bases, copies, averages, outs)]
    sums = fused.reduce_pass("float32", rows, sizes, threads=threads, copying=True, absorbing=True, weight=0.25,
                             firsts=[False, True, False, False])
    one_thread = fused.reduce_pass("float32", rows, sizes, threads=1, copying=True, absorbing=True, weight=0.25,
                                   firsts=[False, True, False, False])
    assert sums == one_thread
    for x, s, b, c, w, o, (dot, sq), first in zip(xs, snaps, bases, copies, averages, outs, sums,
                                                  [False, True, False, False]):
        step = x.astype(np.float64) - s
        prev = s.astype(np.float64) - b
        assert dot == pytest.approx(math.fsum((step * prev).tolist()), rel=1e-13, abs=1e-300)
        assert sq == pytest.approx(math.fsum((step * step).tolist()), rel=1e-13, abs=1e-300)
        np.testing.assert_array_equal(c, x)
        expected = x.astype(np.float64) if first else w + (x.astype(np.float64) - w) * 0.25
        np.testing.assert_array_equal(o, expected)


@needs_numba
def test_a_dtype_the_kernels_do_not_take_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="dtype 'float16'"):
        fused.reduce_pass("float16", [], (), threads=1)


@needs_numba
def test_one_call_takes_tensors_of_both_dtypes_in_order_and_names_a_bad_one() -> None:
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal(n).astype(d) for n, d in [(5000, np.float64), (7, np.float32), (4097, np.float64)]]
    snaps = [(x + 1e-3 * rng.standard_normal(x.size)).astype(x.dtype) for x in xs]
    rows = [_row(x, s, s, s, None, None, None) for x, s in zip(xs, snaps)]
    mixed = fused.reduce_pass([str(x.dtype) for x in xs], rows, tuple(x.size for x in xs), threads=2)
    alone = [fused.reduce_pass(str(x.dtype), [r], (x.size,), threads=2)[0] for x, r in zip(xs, rows)]
    assert mixed == alone
    with pytest.raises(ValueError, match="dtype 'int8'"):
        fused.reduce_pass(["float32", "int8", "float64"], rows, tuple(x.size for x in xs), threads=1)
