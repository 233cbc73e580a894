import pytest
import torch
from torch import nn

from nashcli.config import ModelConfig, TrainConfig
from nashcli.engine.muon import Muon
from nashcli.engine.optim import build_optimizer, parameter_groups, set_learning_rate
from nashcli.engine.schedule import learning_rate_at
from nashcli.errors import NashError
from nashcli.model.gpt import GPT


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
    assert optimizer.name == "adamw" and list(optimizer.parts) == ["adamw"]
    adamw = optimizer.parts["adamw"]
    assert isinstance(adamw, torch.optim.AdamW)
    assert adamw.defaults["fused"] is True and adamw.defaults["betas"] == (0.8, 0.9)
    set_learning_rate(optimizer, [5e-4, 2e-4])
    assert [group["lr"] for group in optimizer.param_groups] == [5e-4, 2e-4]


def small_gpt(**options) -> GPT:
    return GPT(ModelConfig(n_layers=2, n_heads=2, d_model=16, d_ff=32, max_seq_len=8, vocab_size=100, **options))


MUON = {"name": "muon", "lr": 0.03, "embedding_lr": 0.2, "head_lr": 0.004}


@pytest.mark.parametrize("tied", [True, False])
def test_muon_takes_the_block_matrices_and_adamw_the_rest_each_group_at_its_own_lr(tied):
    model = small_gpt(tie_embeddings=tied)
    train = TrainConfig(lr=1e-3, min_lr=1e-4, weight_decay=0.1, optimizer=MUON)
    optimizer = build_optimizer(model, train, torch.device("cpu"))
    assert list(optimizer.parts) == ["muon", "adamw"] and optimizer.name == "muon"
    muon, adamw = optimizer.parts["muon"], optimizer.parts["adamw"]
    assert isinstance(muon, Muon) and muon.param_groups[0]["lr"] == 0.03
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    muon_names = sorted(names[id(p)] for group in muon.param_groups for p in group["params"])
    assert muon_names == sorted(
        f"blocks.{layer}.{matrix}.weight"
        for layer in range(2)
        for matrix in ("attention.qkv", "attention.out_proj", "mlp.up", "mlp.down")
    )
    groups = {tuple(sorted(names[id(p)] for p in group["params"])): group for group in adamw.param_groups}
    embeddings = groups.pop(("position_embedding.weight", "token_embedding.weight"))
    assert (embeddings["lr"], embeddings["weight_decay"]) == (0.2, 0.0)
    if not tied:  # an untied head is 2-D but not a block matrix: AdamW, at head_lr, decayed
        head = groups.pop(("lm_head",))
        assert (head["lr"], head["weight_decay"]) == (0.004, 0.1)
    [vectors] = groups.values()
    assert (vectors["lr"], vectors["weight_decay"]) == (1e-3, 0.0)
    assert all(name.endswith(("bias", "norm.weight")) for name in next(iter(groups)))
    every = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert sorted(every) == sorted(id(p) for p in model.parameters())  # each parameter once

    # The schedule scales each group's own base lr: the same multiplier for all, here at warmup and at the end.
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    for step, multiplier in ((0, 1 / 700), (train.max_steps, 0.1)):
        set_learning_rate(optimizer, [learning_rate_at(step, train, base) for base in base_lrs])
        got = [group["lr"] / base for group, base in zip(optimizer.param_groups, base_lrs)]
        assert got == pytest.approx([multiplier] * len(base_lrs), rel=1e-12)


def test_a_saved_state_loads_only_into_the_same_optimizer():
    model = small_gpt(tie_embeddings=False)
    adamw = build_optimizer(model, TrainConfig(), torch.device("cpu"))
    muon = build_optimizer(model, TrainConfig(optimizer=MUON), torch.device("cpu"))
    model(torch.zeros(1, 4, dtype=torch.long)).sum().backward()
    for optimizer in (adamw, muon):
        optimizer.step(torch.amp.GradScaler("cpu", enabled=False))
    with pytest.raises(NashError, match="saved by train.optimizer.name=adamw and this run uses muon: resume with --set train.optimizer.name=adamw"):
        muon.load_state_dict(adamw.state_dict())
    with pytest.raises(NashError, match="saved by train.optimizer.name=muon and this run uses adamw"):
        adamw.load_state_dict(muon.state_dict())
    saved = muon.state_dict()
    saved["muon"]["state"][0]["momentum_buffer"] = torch.zeros(3)
    with pytest.raises(NashError, match="the muon optimizer state does not fit .* \\(momentum_buffer of parameter 0 is a torch.float32 tensor of shape"):
        muon.load_state_dict(saved)
    before = {key: value.clone() for key, value in adamw.parts["adamw"].state_dict()["state"][0].items()}
    adamw.load_state_dict(adamw.parts["adamw"].state_dict())  # a checkpoint from before the choice: AdamW alone
    after = adamw.parts["adamw"].state_dict()["state"][0]
    assert all(torch.equal(before[key], after[key]) for key in before)
