"""``autodrop_core.fused``: the DLPack reader on numpy arrays, and the shared pass on raw addresses."""

from __future__ import annotations

import importlib.util
import itertools
import math

import pytest

np = pytest.importorskip("numpy")

from autodrop_core import fused  # noqa: E402

needs_numba = pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="numba not installed")


@needs_numba  # the headers are read by a compiled reader
def test_a_dense_array_is_read_in_place_with_its_count_and_dtype() -> None:
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    buffer = fused.dlpack_buffer(a.__dlpack__())
    assert buffer == fused.Buffer(a.ctypes.data, 12, "float32", True)


@needs_numba  # the headers are read by a compiled reader
def test_a_strided_view_is_reported_as_not_dense_and_an_int_array_as_no_float_dtype() -> None:
    a = np.zeros((4, 6), dtype=np.float64)
    assert not fused.dlpack_buffer(a[:, ::2].__dlpack__()).dense
    view = a[1:]  # offset but dense
    assert fused.dlpack_buffer(view.__dlpack__()) == fused.Buffer(view.ctypes.data, 18, "float64", True)
    assert fused.dlpack_buffer(np.zeros(3, dtype=np.int32).__dlpack__()).dtype is None


@needs_numba  # the headers are read by a compiled reader
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


def _pair_reference(x: np.ndarray, hi: np.ndarray, lo: np.ndarray, c_hi: np.float32, c_lo: np.float32
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The compensated float32 update, in numpy: fma(c_hi, gap, c_lo * gap) formed exactly in float64.

    c_hi * gap is exact in float64 (24 + 24 bits); adding the float32 c_lo * gap and rounding
    to float32 once more gives the fma's single rounding except at ties (none at this seed).
    """
    f32 = np.float32
    gap = (x - hi) - lo
    move = (c_hi.astype(np.float64) * gap + (c_lo * gap).astype(np.float64)).astype(f32)
    s = hi + move
    virtual = s - hi
    e = (hi - (s - virtual)) + (move - virtual)
    u = e + lo
    s2 = s + u
    virtual2 = s2 - s
    return s2, ((s - (s2 - virtual2)) + (u - virtual2)).astype(f32)


@needs_numba
@pytest.mark.parametrize("threads", [1, 3])
def test_the_pass_absorbs_into_a_float32_pair_and_writes_x_where_the_window_starts(threads: int) -> None:
    rng = np.random.default_rng(2)
    sizes = (fused.SPLIT + 5, 3, 0, 9000)
    xs = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    snaps = [(x - 1e-3).astype(np.float32) for x in xs]
    his = [(x + 1e-2 * rng.standard_normal(x.size)).astype(np.float32) for x in xs]
    los = [(np.abs(h) * rng.uniform(-2.0**-25, 2.0**-25, h.size)).astype(np.float32) for h in his]
    out_hi = [np.full_like(x, np.nan) for x in xs]
    out_lo = [np.full_like(x, np.nan) for x in xs]
    copies = [np.empty_like(x) for x in xs]
    rows = [_row(x, s, s, s, c, h, oh, lo, ol)
            for x, s, c, h, oh, lo, ol in zip(xs, snaps, copies, his, out_hi, los, out_lo)]
    weight = 2.0 / 7.0
    c_hi = np.float32(weight)
    c_lo = np.float32(weight - float(c_hi))
    firsts = [False, True, False, False]
    sums = fused.reduce_pass("float32", rows, sizes, threads=threads, copying=True, absorbing=True,
                             firsts=firsts, pair_weight=(float(c_hi), float(c_lo)))
    assert sums == fused.reduce_pass("float32", rows, sizes, threads=1, copying=True, absorbing=True,
                                     firsts=firsts, pair_weight=(float(c_hi), float(c_lo)))
    for x, h, lo, got_hi, got_lo, c, first in zip(xs, his, los, out_hi, out_lo, copies, firsts):
        np.testing.assert_array_equal(c, x)
        want_hi, want_lo = (x, np.zeros_like(x)) if first else _pair_reference(x, h, lo, c_hi, c_lo)
        np.testing.assert_array_equal(got_hi, want_hi)
        np.testing.assert_array_equal(got_lo, want_lo)


@needs_numba
def test_a_pair_average_for_float64_tensors_or_without_its_halves_is_refused_before_any_write() -> None:
    x = np.zeros(8, np.float32)
    wide = np.zeros(8)
    with pytest.raises(ValueError, match=r"pair_weight: .* not float64 \(tensor 1\)"):
        fused.reduce_pass(["float32", "float64"], [_row(x, x, x, x, None, x, x, x, x), _row(wide, wide, wide, wide)
                                                   + (0,) * 5], (8, 8), threads=1, absorbing=True,
                          pair_weight=(0.5, 0.0))
    out = np.full(8, 7.0, np.float32)
    with pytest.raises(ValueError, match="tensor 0 lacks a half of W or W'"):
        fused.reduce_pass("float32", [_row(x, x, x, x, None, x, out, x, None)], (8,), threads=1, absorbing=True,
                          firsts=[False], pair_weight=(0.5, 0.0))
    assert (out == 7.0).all()
    with pytest.raises(ValueError, match="address rows of \\[5\\] columns"):
        fused.reduce_pass("float32", [(0, 0, 0, 0, 0)], (0,), threads=1)


def test_aligned_parts_are_views_of_one_block_each_on_64_bytes() -> None:
    parts = fused.aligned_parts([5, 262_144, 3, 0, 17], "float64")
    assert [p.size for p in parts] == [5, 262_144, 3, 0, 17]
    assert all(p.ctypes.data % 64 == 0 and p.dtype == np.float64 for p in parts)
    bases = {id(p.base) for p in parts}
    assert len(bases) == 1  # one allocation: freed when the last view is
    filled = [p for p in parts if p.size]  # (an empty view may point anywhere in the block)
    assert all(a.ctypes.data + 8 * a.size <= b.ctypes.data for a, b in itertools.pairwise(filled))  # no overlap


@needs_numba
def test_many_capsules_are_read_in_one_call_in_order_and_a_bad_one_is_named() -> None:
    arrays = [np.ones((4, 3, 3), np.float32), np.zeros((4, 6))[:, ::2], np.zeros(3, np.int32),
              np.zeros((2, 3, 4))[1:], np.zeros(())]
    empty = np.zeros((0, 5), np.float32)
    capsules = [a.__dlpack__() for a in [*arrays, empty]]
    names = {"float32": "float32", "float64": "float64"}
    *found, found_empty = fused.dlpack_buffers(capsules)
    assert found == [fused.Buffer(a.ctypes.data, a.size, names.get(a.dtype.name), a.flags.c_contiguous)
                     for a in arrays]
    assert found_empty[:3] == (empty.ctypes.data, 0, "float32")  # (whether numpy's strides read as dense: either)
    assert fused.dlpack_buffers([]) == []
    with pytest.raises(ValueError, match=r"capsule 1: .* is not an unconsumed 'dltensor'"):
        fused.dlpack_buffers([capsules[0], object()])


def _guarded(count: int, dtype: type, skip: int) -> tuple[np.ndarray, np.ndarray]:
    """An output of ``count`` elements starting ``skip`` elements past a 64-byte boundary, inside a guard of NaNs."""
    room = fused.aligned_empty(count + skip + 16, np.dtype(dtype).name)
    room[:] = np.nan
    return room, room[skip:skip + count]


@needs_numba
@pytest.mark.parametrize("skip", range(9))
def test_streamed_outputs_at_any_alignment_hold_exactly_their_values_and_nothing_around_them_changes(
    skip: int,
) -> None:
    rng = np.random.default_rng(skip)
    sizes = (0, 1, 7, 8, 9, 4096 + 3, 3 * 4096)
    xs = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    snaps = [(x + 1e-3 * rng.standard_normal(x.size)).astype(np.float32) for x in xs]
    averages = [rng.standard_normal(n) for n in sizes]
    his = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    los = [(1e-8 * rng.standard_normal(n)).astype(np.float32) for n in sizes]
    copies = [_guarded(n, np.float32, skip) for n in sizes]
    outs = [_guarded(n, np.float64, skip) for n in sizes]
    rows = [_row(x, s, s, s, c[1], w, o[1]) for x, s, c, w, o in zip(xs, snaps, copies, averages, outs)]
    fused.reduce_pass("float32", rows, sizes, threads=2, copying=True, absorbing=True, weight=0.25,
                      firsts=[False] * len(sizes))
    out_hi = [_guarded(n, np.float32, skip) for n in sizes]
    out_lo = [_guarded(n, np.float32, skip) for n in sizes]
    pair_rows = [_row(x, s, s, s, None, hi, oh[1], lo, ol[1])
                 for x, s, hi, lo, oh, ol in zip(xs, snaps, his, los, out_hi, out_lo)]
    c_hi, c_lo = np.float32(0.3), np.float32(1e-9)
    fused.reduce_pass("float32", pair_rows, sizes, threads=2, absorbing=True, firsts=[False] * len(sizes),
                      pair_weight=(float(c_hi), float(c_lo)))
    for i, x in enumerate(xs):
        np.testing.assert_array_equal(copies[i][1], x)
        np.testing.assert_array_equal(outs[i][1], averages[i] + (x.astype(np.float64) - averages[i]) * 0.25)
        want_hi, want_lo = _pair_reference(x, his[i], los[i], c_hi, c_lo)
        np.testing.assert_array_equal(out_hi[i][1], want_hi)
        np.testing.assert_array_equal(out_lo[i][1], want_lo)
        for room, _ in (copies[i], outs[i], out_hi[i], out_lo[i]):
            outside = np.ones(room.size, dtype=bool)
            outside[skip:skip + x.size] = False
            assert np.isnan(room[outside]).all(), f"tensor {i}: a write outside the output"


@needs_numba
def test_the_kernels_with_and_without_streaming_stores_write_the_same_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    sizes = (fused.SPLIT + 11, 4095, 6)
    xs = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    snaps = [(x + 1e-3 * rng.standard_normal(x.size)).astype(np.float32) for x in xs]
    his = [(x + 1e-2 * rng.standard_normal(x.size)).astype(np.float32) for x in xs]
    los = [(1e-9 * rng.standard_normal(x.size)).astype(np.float32) for x in xs]

    def run() -> tuple[list[tuple[float, float]], list[np.ndarray]]:
        outputs = [[np.empty_like(x) for x in xs] for _ in range(3)]
        rows = [_row(x, s, s, s, c, hi, oh, lo, ol) for x, s, hi, lo, c, oh, ol in zip(xs, snaps, his, los, *outputs)]
        sums = fused.reduce_pass("float32", rows, sizes, threads=3, copying=True, absorbing=True,
                                 firsts=[False, True, False], pair_weight=(0.2, 3e-9))
        return sums, [a for group in outputs for a in group]

    streamed = run()
    monkeypatch.setattr(fused, "STREAMING_STORES", False)
    monkeypatch.setattr(fused, "_kernels", fused._build())
    plain = run()
    assert streamed[0] == plain[0]
    for a, b in zip(streamed[1], plain[1], strict=True):
        np.testing.assert_array_equal(a, b)


class _Output:  # any object that takes weak references, as a framework's array does
    pass


def test_the_output_record_returns_an_objects_facts_until_it_dies_and_never_another_objects() -> None:
    record = fused.OutputRecord()
    a, b = _Output(), _Output()
    record.add(a, (1, "float32"))
    assert record.facts(a) == (1, "float32") and a in record
    assert record.facts(b) is None and b not in record and len(record) == 1
    record.add(a, (2, "float32"))  # a later pass's facts replace the earlier ones
    assert record.facts(a) == (2, "float32") and len(record) == 1
    del a  # the weak reference's callback drops the entry
    assert len(record) == 0
    c, d = _Output(), _Output()
    record.add(c, (3, "float64"))
    record._entries[id(d)] = record._entries[id(c)]  # as if d had taken an id whose entry is not its own
    assert record.facts(d) is None and record.facts(c) == (3, "float64")


def test_the_output_record_refuses_none_as_facts_and_keeps_what_it_had() -> None:
    record = fused.OutputRecord()
    a = _Output()
    record.add(a, (1,))
    with pytest.raises(ValueError, match="facts is None"):
        record.add(a, None)
    assert record.facts(a) == (1,)
