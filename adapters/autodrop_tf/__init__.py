"""autodrop_tf: AutoDrop for TensorFlow 2 and Keras 3 (TensorFlow backend).

* :class:`AutoDropCallback` for ``model.fit(callbacks=[...])``;
* :class:`AutoDrop` for custom ``GradientTape`` loops: build it from the variables,
  call :meth:`AutoDrop.end_epoch` after each epoch, read :attr:`AutoDrop.lr`, save it
  with ``tf.train.Checkpoint`` or :meth:`AutoDrop.state_dict`.

The decision rules live in :mod:`autodrop_core`; this package only computes the two
reductions (float64, on the device) and applies the decisions.
"""

from autodrop_core._extras import missing_framework

try:
    from autodrop_tf._adapter import AutoDrop
    from autodrop_tf._callback import AutoDropCallback
except ModuleNotFoundError as _err:
    _missing = missing_framework(_err, "autodrop_tf", "tensorflow", ("tensorflow", "keras", "numpy"))
    if _missing is None:
        raise
    raise _missing from _err

__all__ = ["AutoDrop", "AutoDropCallback"]
