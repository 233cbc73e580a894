"""The optimizer settings of `train.optimizer`: one class per optimizer, chosen by `name`."""

from typing import Annotated, Literal, Optional, Union

from pydantic import Field

from nashcli.config.strict import StrictModel


class AdamWSettings(StrictModel):
    """AdamW on every parameter, with train.lr, train.betas and train.weight_decay (GPT-2's recipe)."""

    name: Literal["adamw"] = "adamw"


class MuonSettings(StrictModel):
    """Muon for the 2-D weight matrices inside the blocks; AdamW (train.lr, train.betas,
    train.weight_decay) for the embeddings, the head, norms and biases."""

    name: Literal["muon"] = "muon"
    lr: Annotated[
        float,
        Field(gt=0.0, le=10.0, description="Muon's peak learning rate (scaled per matrix to match AdamW's update size)."),
    ] = 0.02
    momentum: Annotated[float, Field(ge=0.0, lt=1.0, description="Muon's momentum.")] = 0.95
    nesterov: Annotated[bool, Field(description="Nesterov momentum in Muon.")] = True
    weight_decay: Annotated[float, Field(ge=0.0, le=10.0, description="Decoupled weight decay of the Muon matrices.")] = 0.0
    ns_steps: Annotated[
        int, Field(ge=1, le=20, description="Newton-Schulz iterations that orthogonalise each update.")
    ] = 5
    embedding_lr: Annotated[
        Optional[float],
        Field(gt=0.0, le=10.0, description="AdamW learning rate of the token and position embeddings (default: train.lr)."),
    ] = None
    head_lr: Annotated[
        Optional[float],
        Field(gt=0.0, le=10.0, description="AdamW learning rate of an untied LM head (default: train.lr)."),
    ] = None


OptimizerSettings = Annotated[Union[AdamWSettings, MuonSettings], Field(discriminator="name")]
