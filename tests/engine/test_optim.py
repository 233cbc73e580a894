import torch
from torch import nn

from nashcli.config import TrainConfig
from nashcli.engine.optim import build_optimizer, parameter_groups, set_learning_rate


class TiedToy(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(10, 4)
        self.norm = nn.LayerNorm(4)
        self.linear = nn.Linear(4, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embedding.weight


def test_only_non_embedding_matrices_are_decayed():
    model = TiedToy()
    decayed, undecayed = parameter_groups(model, weight_decay=0.1)
    assert decayed["weight_decay"] == 0.1 and undecayed["weight_decay"] == 0.0
    assert [id(p) for p in decayed["params"]] == [id(model.linear.weight)]
    expected = {id(model.embedding.weight), id(model.norm.weight), id(model.norm.bias), id(model.linear.bias)}
    assert {id(p) for p in undecayed["params"]} == expected
    assert len(undecayed["params"]) == 4  # the tied head weight is not listed twice


def test_cpu_optimizer_is_fused_adamw_and_lr_can_be_set():
    optimizer = build_optimizer(TiedToy(), TrainConfig(lr=1e-3, min_lr=0.0, betas=(0.8, 0.9)), torch.device("cpu"))
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["fused"] is True and optimizer.defaults["betas"] == (0.8, 0.9)
    set_learning_rate(optimizer, [5e-4, 2e-4])
    assert [group["lr"] for group in optimizer.param_groups] == [5e-4, 2e-4]
