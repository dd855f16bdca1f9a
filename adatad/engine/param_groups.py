"""AdamW parameter groups for AdaTAD (docs/recipe.md §7).

The frozen backbone is left out of the optimiser; adapters get their own lr with weight decay on
every parameter (biases and gamma included, as the reference does); the detector decays only
Linear/Conv weights (not biases, norm weights, Scale or AffineDropPath scales).
"""

from __future__ import annotations

from torch import nn

_DECAY_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def build_param_groups(model: nn.Module, base_lr: float, adapter_lr: float,
                       weight_decay: float = 0.05) -> list[dict]:
    """Groups named "adapter", "decay", "no_decay" (only non-empty ones), trainable parameters only.

    A parameter whose name contains "adapter" goes to the adapter group; any other parameter under a
    module path containing "backbone" is excluded (lr 0 in the reference); the rest is detector.
    """
    adapter, decay, no_decay = [], [], []
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            full = f"{module_name}.{param_name}" if module_name else param_name
            if "adapter" in full:
                adapter.append(param)
            elif "backbone" in full:
                continue
            elif param_name == "weight" and isinstance(module, _DECAY_TYPES):
                decay.append(param)
            else:  # biases, LayerNorm weights, Scale / AffineDropPath scales, other gains
                no_decay.append(param)
    groups = [
        {"name": "adapter", "params": adapter, "lr": adapter_lr, "weight_decay": weight_decay},
        {"name": "decay", "params": decay, "lr": base_lr, "weight_decay": weight_decay},
        {"name": "no_decay", "params": no_decay, "lr": base_lr, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]
