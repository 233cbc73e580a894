"""torch.compile, with a graceful fallback where it cannot work."""

import warnings

import torch
from torch import nn


def compile_model(model: nn.Module) -> nn.Module:
    """`torch.compile(model)`; the model itself if compilation is unavailable.

    Without a working C++ toolchain (common on CPU-only machines) compilation fails at the first
    call, not here: `suppress_errors` makes dynamo fall back to eager then, with its own warning.
    """
    torch._dynamo.config.suppress_errors = True
    try:
        return torch.compile(model)
    except Exception as error:  # torch.compile itself refusing, e.g. on an unsupported Python version
        warnings.warn(f"train.compile=true but torch.compile is unavailable ({error}); training uncompiled")
        return model
