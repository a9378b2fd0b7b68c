"""autodrop_keras: AutoDrop as a Keras 3 callback on every backend (TensorFlow, JAX, torch).

``model.fit(..., callbacks=[AutoDropCallback()])`` drops the optimizer's learning rate
when training saturates (Teng, Wang, Choromanska, UAI 2024). The tensor work is written
with ``keras.ops`` only, so TensorFlow is needed only under the TensorFlow backend; the
rules live in ``autodrop_core``. ``autodrop_tf`` keeps the low-level TensorFlow API
(``GradientTape`` loops, ``tf.train.Checkpoint``, MirroredStrategy).
"""

from autodrop_core import ConfigError, Decision, InvalidReductionError, LRConflictError
from autodrop_keras._callback import AutoDropCallback

__all__ = ["AutoDropCallback", "ConfigError", "Decision", "InvalidReductionError", "LRConflictError"]
