"""Subprocess script: the scenario on one device and under MirroredStrategy on two CPUs.

Logical devices must be configured before TensorFlow initialises its devices, which is
why this runs in its own process (``test_mirrored.py`` starts it). Prints one JSON line:
the decisions of both runs and whether every variable's replicas agree at the end.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

sys.path.insert(0, str(Path(__file__).parent))
import scenario  # noqa: E402
from autodrop_tf import AutoDropCallback  # noqa: E402

EPOCHS = int(sys.argv[1]) if len(sys.argv) > 1 else 14


def run(strategy: tf.distribute.Strategy | None) -> dict[str, object]:
    model = scenario.make_model(strategy)
    callback = AutoDropCallback(**scenario.SETTINGS)
    scenario.fit(model, [callback], EPOCHS)
    replicas_agree = True
    for var in model.trainable_variables + model.non_trainable_weights:
        inner = var.value
        copies = [np.asarray(c.numpy()) for c in getattr(inner, "values", (inner,))]
        replicas_agree &= all(np.array_equal(copies[0], c) for c in copies[1:])
    assert callback.autodrop is not None
    return {
        "replicas": len(getattr(model.trainable_variables[0].value, "values", (None,))),
        "replicas_agree": bool(replicas_agree),
        "decisions": [d.to_dict() for d in callback.autodrop.history],
    }


if __name__ == "__main__":
    single = run(None)
    mirrored = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    print("RESULT " + json.dumps({"single": single, "mirrored": mirrored}))
