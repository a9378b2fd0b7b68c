"""autodrop_torch: AutoDrop as a PyTorch learning-rate scheduler.

``AutoDrop(optimizer)`` is a ``torch.optim.lr_scheduler.LRScheduler``: call ``step()``
once per epoch and it drops every group's learning rate when training saturates, after
averaging the last parameter vectors (Teng, Wang, Choromanska, UAI 2024). The decision
rules live in ``autodrop_core``; this package only reduces and moves tensors.

``AutoDropTrainerCallback`` (Hugging Face ``Trainer``) and ``AutoDropLightningCallback``
(Lightning) are imported on first use, so importing this package never imports
transformers or lightning.
"""

from typing import TYPE_CHECKING, Any

from autodrop_core._extras import missing_framework

if TYPE_CHECKING:  # for type checkers and the API reference; at run time __getattr__ imports them on use
    from autodrop_torch._hf import AutoDropTrainerCallback
    from autodrop_torch._lightning import AutoDropLightningCallback

try:
    from autodrop_core import ConfigError, Decision, InvalidReductionError, LRConflictError
    from autodrop_torch._scheduler import AutoDrop, AutoDropUsageWarning
    from autodrop_torch._timm import TimmAutoDrop
except ModuleNotFoundError as _err:
    _missing = missing_framework(_err, "autodrop_torch", "torch", ("torch", "numpy"))
    if _missing is None:
        raise
    raise _missing from _err

__all__ = [
    "AutoDrop",
    "AutoDropLightningCallback",
    "AutoDropTrainerCallback",
    "AutoDropUsageWarning",
    "ConfigError",
    "Decision",
    "InvalidReductionError",
    "LRConflictError",
    "TimmAutoDrop",
]

_LAZY = {"AutoDropTrainerCallback": "autodrop_torch._hf", "AutoDropLightningCallback": "autodrop_torch._lightning"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'autodrop_torch' has no attribute {name!r}")
