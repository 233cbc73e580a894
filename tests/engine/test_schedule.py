import math

import pytest

from nashcli.config import TrainConfig
from nashcli.engine.schedule import learning_rate_at


@pytest.fixture
def train_config():
    return TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=110)


def test_warmup_rises_linearly_from_lr_over_warmup_steps(train_config):
    assert learning_rate_at(0, train_config) == pytest.approx(1e-4)
    assert learning_rate_at(4, train_config) == pytest.approx(5e-4)
    assert learning_rate_at(9, train_config) == pytest.approx(1e-3)


def test_cosine_decays_from_lr_to_min_lr_and_stays_there(train_config):
    assert learning_rate_at(10, train_config) == pytest.approx(1e-3)
    assert learning_rate_at(60, train_config) == pytest.approx(1e-4 + 0.5 * 9e-4)  # half way: cos = 0
    assert learning_rate_at(110, train_config) == pytest.approx(1e-4)
    assert learning_rate_at(500, train_config) == pytest.approx(1e-4)
    values = [learning_rate_at(step, train_config) for step in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_no_warmup_and_warmup_to_the_end_are_valid():
    assert learning_rate_at(0, TrainConfig(lr=1.0, min_lr=0.0, warmup_steps=0, max_steps=4)) == 1.0
    assert learning_rate_at(3, TrainConfig(lr=1.0, min_lr=0.0, warmup_steps=0, max_steps=4)) == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 3 / 4))
    )
    assert learning_rate_at(7, TrainConfig(lr=1.0, min_lr=0.0, warmup_steps=8, max_steps=8)) == 1.0
