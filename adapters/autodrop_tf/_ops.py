"""The tensor work of one epoch end: ``tf.function`` graphs, and an all-or-nothing commit.

:class:`EpochOps` holds the adapter's buffers, per watched variable (issue 15's layout):

* ``snapshot`` S = x̂(t-1), in the parameter's dtype;
* ``step_base`` B = x̂(t-2), in the parameter's dtype, or absent (then s(t-1) = 0);
* ``step_head`` A, present only for the one epoch after an applied average: x(t-1),
  the parameters before the average was written (absent: A is S);
* ``average`` W, float64 in chunks, only while a drop is pending.

The previous step is never stored: s(t-1) = float64(A) - float64(B) is formed element
by element inside the reduction, the same float64 rounding as the stored step of the
old layout, so the reductions are bit-identical to it.

Each epoch end writes the new snapshot x̂(t) into ``step_base``'s variables, and the
two lists then trade roles (:meth:`EpochOps._swap`): the old snapshot, untouched, is the
new x̂(t-2). One write per variable instead of two; a checkpoint saves each list under
its role, so its format does not change.

The graphs behind :meth:`EpochOps.reduce` and :meth:`EpochOps.prepare` read the
variables and buffers and return fresh tensors; the one exception is the numba path's
read graph, which after its reads also writes x(t) into ``step_base``'s variables ahead
of the decision (the new snapshot in every epoch end but one that applies an average),
so that an ordinary epoch end runs one graph instead of two. :meth:`EpochOps.discard`
puts their old values back (kept from the same graph's reads) when the epoch end fails
before its commit. Everything else is written by :meth:`EpochOps.commit` (into the
caller's variables when an average is applied, then into the buffer variables), in
batches, each after a read of what it replaces (a backup); a failure puts back
everything already written, so a failed epoch end leaves every variable as it was.
TensorFlow assigns a tensor to a variable by sharing its buffer, and a read shares it
too, so neither the backup nor the commit copies.

This module decides nothing: the core decides and ``_adapter.py`` calls these steps in
the order the spec gives. It must never reduce in float32, nor derive a step from dot
products of positions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from autodrop_tf import _fused_cpu

__all__ = ["EpochOps", "Plan", "Reads", "cast_rounded"]


def cast_rounded(value: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """float64 -> ``dtype`` rounded once to nearest, as numpy's ``astype`` does.

    TensorFlow casts float64 to float16 through float32, rounding twice; rounding to
    float32 "to odd" first (the last bit set when inexact) makes the second rounding
    exact. Other dtypes are cast directly (bfloat16 goes through float32 in numpy's
    ``ml_dtypes`` as well, so the two agree there as they are).
    """
    if dtype != tf.float16:
        return tf.cast(value, dtype)
    nearest = tf.cast(value, tf.float32)
    widened = tf.cast(nearest, tf.float64)
    bits = tf.bitcast(nearest, tf.int32)
    bits = tf.where(tf.abs(widened) > tf.abs(value), bits - 1, bits)  # truncate toward zero
    bits = tf.where(widened == value, bits, tf.bitwise.bitwise_or(bits, 1))  # inexact: make it odd
    return tf.cast(tf.bitcast(bits, tf.float32), dtype)


#: Elements per chunk of a reduction or of the running average. Working chunk by chunk
#: keeps each float64 temporary small enough to be recycled by the allocator and warm
#: in cache; measured best among 2**14 .. 2**20.
CHUNK = 1 << 18


def chunk_sizes(size: int) -> list[int]:
    """Near-equal chunk lengths, at most :data:`CHUNK` each, that add up to ``size``."""
    count = max(1, -(-size // CHUNK))
    base, extra = divmod(size, count)
    return [base + 1] * extra + [base] * (count - extra)


def _slot(var: Any, dtype: tf.DType, name: str) -> tf.Variable:
    """A buffer variable of any shape on ``var``'s device, empty (absent) to begin with."""
    with tf.device(var.device):
        return tf.Variable(tf.zeros([0], dtype), shape=tf.TensorShape(None), trainable=False, name=name)


def _split(value: tf.Tensor, sizes: Sequence[int]) -> list[tf.Tensor]:
    """``value`` flattened and cut into chunks of ``sizes`` (views: no copy on CPU)."""
    flat = tf.reshape(value, [-1])
    return [flat] if len(sizes) == 1 else tf.split(flat, list(sizes))


def _read(var: Any) -> tf.Tensor:
    """The value of a variable as a tensor (it shares the buffer: no copy)."""
    return tf.convert_to_tensor(var)


def _empty(dtype: tf.DType) -> tf.Tensor:
    return tf.zeros([0], dtype)


# -- seams: every call that can fail goes through one of these (the fault tests wrap them) --------


def _run_graph(stage: str, graph: Callable[..., Any], *args: Any) -> Any:
    """Run one of the pure graphs (``stage`` names it: reduction, absorb, average)."""
    return graph(*args)


def _write_into(writer: Callable[[list[tf.Tensor]], Any], values: list[tf.Tensor]) -> Any:
    """One batch of writes: into the caller's variables (an applied average) or into the buffers."""
    return writer(values)


def _assign(target: Any, value: tf.Tensor) -> None:
    """One write inside a batch (in a graph it runs at tracing time; eagerly, once per write).

    Eagerly, a plain variable is written by its ``AssignVariableOp`` directly: the same
    op ``assign`` runs, without its Python wrapping (a quarter of the time).
    """
    if tf.executing_eagerly() and _plain(target):
        tf.raw_ops.AssignVariableOp(resource=target.handle, value=value)
    else:
        target.assign(value)


def _direct(function: Any, specs: Sequence[tf.TensorSpec]) -> Callable[..., Any]:
    """``function``'s graph for inputs of these specs, called without ``tf.function``'s argument matching.

    A ``tf.function`` call binds and checks every argument against its signatures before
    running the graph: for a hundred tensors that costs three times the graph itself (1.2
    of 1.7 ms, TensorFlow 2.21, one thread). Here the concrete function is traced once and
    the flat tensors go straight in (``ConcreteFunction._call_flat``, the same call that
    ``tf.function`` ends in, there in TensorFlow 2.16 to 2.21); where a TensorFlow lacks
    it, the concrete function is called as documented. The caller passes tensors of the
    specs' dtypes (a wrong one fails in the graph's op, as it would anyway).
    """
    concrete = function.get_concrete_function(list(specs)) if specs else function.get_concrete_function()
    flat_call = getattr(concrete, "_call_flat", None)
    if flat_call is None:
        return concrete  # type: ignore[no-any-return]
    captured = list(concrete.captured_inputs)

    def call(*args: Any) -> Any:
        return flat_call(tf.nest.flatten(args), captured)

    return call


def _plain(var: Any) -> bool:
    """A variable outside any distribution: one ``handle`` that reads and writes all of it."""
    return hasattr(var, "handle") and not isinstance(var, tf.distribute.DistributedValues)


@dataclass
class _Untracked:
    """Holds what a checkpoint must not contain: the caller's variables and the graphs.

    A plain object, so ``tf.Module`` neither tracks nor saves what it holds (the model's
    own variables belong to the model's checkpoint, not to AutoDrop's).
    """

    params: list[Any]
    extras: list[Any]
    sizes: list[list[int]]
    extra_sizes: list[list[int]]
    graphs: dict[str, Callable[..., Any]] = field(default_factory=dict)
    fused_memo: dict[str, bool] = field(default_factory=dict)  # _fused_cpu.eligible's verdict on params
    #: the two lists of snapshot variables have traded roles an odd number of times; the graphs that
    #: capture them are kept per arrangement
    swapped: bool = False


@dataclass
class Layout:
    """Which optional buffers are present (saved with the core state in the adapter's meta)."""

    base: bool = False  #: B = x̂(t-2) is held; False: s(t-1) = 0
    head: bool = False  #: A = x(t-1) is held (the epoch after an applied average)
    explicit: bool = False  #: s(t-1) is an explicit float64 step (a state of the old layout, for one epoch)
    average: bool = False  #: W is held

    def to_dict(self) -> dict[str, bool]:
        return {"base": self.base, "head": self.head, "explicit": self.explicit, "average": self.average}

    @classmethod
    def from_dict(cls, data: Any) -> Layout:
        if not isinstance(data, dict) or set(data) != {"base", "head", "explicit", "average"} or not all(
            isinstance(v, bool) for v in data.values()
        ):
            raise ValueError(f"layout {data!r}: expected booleans base, head, explicit, average")
        layout = cls(**data)
        if layout.explicit and (layout.base or layout.head):
            raise ValueError(f"layout {data!r}: an explicit step excludes base and head")
        return layout


@dataclass
class Reads:
    """What :meth:`EpochOps.reduce` computed and read: the reductions, x(t) and x̂(t-1) (shared buffers)."""

    dot: float
    sq_norm: float
    xs: list[tf.Tensor]
    snaps: list[tf.Tensor]
    #: W' of the parameters (per variable, per chunk), formed in the same pass, and its weight c
    new_average: list[list[tf.Tensor]] | None = None
    absorbed_weight: float | None = None
    #: the values of buffer groups as the reduction read them (``step_base``, ``step_head``,
    #: ``average``: the parameters' chunks); :meth:`EpochOps.commit` backs up from them
    held: dict[str, list[tf.Tensor]] = field(default_factory=dict)
    #: the numba path's read graph has already written x(t) into ``step_base``'s variables (the
    #: next snapshot, in the common case), whose old values are ``held["step_base"]``;
    #: :meth:`EpochOps.commit` keeps it, :meth:`EpochOps.discard` puts the old values back
    speculated: bool = False


@dataclass
class Plan:
    """The tensors one epoch end produces, before any is written (see :meth:`EpochOps.prepare`)."""

    layout: Layout
    #: per group of buffers (``snapshot``, ``step_base``, ``step_head``, ``average``, ``explicit_step``),
    #: the new value of each of its variables (absent buffers get an empty tensor)
    groups: list[tuple[str, list[tf.Tensor]]]
    #: the applied average, per caller variable (parameters, then extras); empty: nothing written
    written: list[tf.Tensor]
    #: what some groups' variables hold now, read by the reduction (the commit's backup of
    #: them: a second read would cost one op per variable); the rest are read at the commit
    current: dict[str, list[tf.Tensor]] = field(default_factory=dict)
    #: after the writes, ``snapshot`` and ``step_base`` trade their variables (the written
    #: ``step_base`` holds the new x̂(t), the old snapshot becomes x̂(t-1)'s base)
    swap: bool = False
    #: ``step_base``'s variables already hold their new value (:attr:`Reads.speculated`): the
    #: commit's undo puts back ``current["step_base"]`` into them as well
    speculated: bool = False


class EpochOps(tf.Module):
    """Buffers and graphs for AutoDrop's epoch end over one list of variables.

    Args:
        params: the trainable variables x (plain ``tf.Variable`` or distributed ones).
        extras: float variables averaged with the parameters but left out of the
            reductions (BatchNorm moving statistics).
        averaging: keep a running average (not needed when ``drop_delay == 1``, where
            the average is x(t) itself).
    """

    def __init__(self, params: Sequence[Any], extras: Sequence[Any], averaging: bool) -> None:
        super().__init__(name="autodrop_buffers")
        params, extras = list(params), list(extras)
        sizes = [chunk_sizes(p.shape.num_elements()) for p in params]
        extra_sizes = [chunk_sizes(e.shape.num_elements()) for e in extras]
        self._held = _Untracked(params, extras, sizes, extra_sizes)
        self.snapshot = [_slot(p, p.dtype, f"snapshot_{i}") for i, p in enumerate(params)]
        self.step_base = [_slot(p, p.dtype, f"step_base_{i}") for i, p in enumerate(params)]
        self.step_head = [_slot(p, p.dtype, f"step_head_{i}") for i, p in enumerate(params)]
        # the float64 running average, in chunks (the names and nesting of the old layout's, so an
        # old checkpoint's average restores into them)
        self.average = (
            [[_slot(p, tf.float64, f"average_{i}_{j}") for j in range(len(s))] for i, (p, s) in
             enumerate(zip(params, sizes, strict=True))] if averaging else []
        )
        self.extra_average = (
            [[_slot(e, tf.float64, f"extra_average_{i}_{j}") for j in range(len(s))] for i, (e, s) in
             enumerate(zip(extras, extra_sizes, strict=True))] if averaging else []
        )
        #: an explicit float64 s(t-1) from a state of the old layout, chunked (one epoch only)
        self.explicit_step = [[_slot(p, tf.float64, f"explicit_step_{i}_{j}") for j in range(len(s))]
                              for i, (p, s) in enumerate(zip(params, sizes, strict=True))]
        self.layout = Layout()
        graphs = self._held.graphs
        graphs["absorb_first"] = tf.function(self._make_absorb(True))
        graphs["absorb"] = tf.function(self._make_absorb(False))
        graphs["absorb_extras"] = tf.function(self._make_absorb(False, extras_only=True))
        graphs["round"] = tf.function(self._round)

    # -- graph bodies (pure: tensors in, tensors out) ---------------------------------

    def _make_reduce(self, kind: str) -> Any:
        sizes = self._held.sizes
        snapshot, step_base = list(self.snapshot), list(self.step_base)  # as arranged now (see _cached)

        def reduce() -> tuple[tf.Tensor, tf.Tensor, list[tf.Tensor], list[tf.Tensor]]:
            dot = tf.constant(0.0, tf.float64)
            sq_norm = tf.constant(0.0, tf.float64)
            xs, snaps = [], []
            for i, (x_var, s_var) in enumerate(zip(self._held.params, snapshot, strict=True)):
                x, snap = tf.convert_to_tensor(x_var), tf.convert_to_tensor(s_var)
                xs.append(x)
                snaps.append(snap)
                x_parts, s_parts = _split(x, sizes[i]), _split(snap, sizes[i])
                if kind == "base":
                    h_parts, b_parts = s_parts, _split(tf.convert_to_tensor(step_base[i]), sizes[i])
                elif kind == "head":
                    h_parts = _split(tf.convert_to_tensor(self.step_head[i]), sizes[i])
                    b_parts = _split(tf.convert_to_tensor(step_base[i]), sizes[i])
                for j, (xc, sc) in enumerate(zip(x_parts, s_parts, strict=True)):
                    # one chunk at a time (its float64 temporaries start after the previous chunk's
                    # sums): the executor would otherwise run ahead and hold many of them at once
                    with tf.control_dependencies([dot, sq_norm]):
                        s64 = tf.cast(sc, tf.float64)
                        step = tf.cast(xc, tf.float64) - s64
                        # fused float64 reductions, no product temporaries: a dot and a sum of squares
                        if kind == "explicit":
                            dot += tf.tensordot(step, tf.convert_to_tensor(self.explicit_step[i][j]), 1)
                        elif kind != "zero":
                            head = s64 if kind == "base" else tf.cast(h_parts[j], tf.float64)
                            prev = head - tf.cast(b_parts[j], tf.float64)  # s(t-1), formed on the fly
                            dot += tf.tensordot(step, prev, 1)
                        sq_norm += 2.0 * tf.nn.l2_loss(step)
            return dot, sq_norm, xs, snaps

        return reduce

    def _make_absorb(self, first: bool, extras_only: bool = False) -> Any:
        held = self._held
        sizes = held.extra_sizes if extras_only else held.sizes + held.extra_sizes

        def absorb(weight: tf.Tensor) -> list[list[tf.Tensor]]:
            out = []
            variables = held.extras if extras_only else held.params + held.extras
            averages = self.extra_average if extras_only else self.average + self.extra_average
            last: list[tf.Tensor] = []
            for i, var in enumerate(variables):
                parts = _split(tf.convert_to_tensor(var), sizes[i])
                olds = [None] * len(parts) if first else [tf.convert_to_tensor(c) for c in averages[i]]
                chunks = []
                for xc, w in zip(parts, olds, strict=True):
                    with tf.control_dependencies(last):  # one chunk at a time, as in reduce
                        new = tf.cast(xc, tf.float64) if w is None else w + weight * (tf.cast(xc, tf.float64) - w)
                    chunks.append(new)
                    last = [new]
                out.append(chunks)
            return out

        return absorb

    def _round(self, averages: list[list[tf.Tensor]]) -> list[tf.Tensor]:
        variables = self._held.params + self._held.extras
        out = []
        for var, chunks in zip(variables, averages, strict=True):
            flat = tf.concat([cast_rounded(c, var.dtype) for c in chunks], axis=0) if len(chunks) > 1 else (
                cast_rounded(chunks[0], var.dtype))
            out.append(tf.reshape(flat, var.shape))
        return out

    def _writer(self, key: tuple[str, ...]) -> tuple[Callable[..., Any], Callable[..., Any]]:
        """Two graphs over the variables of the groups in ``key``: one reads them all (the backup:
        references, no copy), one writes new values into them."""
        suffix = "|swapped" if self._held.swapped else ""  # the targets as arranged now
        name = "write:" + ",".join(key) + suffix
        read_name = "read:" + ",".join(key) + suffix
        graphs = self._held.graphs
        if name not in graphs:
            targets = self._targets(key)

            def read() -> list[tf.Tensor]:
                return [tf.convert_to_tensor(t) for t in targets]

            def write(values: list[tf.Tensor]) -> tf.Tensor:
                for target, value in zip(targets, values, strict=True):
                    _assign(target, value)
                return tf.constant(True)

            if not tf.distribute.has_strategy() and all(_plain(t) for t in targets):
                # plain variables: reads (the backup, where the reduction did not read them) by one
                # eager op each; the writes by one graph called directly (a third of the eager
                # ops' time), or, where functions run eagerly, by one eager op each
                def read_eagerly() -> list[tf.Tensor]:
                    return [tf.raw_ops.ReadVariableOp(resource=t.handle, dtype=t.dtype) for t in targets]

                graphs[read_name] = read_eagerly
                if tf.config.functions_run_eagerly():
                    graphs[name] = write
                else:
                    graphs[name] = _direct(tf.function(write), [tf.TensorSpec(None, t.dtype) for t in targets])
            else:
                graphs[read_name] = tf.function(read)
                graphs[name] = tf.function(write)
        return graphs[read_name], graphs[name]

    def _cached(self, name: str, make: Callable[[], Callable[..., Any]]) -> Callable[..., Any]:
        """The graph ``name`` over the buffer variables as arranged now (``make`` builds it at first use).

        A graph captures the variables it reads or writes; after ``snapshot`` and ``step_base``
        trade their variables (every epoch end), the other arrangement's graph is the one to call.
        """
        key = name + ("|swapped" if self._held.swapped else "")
        graphs = self._held.graphs
        if key not in graphs:
            graphs[key] = make()
        return graphs[key]

    def _swap(self) -> None:
        """``snapshot`` and ``step_base`` trade their variables (a checkpoint saves each list under its role)."""
        self.snapshot, self.step_base = self.step_base, self.snapshot
        self._held.swapped = not self._held.swapped

    def _targets(self, key: Sequence[str]) -> list[Any]:
        out: list[Any] = []
        for group in key:
            if group == "variables":
                out += self._held.params + self._held.extras
            elif group in ("average", "explicit_step"):
                chunks = self.average + self.extra_average if group == "average" else self.explicit_step
                out += [c for g in chunks for c in g]
            else:
                out += getattr(self, group)
        return out

    # -- host-side entry points -------------------------------------------------------

    @property
    def params(self) -> list[Any]:
        """The measured variables (not tracked: they belong to the caller's checkpoint)."""
        return self._held.params

    def _prev_kind(self) -> str:
        layout = self.layout
        if layout.explicit:
            return "explicit"
        if layout.head:
            return "head"
        return "base" if layout.base else "zero"

    def reduce(self, absorb_weight: float | None = None) -> Reads:
        """dot and sq_norm for this epoch (float64, in a fixed order).

        The TensorFlow path writes nothing; the numba path writes x(t) ahead into
        ``step_base``'s variables (:meth:`_reduce_fused`; the caller calls :meth:`discard`
        if the epoch end fails before :meth:`commit`).

        On CPU, for large plain float32/float64 variables with numba installed, one numba
        pass over the buffers (``_fused_cpu.py``); else the chunked TensorFlow graph.

        Args:
            absorb_weight: the c this epoch will absorb x(t) with, when it is known before
                the decision (a drop pending, ``Controller.pending_average_weight``): the
                numba pass then also forms the parameters' W' (:meth:`prepare` uses it when
                the decision's weight is the same).
        """
        kind = self._prev_kind()
        if kind in ("base", "head") and _fused_cpu.eligible(self._held.params, self._held.fused_memo):
            absorbing = absorb_weight is not None and self.layout.average and bool(self.average)
            weight = absorb_weight if absorbing else None
            return _run_graph("reduction", self._reduce_fused, kind, weight)  # type: ignore[no-any-return]
        graph = self._cached(f"reduce_{kind}", lambda: tf.function(self._make_reduce(kind)))
        dot, sq_norm, xs, snaps = _run_graph("reduction", graph)
        return Reads(float(dot), float(sq_norm), list(xs), list(snaps))

    def _reduce_fused(self, kind: str, weight: float | None) -> Reads:
        """The numba pass over the buffers, after one graph that reads them all and writes x(t) ahead.

        The graph reads x(t), x̂(t-1), x̂(t-2) (and A, W), and then writes each x(t) into
        ``step_base``'s variable: the next snapshot in every epoch end but one that applies
        an average (which writes that variable again), so that the commit usually writes
        nothing but the meta. ``step_base``'s old values are the graph's reads, kept in the
        returned :class:`Reads`; :meth:`discard` puts them back if the epoch end fails
        before its commit. Where functions run eagerly, the writes are single eager ops
        after the reads, each put back if a later one fails.
        """
        eager = tf.config.functions_run_eagerly()
        speculating = not eager
        with_average = weight is not None

        def make() -> Callable[..., Any]:
            held, snapshot, base, head = self._held, list(self.snapshot), list(self.step_base), self.step_head
            average = self.average

            def read() -> tuple[Any, ...]:
                xs = [_read(v) for v in held.params]
                snaps = [_read(v) for v in snapshot]
                heads = [_read(v) for v in head] if kind == "head" else []  # "base": the snapshots
                averages = [[_read(c) for c in group] for group in average] if with_average else []
                bases = [_read(v) for v in base]
                if speculating:  # after every read (each variable's read precedes its write in the graph)
                    for target, x in zip(base, xs, strict=True):
                        _assign(target, x)
                return xs, snaps, heads, bases, averages

            return read if eager else _direct(tf.function(read), [])

        key = f"read_{kind}" + ("_average" if with_average else "") + ("_eager" if eager else "")
        xs, snaps, heads, bases, averages = self._cached(key, make)()
        if eager:  # the same writes as single ops, each put back if a later one fails
            done: list[tuple[Any, tf.Tensor]] = []
            try:
                for target, x, old in zip(self.step_base, xs, bases, strict=True):
                    _assign(target, x)
                    done.append((target, old))
            except BaseException:
                for target, old in reversed(done):
                    target.assign(old)
                raise
        as_read = {"step_base": list(bases)}
        reads = Reads(0.0, 0.0, list(xs), list(snaps), None, weight, as_read, speculated=True)
        try:
            if kind == "base":
                heads = snaps  # the same list: the pass reads those buffers once
            absorb = (averages, weight) if weight is not None else None
            reads.dot, reads.sq_norm, reads.new_average = _fused_cpu.reduce_buffers(
                xs, snaps, heads, bases, self._held.sizes, absorb)
        except BaseException:
            self.discard(reads)
            raise
        if kind == "head":
            as_read["step_head"] = list(heads)
        if weight is not None and not self.extra_average:
            as_read["average"] = [c for group in averages for c in group]
        return reads

    def discard(self, reads: Reads) -> None:
        """Undo what :meth:`reduce` wrote ahead (x(t) into ``step_base``) when the epoch end fails before its commit.

        Nothing is undone for a reduction that wrote nothing; calling it twice is harmless.
        """
        if reads.speculated:
            for target, old in zip(self.step_base, reads.held["step_base"], strict=True):
                target.assign(old)

    def prepare(self, reads: Reads, weight: float | None, apply: bool) -> Plan:
        """The new buffers (and the values an applied average writes), as fresh tensors; writes nothing.

        Args:
            reads: what :meth:`reduce` read (x(t) shares the variables' buffers: TensorFlow
                copies on their next write).
            weight: the decision's ``average_weight`` (None: x(t) is not absorbed).
            apply: the decision applies the average.
        """
        averaging = bool(self.average) or bool(self.extra_average)
        current, old_snaps = reads.xs, reads.snaps
        new_average: list[list[tf.Tensor]] | None = None
        if weight is not None and not (apply and weight == 1.0):
            if reads.new_average is not None and reads.absorbed_weight == weight:
                new_average = list(reads.new_average)  # formed in the reduction's pass
                if self._held.extras:  # the extras are not in the reduction: absorbed here
                    extras = _run_graph("absorb", self._held.graphs["absorb_extras"], tf.constant(weight, tf.float64))
                    new_average += list(extras)
            else:
                graph = self._held.graphs["absorb_first" if weight == 1.0 else "absorb"]
                new_average = _run_graph("absorb", graph, tf.constant(weight, tf.float64))
        written: list[tf.Tensor] = []
        if apply and weight != 1.0:
            assert new_average is not None
            written = list(_run_graph("average", self._held.graphs["round"], new_average))
        n = len(current)
        groups: list[tuple[str, list[tf.Tensor]]] = []
        # The new x̂(t) goes into ``step_base``'s variables and the two lists then trade roles
        # (Plan.swap): the old snapshot, untouched, is the new base. One write per variable.
        if written:  # the epoch after an applied average: S = the written average, A = x(t), B = x̂(t-1)
            groups += [("step_base", written[:n]), ("step_head", current)]
        else:
            if not reads.speculated:  # (else the reduction has written x(t) there already)
                groups.append(("step_base", current))
            if self.layout.head:
                groups.append(("step_head", [_empty(a.dtype) for a in self.step_head]))
        if self.layout.explicit:
            groups.append(("explicit_step", [_empty(tf.float64) for g in self.explicit_step for _ in g]))
        keep_average = new_average is not None and not apply
        if averaging and (keep_average or self.layout.average):
            chunks = [c for group in self.average + self.extra_average for c in group]
            values = [v for group in new_average for v in group] if keep_average and new_average is not None else [
                _empty(tf.float64) for _ in chunks]
            groups.append(("average", values))
        layout = Layout(base=True, head=bool(written), explicit=False, average=keep_average and averaging)
        return Plan(layout=layout, groups=groups, written=written, current={"snapshot": old_snaps, **reads.held},
                    swap=True, speculated=reads.speculated)

    def commit(self, plan: Plan) -> Callable[[], None]:
        """Write ``plan`` into the caller's variables (an applied average) and then the buffers, all or nothing.

        Each write returns the values it replaced (references: no copy); if a later write
        fails, the ones already written get their old values back before the error
        propagates (and so do ``step_base``'s variables where the reduction wrote them
        ahead, :attr:`Plan.speculated`). Then ``snapshot`` and ``step_base`` trade their
        variables where the plan says so. Returns an undo function that puts everything
        back (for a failure after the commit, e.g. in the meta write).
        """
        done: list[tuple[list[Any], list[tf.Tensor]]] = []
        if plan.speculated:
            done.append((list(self.step_base), list(plan.current["step_base"])))
        old_layout = self.layout
        swapped = [False]

        def undo() -> None:
            if swapped[0]:
                self._swap()
                swapped[0] = False
            for targets, olds in reversed(done):
                for target, old in zip(targets, olds, strict=True):
                    target.assign(old)
            self.layout = old_layout

        batches: list[tuple[tuple[str, ...], list[tf.Tensor]]] = []
        if plan.written:
            batches.append((("variables",), plan.written))
        key = tuple(name for name, _ in plan.groups)
        if key:  # (none where the reduction wrote the new snapshot ahead and nothing else changes)
            batches.append((key, [v for _, values in plan.groups for v in values]))
        try:
            for key, values in batches:
                read, write = self._writer(key)
                # the backup first: a write that fails half way is put back as a whole
                done.append((self._targets(key), self._backup(key, read, plan.current)))
                _write_into(write, values)
        except BaseException:
            undo()
            raise
        if plan.swap:
            self._swap()
            swapped[0] = True
        self.layout = plan.layout
        return undo

    def _backup(self, key: tuple[str, ...], read: Callable[[], Any], current: dict[str, list[tf.Tensor]]
                ) -> list[tf.Tensor]:
        """The values the variables of ``key`` hold now: ``current``'s where it has them all, else read."""
        values: list[tf.Tensor] = []
        for group in key:
            known = current.get(group)
            if known is None or len(known) != len(self._targets((group,))):
                return list(read())
            values += known
        return values

    def restart(self) -> None:
        """x̂ = current variables, s = 0, no average (a fresh start)."""
        for s, p in zip(self.snapshot, self._held.params, strict=True):
            s.assign(_read(p))
        for var in self.step_base + self.step_head:
            var.assign(_empty(var.dtype))
        for chunks in self.average + self.extra_average + self.explicit_step:
            for c in chunks:
                c.assign(_empty(tf.float64))
        self.layout = Layout()

    def check(self, layout: Layout, pending: bool) -> None:
        """Refuse a restored layout that does not fit the restored buffers (ValueError naming the first)."""
        if layout.average != (pending and bool(self.average)):
            raise ValueError(f"layout says average={layout.average} but the core has pending={pending}")
        params, sizes = self._held.params, self._held.sizes
        for kind, present in (("snapshot", True), ("step_base", layout.base), ("step_head", layout.head)):
            for i, (p, var) in enumerate(zip(params, getattr(self, kind), strict=True)):
                want = tuple(p.shape) if present else (0,)
                got = tuple(var.numpy().shape)
                if got != want:
                    raise ValueError(f"{kind}[{i}] (of {p.name}) has shape {got}, expected {want}")
        groups = [("average", self.average, sizes + self._held.extra_sizes, layout.average),
                  ("explicit_step", self.explicit_step, sizes, layout.explicit)]
        for kind, buffers, lengths, present in groups:
            chunks = buffers if kind == "explicit_step" else self.average + self.extra_average
            for i, (group, n) in enumerate(zip(chunks, lengths, strict=False)):
                for j, (c, size) in enumerate(zip(group, n, strict=True)):
                    got = c.shape.num_elements() if c.shape.rank is not None else int(tf.size(c))
                    if got != (size if present else 0):
                        raise ValueError(f"{kind}[{i}][{j}] holds {got} elements, expected {size if present else 0}")

    # -- state export and import ------------------------------------------------------

    def _variables_of(self, kind: str) -> tuple[list[Any], list[Any]]:
        if kind in ("snapshot", "step_base", "step_head"):
            return self._held.params, getattr(self, kind)
        if kind == "average":
            return self._held.params, self.average
        if kind == "extra_average":
            return self._held.extras, self.extra_average
        raise KeyError(kind)

    def present(self, kind: str) -> bool:
        """Whether the buffers of ``kind`` hold a value now."""
        layout = self.layout
        return {"snapshot": True, "step_base": layout.base, "step_head": layout.head,
                "average": layout.average, "extra_average": layout.average}[kind]

    def export(self, kind: str) -> list[np.ndarray] | None:
        """Copies of one part of the state, one array per variable in its shape (None: absent)."""
        if not self.present(kind):
            return None
        variables, buffers = self._variables_of(kind)
        out = []
        for v, buf in zip(variables, buffers, strict=True):
            parts = [c.numpy() for c in buf] if isinstance(buf, list) else [buf.numpy()]
            out.append(np.concatenate([np.reshape(p, -1) for p in parts]).reshape(tuple(v.shape)))
        return out

    def shapes(self, kind: str) -> list[tuple[int, ...]]:
        """The array shapes :meth:`load` expects for ``kind`` (none without averaging buffers)."""
        variables, buffers = self._variables_of(kind)
        return [tuple(v.shape) for v in variables] if buffers else []

    def plan_load(self, arrays: dict[str, Sequence[np.ndarray] | None], explicit: Sequence[np.ndarray] | None) -> Plan:
        """A plan that puts checked arrays into the buffers (``explicit``: an old layout's float64 step)."""

        def put(var: tf.Variable, array: Any, dtype: tf.DType, shape: Sequence[int]) -> tf.Tensor:
            with tf.device(var.device):
                return tf.reshape(tf.constant(np.asarray(array, dtype=dtype.as_numpy_dtype)), shape)

        def chunked(buffers: list[list[tf.Variable]], sizes: list[list[int]], given: Sequence[Any] | None) -> list[
                tf.Tensor]:
            out = []
            for k, (chunks, lengths) in enumerate(zip(buffers, sizes, strict=False)):
                flat = None if given is None else np.asarray(given[k], np.float64).reshape(-1)
                start = 0
                for c, n in zip(chunks, lengths, strict=True):
                    if flat is None:
                        out.append(put(c, np.zeros(0), tf.float64, [0]))
                    else:
                        out.append(put(c, flat[start : start + n], tf.float64, [n]))
                    start += n
            return out

        groups: list[tuple[str, list[tf.Tensor]]] = []
        for kind in ("snapshot", "step_base", "step_head"):
            given = arrays.get(kind)
            values = []
            for i, (p, var) in enumerate(zip(self._held.params, getattr(self, kind), strict=True)):
                values.append(put(var, np.zeros(0), p.dtype, [0]) if given is None else
                              put(var, given[i], p.dtype, tuple(p.shape)))
            groups.append((kind, values))
        groups.append(("average", chunked(self.average, self._held.sizes, arrays.get("average")) + chunked(
            self.extra_average, self._held.extra_sizes, arrays.get("extra_average"))))
        groups.append(("explicit_step", chunked(self.explicit_step, self._held.sizes, explicit)))
        layout = Layout(base=arrays.get("step_base") is not None, head=arrays.get("step_head") is not None,
                        explicit=explicit is not None,
                        average=arrays.get("average") is not None and bool(self.average))
        return Plan(layout=layout, groups=groups, written=[])

    # -- states of the old layout (explicit float64 step, two halves) -----------------

    def attach_old_layout(self) -> None:
        """Add the old layout's buffers under their old names, so that a ``tf.train.Checkpoint``
        restore that already ran fills them (TensorFlow keeps unmatched values for later)."""
        def halves(dtype_of: Callable[[Any], tf.DType], name: str) -> list[list[list[tf.Variable]]]:
            return [[[_slot(p, dtype_of(p), f"{name}{h}_{i}_{j}") for j in range(len(s))]
                     for i, (p, s) in enumerate(zip(self._held.params, self._held.sizes, strict=True))]
                    for h in (0, 1)]

        self.snapshots = halves(lambda p: p.dtype, "old_snapshot")
        self.steps = halves(lambda p: tf.float64, "old_step")

    def adopt_old_layout(self, active: int, pending: bool) -> None:
        """Move an old-layout state (filled by :meth:`attach_old_layout`) into the new buffers."""
        old_snaps, old_steps = self.snapshots[active], self.steps[active]
        arrays: dict[str, Sequence[np.ndarray] | None] = {
            "snapshot": [np.concatenate([c.numpy().reshape(-1) for c in chunks]).reshape(tuple(p.shape))
                         for p, chunks in zip(self._held.params, old_snaps, strict=True)],
        }
        explicit = [np.concatenate([c.numpy().reshape(-1) for c in chunks]) for chunks in old_steps]
        if pending and self.average:
            arrays["average"] = [np.concatenate([c.numpy().reshape(-1) for c in chunks]) for chunks in self.average]
            arrays["extra_average"] = [np.concatenate([c.numpy().reshape(-1) for c in chunks])
                                       for chunks in self.extra_average]
        plan = self.plan_load(arrays, explicit)
        self.commit(plan)
        del self.snapshots
        del self.steps
