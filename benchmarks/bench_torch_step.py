"""Cost of ``autodrop_torch.AutoDrop.step()`` against the machine's memory-bandwidth bound, on CPU.

Two measurements, both from this one run:

1. A ResNet-18-shaped parameter set (11.2M float32 parameters in 62 tensors). One
   step() outside an averaging window must read x(t), x̂(t-1) and x̂(t-2) and write the
   next snapshot: 16 bytes per float32 parameter; inside a window it also reads W and
   writes W' (float64): 32 bytes. The bound is the time the machine takes to move those
   bytes at the machine's bandwidth: the fastest run, in this process, of the shared probe
   ``benchmarks/bandwidth.py`` (a numba stream outside every framework), which is also
   timed between the steps; the ratio is the median step() over the bound (and the
   fastest step() over the bound), at 1 and 2 threads, with the system time and page
   faults inside each step() (``bandwidth.KernelTime``: the kernel zeroing fresh outputs).
2. The overhead of step() on the demo's 1-D CNN as a share of one training epoch
   (4000 random sequences of length 40, batch 100, Adam).

Run: ``python benchmarks/bench_torch_step.py [--repeats 15] [--threads 1 2] [--no-fused]``. It
prints medians; nothing here is asserted (speed goals live in benchmarks, not tests).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bandwidth  # noqa: E402  (the shared probe, next to this file)

try:
    from autodrop_torch import AutoDrop, AutoDropUsageWarning
except ModuleNotFoundError:  # an editable install made before the adapter existed
    sys.path.insert(0, str(ROOT / "adapters"))
    from autodrop_torch import AutoDrop, AutoDropUsageWarning

# The timed "epochs" move the parameters by hand, without an optimizer step, which AutoDrop
# warns about (a zero-optimizer-step epoch): expected here.
warnings.filterwarnings("ignore", category=AutoDropUsageWarning)


def resnet18_shapes() -> list[tuple[int, ...]]:
    """The 62 parameter shapes of the CIFAR ResNet-18 (3x3 stem, 10 classes): 11.17M in all."""
    shapes: list[tuple[int, ...]] = [(64, 3, 3, 3), (64,), (64,)]
    inplanes = 64
    for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            first = block == 0
            shapes += [(planes, inplanes if first else planes, 3, 3), (planes,), (planes,)]
            shapes += [(planes, planes, 3, 3), (planes,), (planes,)]
            if first and (stride != 1 or inplanes != planes):
                shapes += [(planes, inplanes, 1, 1), (planes,), (planes,)]
        inplanes = planes
    return [*shapes, (10, 512), (10,)]


def median_ms(fn: Callable[[], object], repeats: int, between: Callable[[], object] | None = None) -> float:
    times = []
    for _ in range(repeats):
        if between is not None:
            between()
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def bench_resnet(repeats: int, thread_counts: list[int]) -> None:
    shapes = resnet18_shapes()
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen) * 0.05) for s in shapes]
    count = sum(p.numel() for p in params)
    print(f"ResNet-18-shaped set: {len(params)} tensors, {count / 1e6:.2f}M float32 parameters")
    noise = [torch.randn(s, generator=gen) * 1e-4 for s in shapes]

    def train() -> None:  # stands for an epoch of training, outside the timed region
        with torch.no_grad():
            for p, n in zip(params, noise):
                n.normal_(0.0, 1e-4, generator=gen)
                p.add_(n)

    quiet = AutoDrop(torch.optim.SGD(params, lr=0.1), threshold=1e-12, max_threshold=1e-12)
    pending = AutoDrop(torch.optim.SGD(params, lr=0.1), threshold=180.0, max_threshold=180.0, drop_delay=10**6)
    for _ in range(4):  # the trigger fires at epoch 3 and the window stays open
        train()
        quiet.step()
        pending.step()
    assert pending.last_decision is not None and pending.last_decision.average_weight is not None
    outside, inside = 16 * count, 32 * count
    print(f"  bytes one step() must move: {outside / 1e6:.0f} MB outside a window (16 B per parameter), "
          f"{inside / 1e6:.0f} MB inside (32 B)")
    for threads in thread_counts:
        torch.set_num_threads(threads)
        rows: dict[str, tuple[list[float], int, AutoDrop]] = {
            "outside": ([], outside, quiet),
            "inside": ([], inside, pending),
        }
        meters = {where: bandwidth.KernelTime() for where in rows}
        probes = bandwidth.Interleaved(threads)
        after: dict[str, list[float]] = {where: [] for where in rows}  # the probe right after each step
        for _ in range(repeats):
            for where, (times, _, sched) in rows.items():
                train()
                with meters[where].measure():
                    times.append(median_ms(sched.step, 1))
                after[where].append(probes.probe())  # interleaved: the load hits both alike
        assert not any(d.triggered for d in quiet.history), "random steps should not trigger"
        print(f"  {threads} thread{'s' if threads > 1 else ''}: {probes.describe()}")
        for where, (times, moved, _) in rows.items():
            bound = probes.bound_ms(moved)  # at the machine's bandwidth: the fastest probe of this run
            print(f"    step() {where} a window: median {statistics.median(times):.1f} ms, bound {bound:.1f} ms: "
                  f"{statistics.median(times) / bound:.2f}x (fastest step {min(times) / bound:.2f}x; paired with "
                  f"the probe after each step {probes.paired_ratio(times, after[where], moved):.2f}x)")
            print(f"      of which {bandwidth.KernelTime.describe(meters[where].summary())}")


def bench_demo_share(repeats: int) -> None:
    try:
        from autodrop_demo._models import Cnn1d

        source = "autodrop_demo._models.Cnn1d"
    except ModuleNotFoundError:
        sys.path.insert(0, str(ROOT / "demo"))
        from autodrop_demo._models import Cnn1d

        source = "autodrop_demo._models.Cnn1d (from the checkout)"
    torch.manual_seed(0)
    model = Cnn1d()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = AutoDrop(opt, threshold=1e-12, max_threshold=1e-12)
    x = torch.randn(4000, 40)
    y = torch.randint(0, 10, (4000,))

    def epoch() -> None:
        for i in range(0, 4000, 100):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i : i + 100]), y[i : i + 100]).backward()
            opt.step()

    epoch()
    sched.step()
    epoch_ms = median_ms(epoch, max(3, repeats // 3))
    step_ms = median_ms(sched.step, repeats, epoch)
    count = sum(p.numel() for p in model.parameters())
    print(f"Demo model {source}: {count} parameters")
    print(f"  one training epoch (4000 x 40, batch 100, Adam): {epoch_ms:.1f} ms")
    print(f"  AutoDrop.step(): {step_ms:.2f} ms = {100 * step_ms / epoch_ms:.2f}% of the epoch")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to measure")
    parser.add_argument("--no-fused", action="store_true", help="plain torch ops even if numba is installed")
    args = parser.parse_args(argv)
    from autodrop_torch import _fused_cpu, _reduce

    _reduce.USE_FUSED_CPU = not args.no_fused
    path = "fused numba kernels" if _reduce.USE_FUSED_CPU and _fused_cpu.available() else "plain torch ops"
    print(f"torch {torch.__version__}, CPU, reductions by {path}")
    bench_resnet(args.repeats, args.threads)
    bench_demo_share(args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
