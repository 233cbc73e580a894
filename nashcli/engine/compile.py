"""torch.compile, with a fallback to eager that says so."""

import contextlib
import logging
import warnings
from typing import Iterator

import torch
from torch import nn

# Where dynamo reports a frame it could not compile and runs eagerly instead (a compiler or Triton
# failure while errors are suppressed, or the recompile limit reached): the one place to listen.
DYNAMO_FALLBACK_LOGGER = "torch._dynamo.convert_frame"


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


class EagerFallbacks(logging.Filter):
    """Counts the frames dynamo gave up compiling; the first one becomes one warning line (instead of
    dynamo's page of traceback, which TORCH_LOGS=dynamo still shows)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.reason = ""  # the first failure, one line

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        self.count += 1
        if self.count == 1:
            self.reason = _first_line(record)
            warnings.warn(
                f"compile fell back to eager: torch.compile failed ({self.reason[:300]}); the run continues "
                "uncompiled (slower). Fix the compiler (a C++ toolchain on CPUs, Triton on GPUs) or use "
                "--set train.compile=false",
                RuntimeWarning,
            )
        return logging.getLogger(DYNAMO_FALLBACK_LOGGER).isEnabledFor(logging.DEBUG)


@contextlib.contextmanager
def eager_fallback() -> Iterator[EagerFallbacks]:
    """While active, a compiled model that fails to compile runs eagerly instead of stopping the run,
    and the first such fallback is reported as one RuntimeWarning ("compile fell back to eager: ...");
    the returned object counts them. Dynamo's setting is process-wide: it is restored on exit."""
    fallbacks = EagerFallbacks()
    logger = logging.getLogger(DYNAMO_FALLBACK_LOGGER)
    logger.addFilter(fallbacks)
    try:
        with torch._dynamo.config.patch(suppress_errors=True):
            yield fallbacks
    finally:
        logger.removeFilter(fallbacks)


def _first_line(record: logging.LogRecord) -> str:
    """The innermost error of a dynamo log record (e.g. the compiler's own), as `Type: first line`."""
    error = record.exc_info[1] if record.exc_info else None
    if error is None:
        return record.getMessage().strip().splitlines()[0] if record.getMessage().strip() else "unknown reason"
    seen = {id(error)}
    while True:  # dynamo wraps the backend's error (BackendCompilerFailed.inner_exception, __cause__)
        inner = getattr(error, "inner_exception", None) or error.__cause__
        if inner is None or id(inner) in seen:
            break
        seen.add(id(inner))
        error = inner
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
