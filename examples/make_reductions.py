"""Regenerate ``reductions.jsonl``: the per-epoch reductions of a small real training run.

A linear least-squares model is trained with minibatch SGD at a fixed learning rate;
at the end of each epoch the numpy reference adapter's reductions (dot, sq_norm) are
recorded. The angle between successive epoch steps rises and then saturates, which is
what `autodrop replay` is shown reacting to in the README. Run:
``python examples/make_reductions.py > examples/reductions.jsonl``.
"""

from __future__ import annotations

import json

import numpy as np
from autodrop_numpy import reduce_steps


def main(epochs: int = 80, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((512, 20))
    targets = features @ rng.standard_normal(20) + 0.5 * rng.standard_normal(512)
    weights = np.zeros(20)
    snapshot, prev_step = [weights.copy()], [np.zeros(20)]
    for _ in range(epochs):
        for batch in np.array_split(rng.permutation(512), 32):
            x, y = features[batch], targets[batch]
            weights -= 0.01 * x.T @ (x @ weights - y) / len(batch)
        dot, sq_norm, prev_step = reduce_steps([weights], snapshot, prev_step)
        snapshot = [weights.copy()]
        print(json.dumps({"dot": dot, "sq_norm": sq_norm}))


if __name__ == "__main__":
    main()
