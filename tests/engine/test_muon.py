import pytest
import torch

from nashcli.engine.muon import Muon, orthogonalize, orthogonalize_dtype

SHAPES = [(8, 24), (24, 8), (16, 16)]  # wide, tall (nash stores (in, out)), square
NS = ((3.4445, -4.7750, 2.0315), 5, 1e-7)


def _train_three_steps(optimizer_class, weight_decay: float, nesterov: bool, **extra) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    matrices = [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in SHAPES]
    optimizer = optimizer_class(matrices, lr=0.02, weight_decay=weight_decay, momentum=0.9, nesterov=nesterov, **extra)
    for _ in range(3):
        for matrix in matrices:
            matrix.grad = torch.randn(matrix.shape, generator=generator)
        optimizer.step()
    return [matrix.detach().clone() for matrix in matrices]


@pytest.mark.parametrize("nesterov", [True, False])
def test_muon_in_bf16_is_torch_muon_exactly(nesterov):
    ours = _train_three_steps(Muon, 0.1, nesterov, orthogonalize_dtype=torch.bfloat16)
    torchs = _train_three_steps(torch.optim.Muon, 0.1, nesterov, adjust_lr_fn="match_rms_adamw")
    for mine, reference in zip(ours, torchs):
        assert torch.equal(mine, reference)


def test_muon_in_fp32_orthogonalises_in_fp32():
    for shape in SHAPES:
        matrix = torch.randn(shape, generator=torch.Generator().manual_seed(1))
        in_fp32 = orthogonalize(matrix, *NS, torch.float32)
        in_fp64 = orthogonalize(matrix.double(), *NS, torch.float64)
        in_bf16 = orthogonalize(matrix, *NS, torch.bfloat16)
        assert in_fp32.dtype == torch.float32 and in_fp32.shape == matrix.shape
        assert (in_fp32.double() - in_fp64).abs().max() < 1e-5  # fp32 rounding only
        assert (in_bf16.double() - in_fp64).abs().max() > 1e-3  # bf16 would not pass the line above
        singular_values = torch.linalg.svdvals(in_fp64)
        assert singular_values.min() > 0.5 and singular_values.max() < 1.5  # near-orthogonal


def test_muon_steps_agree_across_orthogonalisation_dtypes():
    in_fp32 = _train_three_steps(Muon, 0.1, True, orthogonalize_dtype=torch.float32)
    in_bf16 = _train_three_steps(Muon, 0.1, True, orthogonalize_dtype=torch.bfloat16)
    for a, b in zip(in_fp32, in_bf16):
        assert not torch.equal(a, b) and torch.allclose(a, b, atol=0.02)


def test_bf16_orthogonalisation_only_where_bf16_matrix_units_are(monkeypatch):
    import nashcli.engine.precision as precision

    monkeypatch.setattr(precision, "cpu_has_bf16_matrix_units", lambda: False)  # an AVX2-only CPU
    assert orthogonalize_dtype(torch.device("cpu")) == torch.float32
    monkeypatch.setattr(precision, "cpu_has_bf16_matrix_units", lambda: True)
    assert orthogonalize_dtype(torch.device("cpu")) == torch.bfloat16
    assert orthogonalize_dtype(torch.device("meta")) == torch.float32
