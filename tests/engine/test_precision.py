import pytest
import torch

from nashcli.engine import precision as precision_module
from nashcli.engine.precision import Precision, make_grad_scaler, peak_flops, precision_notes, resolve_precision

CPU = torch.device("cpu")


def test_auto_picks_bf16_on_cpus_with_bf16_matrix_units(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_has_bf16_matrix_units", lambda: True)
    assert resolve_precision("auto", CPU) == Precision("bf16", "cpu")
    monkeypatch.setattr(precision_module, "cpu_has_bf16_matrix_units", lambda: False)
    assert resolve_precision("auto", CPU) == Precision("fp32", "cpu")


def test_explicit_precisions_are_kept_and_only_fp16_gets_an_active_scaler():
    assert resolve_precision("fp16", CPU).needs_grad_scaler
    assert make_grad_scaler(resolve_precision("fp16", CPU)).is_enabled()
    assert not make_grad_scaler(resolve_precision("bf16", CPU)).is_enabled()
    assert resolve_precision("fp32", CPU).dtype == torch.float32


def test_bf16_autocast_runs_matmuls_in_bf16_on_cpu():
    x = torch.randn(4, 8)
    with Precision("bf16", "cpu").autocast():
        assert (x @ x.T).dtype == torch.bfloat16
    with Precision("fp32", "cpu").autocast():
        assert (x @ x.T).dtype == torch.float32


def test_measured_cpu_peak_is_plausible_and_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    flops = peak_flops(CPU, Precision("fp32", "cpu"))
    assert 1e9 < flops < 1e14
    assert torch.equal(torch.rand(1), expected)


@pytest.mark.parametrize("has_bf16_units", [True, False], ids=["bf16-units", "avx2-only"])
def test_a_16_bit_type_the_cpu_lacks_units_for_gets_a_slowness_warning(monkeypatch, has_bf16_units):
    # Which kind of CPU runs the tests is chance: both answers of the probe are checked.
    monkeypatch.setattr(precision_module, "cpu_has_bf16_matrix_units", lambda: has_bf16_units)
    assert precision_notes(Precision("fp16", "cpu")) == [
        "fp16 on a CPU is very slow (no fp16 matrix units): prefer --set train.precision=auto (bf16 or fp32)"
    ]
    bf16_warning = [
        "bf16 on this CPU is very slow (no AVX512-BF16 or AMX units): prefer --set train.precision=auto (fp32 here)"
    ]
    assert precision_notes(Precision("bf16", "cpu")) == ([] if has_bf16_units else bf16_warning)
    for precision in (Precision("fp32", "cpu"), Precision("fp16", "cuda"), Precision("bf16", "cuda")):
        assert precision_notes(precision) == []


GPU = torch.device("cuda", 0)


@pytest.fixture
def gpu_with_emulated_bf16(monkeypatch):
    """A V100/T4-like GPU: bf16 runs, but only by emulation."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)


def test_auto_does_not_pick_emulated_bf16_on_a_gpu(gpu_with_emulated_bf16):
    assert resolve_precision("auto", GPU) == Precision("fp32", "cuda")
    assert resolve_precision("bf16", GPU) == Precision("bf16", "cuda")  # asked for: it runs, with a note
    assert precision_notes(Precision("bf16", "cuda")) == [
        "bf16 on this GPU is emulated (no bf16 tensor cores), slower than fp32: prefer --set train.precision=fp16"
    ]


def test_auto_picks_bf16_on_a_gpu_with_bf16_tensor_cores(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_precision("auto", GPU) == Precision("bf16", "cuda")
    assert precision_notes(Precision("bf16", "cuda")) == []


@pytest.mark.parametrize(
    "name, expected",
    [
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA H200 NVL", 835e12),
        ("NVIDIA H800", 989e12),
        ("NVIDIA H800 PCIe", 756e12),
        ("NVIDIA B200", 2250e12),
        ("NVIDIA GB200", 2500e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
    ],
)
def test_gpu_peaks_match_the_most_specific_name(monkeypatch, name, expected):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert peak_flops(GPU, Precision("bf16", "cuda")) == expected
