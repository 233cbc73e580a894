"""torch.compile, with a graceful fallback where it cannot work."""

import contextlib
import warnings

import torch
from torch import nn


def compile_model(model: nn.Module) -> nn.Module:
    """`torch.compile(model)`; the model itself if torch.compile refuses at once.

    Without a working C++ toolchain (common on CPU-only machines) compilation fails only at the
    first call: run compiled models inside `eager_fallback()`.
    """
    try:
        return torch.compile(model)
    except Exception as error:  # torch.compile itself refusing, e.g. on an unsupported Python version
        warnings.warn(f"train.compile=true but torch.compile is unavailable ({error}); training uncompiled")
        return model


def eager_fallback() -> contextlib.AbstractContextManager:
    """While active, a compiled model that fails to compile runs eagerly, with dynamo's warning,
    instead of stopping the run. The setting is dynamo's, process-wide: it is restored on exit."""
    return torch._dynamo.config.patch(suppress_errors=True)
