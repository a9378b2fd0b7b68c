"""autodrop_torch: AutoDrop as a PyTorch learning-rate scheduler.

``AutoDrop(optimizer)`` is a ``torch.optim.lr_scheduler.LRScheduler``: call ``step()``
once per epoch and it drops every group's learning rate when training saturates, after
averaging the last parameter vectors (Teng, Wang, Choromanska, UAI 2024). The decision
rules live in ``autodrop_core``; this package only reduces and moves tensors.
"""

from autodrop_core import ConfigError, Decision, InvalidReductionError, LRConflictError
from autodrop_torch._scheduler import AutoDrop, AutoDropUsageWarning

__all__ = ["AutoDrop", "AutoDropUsageWarning", "ConfigError", "Decision", "InvalidReductionError", "LRConflictError"]
