"""Failures injected at every stage of the TensorFlow epoch end; each retry must be exact, bit for bit.

A twin run goes uninterrupted and counts how often each stage is entered per epoch. The
faulted run, at every epoch, first fails at the k-th entry of each stage (the reduction,
absorbing x(t) into the running average, rounding the average, each write into a
variable or buffer, the lr write, the checkpointed meta), checks that the failed epoch
end changed nothing at all (every variable, buffer, the lr, the core), then ends the
epoch cleanly. Both runs must stay identical throughout: variables, optimizer lr,
decisions and ``state_dict``.
"""

from __future__ import annotations

import importlib.util
import os
from collections import Counter
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from autodrop_tf import AutoDrop, _adapter, _fused_cpu, _ops, _variables

EPOCHS = int(os.environ.get("AUTODROP_FAULT_EPOCHS", 14))
SETTINGS: dict[str, Any] = {"drop_delay": 3, "threshold": 5.0, "max_threshold": 50.0, "min_lr": 1e-5}
SHAPES = [(6, 4), (7,), (), (3, 2, 2)]
DTYPES = [np.float32, np.float32, np.float32, np.float16]

#: stage -> (module, attribute, the value of the seam's first argument that selects the stage, or None)
STAGES: dict[str, tuple[Any, str, str | None]] = {
    "reduction": (_ops, "_run_graph", "reduction"),
    "average: absorb x(t)": (_ops, "_run_graph", "absorb"),
    "average: round for writing": (_ops, "_run_graph", "average"),
    "write of a batch (variables or buffers)": (_ops, "_write_into", None),
    # each single write (where functions run eagerly: in a graph, the writes run at tracing, and
    # a failure inside the graph is the failure of its batch)
    "single write inside a batch": (_ops, "_assign", None),
    "lr write": (_variables.LrHandle, "write", None),
    "meta write": (_adapter, "_set_meta", None),
}


class Injected(Exception):
    """The failure the tests inject (standing for an out-of-memory, a device error...)."""


class Seams:
    """Wraps every stage: counts calls, or raises at the k-th call of one stage."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, stages: dict[str, tuple[Any, str, str | None]]) -> None:
        self.calls: Counter[str] = Counter()
        self.fail: tuple[str, int] | None = None
        self.stages = stages
        wrapped: set[tuple[int, str]] = set()
        for module, attr, _ in stages.values():
            if (id(module), attr) not in wrapped:
                wrapped.add((id(module), attr))
                monkeypatch.setattr(module, attr, self._wrap(module, attr, getattr(module, attr)))

    def _stage(self, module: Any, attr: str, args: tuple[Any, ...]) -> str:
        for stage, (m, a, selector) in self.stages.items():
            if m is module and a == attr and (selector is None or (args and args[0] == selector)):
                return stage
        raise AssertionError(f"no stage for {attr}{args[:1]}")

    def _wrap(self, module: Any, attr: str, real: Callable[..., Any]) -> Callable[..., Any]:
        is_method = isinstance(module, type)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            stage = self._stage(module, attr, args[1:] if is_method else args)
            self.calls[stage] += 1
            if self.fail == (stage, self.calls[stage]):
                raise Injected(f"injected failure at call {self.calls[stage]} of {stage}")
            return real(*args, **kwargs)

        return wrapper


class Run:
    """Variables (with BatchNorm-like extras), a Keras SGD optimizer with momentum, AutoDrop over them."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.rng = np.random.default_rng(1)
        self.params = [tf.Variable(rng.standard_normal(s).astype(d)) for s, d in zip(SHAPES, DTYPES)]
        self.direction = [rng.standard_normal(s).astype(d) for s, d in zip(SHAPES, DTYPES)]
        self.stats = tf.Variable(np.zeros(5, np.float32))
        self.optimizer = keras.optimizers.SGD(learning_rate=0.1, momentum=0.9)
        self.autodrop = AutoDrop(self.params, self.optimizer, extra_variables=[self.stats], **SETTINGS)

    def train(self) -> None:
        grads = [tf.constant(-(d + 0.3 * self.rng.standard_normal(d.shape)).astype(d.dtype)) for d in self.direction]
        self.optimizer.apply_gradients(zip(grads, self.params))
        self.stats.assign_add(tf.constant(self.rng.standard_normal(5).astype(np.float32)))


def everything(run: Run) -> list[Any]:
    """Every value the run holds: variables, every buffer variable (shape and bits), lr, core, meta."""
    ad = run.autodrop
    buffers = ad.buffers
    flat: list[Any] = [(v.dtype.name, v.numpy().tobytes()) for v in [*run.params, run.stats]]
    slots = buffers.snapshot + buffers.step_base + buffers.step_head
    slots += [c for group in buffers.average + buffers.extra_average + buffers.explicit_step for c in group]
    flat += [(s.numpy().shape, s.dtype.name, s.numpy().tobytes()) for s in slots]
    flat += [buffers.layout.to_dict(), ad.meta.numpy(), ad._host.synced_meta, ad._host.written]
    flat += [float(run.optimizer.learning_rate.numpy()), ad.controller.to_dict(), len(ad.history)]
    flat += [None if ad.last_decision is None else ad.last_decision.to_dict()]
    return flat


def exported(run: Run) -> list[Any]:
    state = run.autodrop.state_dict()
    return [state["core"]] + [None if state[k] is None else [a.tobytes() for a in state[k]]
                              for k in ("snapshot", "step_base", "step_head", "average", "extra_average")]


@pytest.fixture(params=["graphs", "functions run eagerly"])
def mode(request: pytest.FixtureRequest) -> Any:
    """As the adapter runs (compiled graphs), and with ``tf.function`` run eagerly, so that a
    failure can also land between two single writes of one batch."""
    eager = request.param != "graphs"
    tf.config.run_functions_eagerly(eager)
    yield request.param
    tf.config.run_functions_eagerly(False)


@pytest.fixture(params=["graph", "numba"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The reduction as a TensorFlow graph, or as the numba pass (float32 variables only, switched on for them)."""
    if request.param == "numba":
        if importlib.util.find_spec("numba") is None:
            pytest.skip("numba is not installed")
        monkeypatch.setattr(_fused_cpu, "MIN_NUMEL", 0)
        monkeypatch.setitem(globals(), "DTYPES", [np.float32] * len(SHAPES))  # a float16 variable keeps the graph
    return str(request.param)


def test_a_failure_at_any_stage_of_the_epoch_end_changes_nothing_and_the_retry_is_exact(
    monkeypatch: pytest.MonkeyPatch, mode: str, path: str
) -> None:
    # plain variables are written by one graph per batch (its writes are Python calls only while
    # it is traced); where functions run eagerly, by one eager op each: then every single write is a stage
    stages = dict(STAGES)
    if mode == "graphs":
        del stages["single write inside a batch"]
    if path == "numba":  # the numba pass must have run (it goes through the "reduction" seam as well)
        passes: list[int] = []
        real = _fused_cpu.reduce_buffers
        monkeypatch.setattr(_fused_cpu, "reduce_buffers", lambda *a: passes.append(1) or real(*a))
    twin, run = Run(), Run()
    seams = Seams(monkeypatch, stages)
    injected: Counter[str] = Counter()
    for t in range(EPOCHS):
        twin.train()
        run.train()
        seams.calls.clear()
        seams.fail = None
        twin.autodrop.end_epoch()
        per_stage = dict(seams.calls)
        before = everything(run)
        for stage, n in per_stage.items():
            for k in range(1, n + 1):
                seams.calls.clear()
                seams.fail = (stage, k)
                with pytest.raises(Injected):
                    run.autodrop.end_epoch()
                seams.fail = None
                assert everything(run) == before, f"epoch {t + 1}: a failure at call {k} of {stage} changed state"
                injected[stage] += 1
        seams.calls.clear()
        run.autodrop.end_epoch()  # the retry
        assert run.autodrop.last_decision == twin.autodrop.last_decision
        assert everything(run) == everything(twin), f"epoch {t + 1}: the retry differs from the uninterrupted run"
        assert exported(run) == exported(twin)
    history = twin.autodrop.history
    assert any(d.apply_average for d in history) and any(d.dropped for d in history)
    assert any(d.average_weight is not None and not d.apply_average for d in history)
    print(f"\nTF epoch end ({mode}): {sum(injected.values())} faults injected over {EPOCHS} epochs: {dict(injected)}")
    assert set(injected) == set(stages), f"stages never reached: {set(stages) - set(injected)}"
    if path == "numba":
        assert passes, "the numba pass never ran"


@pytest.mark.parametrize("batch", [1, 2])
def test_a_failure_after_a_graph_wrote_its_whole_batch_is_put_back(monkeypatch: pytest.MonkeyPatch, batch: int) -> None:
    # in a graph the single writes are not seams: the worst case, every write of the batch done
    # and then a failure, must still leave nothing changed (batch 2 exists only where an average is applied)
    twin, run = Run(), Run()
    real = _ops._write_into
    calls = {"n": 0, "fail": False}

    def write_then_fail(writer: Any, values: list[Any]) -> Any:
        out = real(writer, values)
        calls["n"] += 1
        if calls["fail"] and calls["n"] == batch:
            raise Injected("after the batch was written")
        return out

    monkeypatch.setattr(_ops, "_write_into", write_then_fail)
    tried = 0
    for t in range(EPOCHS):
        twin.train()
        run.train()
        calls["n"], calls["fail"] = 0, False
        twin.autodrop.end_epoch()
        if calls["n"] >= batch:
            before = everything(run)
            calls["n"], calls["fail"] = 0, True
            with pytest.raises(Injected):
                run.autodrop.end_epoch()
            assert everything(run) == before, f"epoch {t + 1}: a failure after batch {batch} changed state"
            tried += 1
        calls["n"], calls["fail"] = 0, False
        run.autodrop.end_epoch()
        assert everything(run) == everything(twin), f"epoch {t + 1}: the retry differs from the uninterrupted run"
    assert tried > 0
