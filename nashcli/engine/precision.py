"""Numeric precision of a run: which dtype autocast uses, whether a grad scaler is needed, and
the matmul peak that MFU is measured against."""

import contextlib
import functools
import time
from dataclasses import dataclass

import torch

from nashcli.errors import NashError
from nashcli.value_checks import is_finite_number, is_int

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# Dense tensor-core peaks (FLOP/s) of known GPUs for bf16/fp16, from the vendors' data sheets
# (without sparsity). Matched by substring of torch.cuda.get_device_name(), first match wins: the
# specific names (NVL, PCIe) before the family. Other GPUs are measured.
KNOWN_GPU_PEAK_FLOPS = {
    "GB200": 2500e12,
    "B200": 2250e12,
    "H200 NVL": 835e12,
    "H200": 989e12,
    "H100 NVL": 835e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "H800 PCIe": 756e12,
    "H800": 989e12,
    "A100": 312e12,
    "A10G": 125e12,
    "L40S": 362e12,
    "L40": 181e12,
    "L4": 121e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
}


@dataclass(frozen=True)
class Precision:
    """fp32, or autocast to bf16/fp16 on `device_type` with fp32 master weights."""

    name: str  # "fp32" | "bf16" | "fp16"
    device_type: str  # "cpu" | "cuda" | "mps"

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.name]

    @property
    def needs_grad_scaler(self) -> bool:
        # fp16 has a 5-bit exponent: small gradients underflow to zero unless the loss is scaled up.
        # bf16 has fp32's exponent range, so it needs no scaler.
        return self.name == "fp16"

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context to run forward passes in (matmuls in the low precision, reductions in fp32)."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)


def cpu_has_bf16_matrix_units() -> bool:
    """True on CPUs with native bf16 dot products (AVX512-BF16 or AMX), where bf16 beats fp32 ~2x."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def cuda_has_bf16_units() -> bool:
    """True on GPUs that run bf16 natively (Ampere and later). Older ones (V100, T4) accept bf16 only
    by emulation, far slower than fp32: torch.cuda.is_bf16_supported() counts those too by default."""
    return torch.cuda.is_bf16_supported(including_emulation=False)


def has_bf16_matrix_units(device: torch.device) -> bool:
    """Whether `device` multiplies bf16 matrices natively (faster than fp32), not by emulation."""
    if device.type == "cuda":
        return cuda_has_bf16_units()
    return device.type == "cpu" and cpu_has_bf16_matrix_units()


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """The precision to use for `train.precision` on `device`.

    auto picks bf16 on CUDA GPUs that support it and on CPUs with bf16 matrix units, else fp32;
    fp16 is only used when asked for.
    """
    device_type = device.type
    if requested == "auto":
        return Precision("bf16" if has_bf16_matrix_units(device) else "fp32", device_type)
    if requested == "bf16" and device_type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=True):
        raise NashError(
            f"train.precision=bf16 is not supported by {torch.cuda.get_device_name(device)}: "
            "use --set train.precision=fp16 (or auto)"
        )
    return Precision(requested, device_type)


def precision_notes(precision: Precision) -> list[str]:
    """One-line warnings about a precision that will run but poorly on its device."""
    # Without matrix units for it, a CPU emulates the 16-bit type: matmuls hundreds of times slower
    # than fp32 (the figures are in bench/README.md).
    if precision.name == "fp16" and precision.device_type == "cpu":
        return ["fp16 on a CPU is very slow (no fp16 matrix units): prefer --set train.precision=auto (bf16 or fp32)"]
    if precision.name == "bf16" and precision.device_type == "cpu" and not cpu_has_bf16_matrix_units():
        return [
            "bf16 on this CPU is very slow (no AVX512-BF16 or AMX units): prefer --set train.precision=auto "
            "(fp32 here)"
        ]
    bf16_on_gpu = precision.name == "bf16" and precision.device_type == "cuda" and torch.cuda.is_available()
    if bf16_on_gpu and not cuda_has_bf16_units():
        return [
            "bf16 on this GPU is emulated (no bf16 tensor cores), slower than fp32: prefer --set train.precision=fp16"
        ]
    return []


def make_grad_scaler(precision: Precision) -> torch.amp.GradScaler:
    """A GradScaler that is active only for fp16 (a disabled scaler passes everything through)."""
    return torch.amp.GradScaler(precision.device_type, enabled=precision.needs_grad_scaler)


def load_grad_scaler_state(scaler: torch.amp.GradScaler, state: dict) -> None:
    """Restore a saved scaler state once checked. A disabled scaler (bf16, fp32) ignores it, and an
    enabled one keeps its fresh state when the saved one is empty (saved by a bf16 or fp32 run)."""
    if not scaler.is_enabled() or not state:
        return
    fresh = scaler.state_dict()  # scale, growth_factor, backoff_factor, growth_interval, _growth_tracker
    for key, reference in fresh.items():
        value = state.get(key)
        positive = key != "_growth_tracker"  # the one counter that starts at 0
        kind_ok = is_int(value) if is_int(reference) else is_finite_number(value)
        if not kind_ok or value < 0 or (positive and value == 0):
            rule = "> 0" if positive else ">= 0"
            raise NashError(f"the grad scaler state's {key} is not a finite {type(reference).__name__} {rule}")
    scaler.load_state_dict(state)


def peak_flops(device: torch.device, precision: Precision) -> float:
    """FLOP/s ceiling for MFU: a data-sheet value for known GPUs in bf16/fp16, else measured."""
    if device.type == "cuda" and precision.name != "fp32":
        name = torch.cuda.get_device_name(device)
        for key, flops in KNOWN_GPU_PEAK_FLOPS.items():
            if key in name:
                return flops
    return measured_matmul_flops(str(device), precision.name)


@functools.lru_cache(maxsize=None)
def measured_matmul_flops(device: str, precision_name: str) -> float:
    """Best of a few square matmuls in the given precision: the practical peak of this device.

    Small products understate the peak (thread start-up), so the size doubles from 512 towards the
    plateau size while the next product is projected to take under 0.3 s at the speed seen so far:
    an emulated 16-bit type stays small, fast ones reach 1536.
    Cached: measured once per process.
    """
    dtype = DTYPES[precision_name]
    largest = 8192 if device.startswith("cuda") else 1536  # the CPU plateau is reached by 1536
    generator = torch.Generator(device).manual_seed(0)  # leaves the global RNG (dropout, init) alone
    size = 512
    while True:
        a = torch.randn(size, size, device=device, generator=generator).to(dtype)
        b = torch.randn(size, size, device=device, generator=generator).to(dtype)
        a @ b  # warm-up
        best_s = min(_time_matmul(a, b, device) for _ in range(3))
        next_size = min(largest, size * 2)
        if size == largest or best_s * (next_size / size) ** 3 > 0.3:
            return 2 * size**3 / best_s
        size = next_size


def _time_matmul(a: torch.Tensor, b: torch.Tensor, device: str) -> float:
    _synchronize(device)
    start = time.perf_counter()
    a @ b
    _synchronize(device)
    return time.perf_counter() - start


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
