"""A measured design alternative, not the library's code: the epoch end with its state in a few flat buffers.

Today the JAX adapter keeps one array per parameter tensor for every role of its state
(x̂(t-1), x̂(t-2)), so an epoch end outside a window reads 186 addresses, waits on 186
arrays and allocates and adopts 62 fresh ones; TensorFlow's reads 186 variables and
assigns 124. On two threads that costs more than the 0.3 times the bound that 1.3x
leaves (docs/memory.md, "What the framework calls cost"). This benchmark builds the
alternative just far enough to time it: each role held in a few flat float32 buffers
(JAX arrays, or TensorFlow variables) of at most ``--limit`` elements (whole tensors,
each at a 64-byte aligned offset), read and written by the same numba pass
(``autodrop_core.fused.reduce_pass``), with the core's decision (``Controller``; in
TensorFlow also the reads, exports and writes in one graph each and the checkpointed
meta), so that an epoch end makes per-tensor calls only for x(t). It leaves out what
the adapters also do and this sketch does not (the checkpointable state, the error
names, the other paths, sharded or distributed parameters, windows), which the
adapters' figures count. It must never be imported by the library.

Before timing, the sketch's two sums are checked: in JAX to be the same bits as the
adapter's (``autodrop_jax.step_reductions``) on the same parameters and state, in
TensorFlow to match float64 numpy's within 1e-9; it stops with an error otherwise.
Then, in one process, epoch ends of the adapter (``autodrop_jax.update``,
``autodrop_tf.AutoDrop.end_epoch``) and of the sketch alternate, each after an untimed
training step and the shared probe (cold caches), outside a window; it prints the
median call, the strict ratio (over the bound at the run's fastest probe) and the
paired one (each call over the bound at the probe right after it), 16 bytes per
parameter.

Run: ``python benchmarks/bench_flat_state.py [--frameworks jax tensorflow] [--threads 1
2] [--repeats 21] [--limit 2097152]``; each framework and thread count in its own
process, pinned to that many cores before the framework starts. Nothing is asserted
about the times.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _children import pin_to_cores, run_children  # (next to this file; imports only the standard library)

HERE = Path(__file__).resolve().parent


def _layout(sizes: list[int], limit: int) -> tuple[list[int], list[tuple[int, int]]]:
    """Whole tensors packed in order into buffers of at most ``limit`` elements (a larger tensor alone).

    Returns the buffers' lengths and, per tensor, (buffer, offset in elements); every
    offset is a multiple of 16 float32 elements (64 bytes).
    """
    lengths: list[int] = []
    where: list[tuple[int, int]] = []
    fill = 0
    for count in sizes:
        padded = -(-count // 16) * 16
        if fill and fill + padded > limit:
            lengths.append(fill)
            fill = 0
        where.append((len(lengths), fill))
        fill += padded
    lengths.append(fill)
    return lengths, where


def child_jax(threads: int, repeats: int, limit: int) -> None:
    pin_to_cores(threads)  # before JAX sizes its thread pool
    sys.path.insert(0, str(HERE))
    import autodrop_jax
    import jax
    import jax.numpy as jnp
    import numpy as np
    from autodrop_jax import _fused_cpu
    from bench_jax_step import resnet18_shapes

    from autodrop_core import AutoDropConfig, Controller, fused

    shapes = resnet18_shapes()
    sizes = [math.prod(s) for s in shapes]
    n = len(sizes)
    lengths, where = _layout(sizes, limit)
    f32 = np.dtype(np.float32)
    rng = np.random.default_rng(0)
    step = jax.jit(lambda p, d: [x + u for x, u in zip(p, d, strict=True)])
    settings: dict[str, Any] = {"drop_delay": 1000, "threshold": 1e-12, "max_threshold": 1e-12}  # never a window

    def fresh() -> list[Any]:
        return [jnp.asarray(rng.standard_normal(s), jnp.float32) for s in shapes]

    def allocate() -> tuple[list[Any], list[int]]:
        pairs = [fused.aligned_empty_at(length, "float32") for length in lengths]
        return [a for a, _ in pairs], [at for _, at in pairs]

    like = [jnp.zeros(length, jnp.float32) for length in lengths]

    def to_flat(leaves: list[Any]) -> list[Any]:
        arrays, _ = allocate()
        for i, leaf in enumerate(leaves):
            b, offset = where[i]
            arrays[b][offset:offset + sizes[i]] = np.asarray(leaf).ravel()
        return _fused_cpu._adopt(arrays, like)

    def flat_pass(box: dict[str, Any]) -> tuple[float, float, list[Any]]:
        params, snapshot, base = box["params"], box["snapshot"], box["base"]
        jax.block_until_ready(params)
        for x, shape in zip(params, shapes, strict=True):
            if x.shape != shape or x.dtype != f32 or not _fused_cpu._on_one_cpu(x):
                raise ValueError(f"a leaf is {x.dtype}{x.shape}, expected float32{shape} on one CPU")
        xs = [x.unsafe_buffer_pointer() for x in params]
        jax.block_until_ready([*snapshot, *base])
        snapshot_at = [a.unsafe_buffer_pointer() for a in snapshot]
        base_at = [a.unsafe_buffer_pointer() for a in base]
        outputs, outputs_at = allocate()
        rows = []
        for i in range(n):
            b, offset = where[i]
            skip = 4 * offset
            rows.append((xs[i], snapshot_at[b] + skip, snapshot_at[b] + skip, base_at[b] + skip,
                         outputs_at[b] + skip, 0, 0))
        sums = fused.reduce_pass("float32", rows, tuple(sizes), threads=fused.host_threads(), copying=True,
                                 firsts=[False] * n)
        dot = sq_norm = 0.0
        for leaf_dot, leaf_sq in sums:
            dot += leaf_dot
            sq_norm += leaf_sq
        return dot, sq_norm, outputs

    def flat_end(box: dict[str, Any]) -> None:
        dot, sq_norm, outputs = flat_pass(box)
        controller = box["controller"]
        decision, state = controller.preview(dot, sq_norm)
        controller.commit(decision, state)
        box["base"] = box["snapshot"]
        box["snapshot"] = _fused_cpu._adopt(outputs, box["snapshot"])

    # the adapter, and the check that the sketch reads the same bytes: the same sums, bit for bit
    adapter: dict[str, Any] = {"params": fresh()}
    adapter["state"] = autodrop_jax.init(adapter["params"], 0.1, **settings)

    def train(box: dict[str, Any]) -> None:
        box["params"] = jax.block_until_ready(step(box["params"], [
            jnp.asarray(1e-3 * rng.standard_normal(s), jnp.float32) for s in shapes]))

    def adapter_end() -> None:
        adapter["params"], adapter["state"], _ = autodrop_jax.update(adapter["state"], adapter["params"])
        jax.block_until_ready((adapter["params"], jax.tree.leaves(adapter["state"].snapshot)))

    for _ in range(2):
        train(adapter)
        adapter_end()
    train(adapter)
    want = autodrop_jax.step_reductions(adapter["state"], adapter["params"])
    probe_box = {"params": adapter["params"], "snapshot": to_flat(jax.tree.leaves(adapter["state"].snapshot)),
                 "base": to_flat(jax.tree.leaves(adapter["state"].step_base))}
    got = flat_pass(probe_box)[:2]
    if got != want:
        raise SystemExit(f"the flat sketch's sums {got} are not the adapter's {want}")
    del probe_box

    flat: dict[str, Any] = {"params": fresh()}
    flat["snapshot"] = to_flat(flat["params"])
    flat["base"] = to_flat(flat["params"])
    flat["controller"] = Controller(AutoDropConfig(lrs=(0.1,), **settings))
    runs = {"adapter (one array per tensor and role)": (adapter, lambda: adapter_end()),
            f"sketch ({len(lengths)} flat buffers per role)": (flat, lambda: flat_end(flat))}
    _compare(runs, train, threads, repeats, sizes, "the sketch's sums are the adapter's bits")


def child_tensorflow(threads: int, repeats: int, limit: int) -> None:
    """The same comparison for TensorFlow: ``autodrop_tf.AutoDrop.end_epoch`` against a sketch on flat variables."""
    pin_to_cores(threads)  # before TensorFlow sizes its thread pools
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(HERE))
    import json

    import numpy as np
    import tensorflow as tf
    from autodrop_tf import AutoDrop
    from autodrop_tf._ops import _direct
    from bench_tf_step import resnet18_shapes

    from autodrop_core import AutoDropConfig, Controller, fused

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    shapes = resnet18_shapes()
    sizes = [math.prod(s) for s in shapes]
    n = len(sizes)
    lengths, where = _layout(sizes, limit)
    k = len(lengths)
    rng = np.random.default_rng(0)
    settings: dict[str, Any] = {"drop_delay": 1000, "threshold": 1e-12, "max_threshold": 1e-12}  # never a window
    base_direction = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
    directions = [[tf.constant(1e-3 * (b + z * rng.standard_normal(b.shape, dtype=np.float32)))
                   for b in base_direction] for z in (0.3, 0.6, 0.9)]

    @tf.function  # type: ignore[untyped-decorator]
    def move(variables: list[Any], direction: list[Any]) -> None:
        for p, d in zip(variables, direction, strict=True):
            p.assign_add(d)

    def flat_values(variables: list[Any]) -> list[Any]:
        out = [np.zeros(length, np.float32) for length in lengths]
        for i, var in enumerate(variables):
            b, offset = where[i]
            out[b][offset:offset + sizes[i]] = var.numpy().ravel()
        return out

    params = [tf.Variable(rng.standard_normal(s, dtype=np.float32)) for s in shapes]
    snapshot = [tf.Variable(v) for v in flat_values(params)]
    base = [tf.Variable(v) for v in flat_values(params)]
    meta = tf.Variable(b"{}")
    controller = Controller(AutoDropConfig(lrs=(0.1,), **settings))
    read = _direct(tf.function(lambda: [tf.convert_to_tensor(v) for v in [*params, *snapshot, *base]]), [])

    def write_values(values: list[Any]) -> Any:
        for var, value in zip([*snapshot, *base, meta], values, strict=True):
            var.assign(value)
        return tf.constant(True)

    write = _direct(tf.function(write_values), [tf.TensorSpec(None, v.dtype) for v in [*snapshot, *base, meta]])

    def flat_pass() -> tuple[float, float, list[Any], list[Any]]:
        tensors = read()
        capsules = [tf.experimental.dlpack.to_dlpack(t) for t in tensors]
        found = fused.dlpack_buffers(capsules)
        for i, buffer in enumerate(found[:n]):
            if buffer.dtype != "float32" or buffer.elements != sizes[i] or not buffer.dense:
                raise ValueError(f"variable {i} is {buffer}, expected {sizes[i]} dense float32")
        snapshot_at = [b.address for b in found[n:n + k]]
        base_at = [b.address for b in found[n + k:]]
        pairs = [fused.aligned_empty_at(length, "float32") for length in lengths]
        rows = []
        for i in range(n):
            b, offset = where[i]
            skip = 4 * offset
            rows.append((found[i].address, snapshot_at[b] + skip, snapshot_at[b] + skip, base_at[b] + skip,
                         pairs[b][1] + skip, 0, 0))
        sums = fused.reduce_pass("float32", rows, tuple(sizes), threads=threads, copying=True, firsts=[False] * n)
        del capsules  # after the pass
        dot = sq_norm = 0.0
        for leaf_dot, leaf_sq in sums:
            dot += leaf_dot
            sq_norm += leaf_sq
        return dot, sq_norm, [a for a, _ in pairs], list(tensors[n:n + k])

    def flat_end() -> None:
        dot, sq_norm, outputs, old_snapshot = flat_pass()
        decision, state = controller.preview(dot, sq_norm)
        encoded = json.dumps({"core": Controller(controller.config, state).to_dict()}).encode()
        new_snapshot = [tf.experimental.dlpack.from_dlpack(a.__dlpack__()) for a in outputs]
        write([*new_snapshot, *old_snapshot, tf.constant(encoded)])
        controller.commit(decision, state)

    # the check that the sketch reads the right bytes: its sums against float64 numpy's
    epoch = [0]

    def train(variables: list[Any]) -> None:  # two updates: the first one's copy-on-write stays out of the epoch end
        for _ in range(2):
            epoch[0] += 1
            move(variables, directions[epoch[0] % 3])

    for _ in range(2):
        train(params)
        flat_end()
    train(params)
    x = np.concatenate([v.numpy().ravel() for v in params]).astype(np.float64)
    s_flat = [np.asarray(v.numpy(), np.float64) for v in snapshot]
    b_flat = [np.asarray(v.numpy(), np.float64) for v in base]
    x_hat = np.concatenate([s_flat[b][o:o + c] for (b, o), c in zip(where, sizes, strict=True)])
    x_hat2 = np.concatenate([b_flat[b][o:o + c] for (b, o), c in zip(where, sizes, strict=True)])
    want_dot = float(np.dot(x - x_hat, x_hat - x_hat2))
    want_sq = float(np.dot(x - x_hat, x - x_hat))
    got_dot, got_sq, _, _ = flat_pass()
    if not (math.isclose(got_dot, want_dot, rel_tol=1e-9) and math.isclose(got_sq, want_sq, rel_tol=1e-9)):
        raise SystemExit(f"the flat sketch's sums ({got_dot}, {got_sq}) are not numpy's ({want_dot}, {want_sq})")

    adapter_params = [tf.Variable(rng.standard_normal(s, dtype=np.float32)) for s in shapes]
    adapter = AutoDrop(adapter_params, lrs=0.1, **settings)
    runs = {"adapter (one variable per tensor and role)": (adapter_params, adapter.end_epoch),
            f"sketch ({k} flat variables per role)": (params, flat_end)}
    _compare(runs, train, threads, repeats, sizes, "the sketch's sums match float64 numpy's")


def _compare(runs: dict[str, Any], train: Any, threads: int, repeats: int, sizes: list[int], note: str) -> None:
    """Alternate the runs' epoch ends (each after ``train`` and a probe), then print medians and ratios."""
    import bandwidth

    probes = bandwidth.Interleaved(threads)
    for _ in range(6):  # the allocator warmed up to both layouts
        for box, end in runs.values():
            train(box)
            end()
    times: dict[str, list[float]] = {name: [] for name in runs}
    after: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (box, end) in runs.items():
            train(box)
            probes.probe()
            start = time.perf_counter()
            end()
            times[name].append(1e3 * (time.perf_counter() - start))
            after[name].append(probes.probe())
    moved = 16 * sum(sizes)
    print(f"{threads} thread(s), {sum(sizes):,} float32 parameters in {len(sizes)} tensors, outside a window, "
          f"medians of {repeats}; {note}; {probes.describe()}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:44s} {median:6.2f} ms, {median / probes.bound_ms(moved):.2f}x "
              f"(paired {probes.paired_ratio(values, after[name], moved):.2f}x)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frameworks", nargs="+", choices=("jax", "tensorflow"), default=["jax", "tensorflow"])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--limit", type=int, default=1 << 21, help="elements per flat buffer (default 2^21: 8 MiB)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.limit < 16:
        parser.error(f"--limit {args.limit}: at least 16 elements")
    if args.child is not None:
        run = child_jax if args.child[0] == "jax" else child_tensorflow
        run(int(args.child[1]), args.repeats, args.limit)
        return 0
    run_children(__file__, args.frameworks, args.threads, ["--repeats", str(args.repeats), "--limit", str(args.limit)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
