import math

import pytest

from nashcli.config import TrainConfig
from nashcli.engine.schedule import budget_fraction_used, learning_rate_at, run_is_over


@pytest.fixture
def train_config():
    return TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=110)


@pytest.fixture
def wsd_config():
    return TrainConfig(lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=110, schedule="wsd", decay_fraction=0.2)


def lr(step, train, budget_fraction=None):
    return learning_rate_at(step, train, train.lr, budget_fraction)


def test_warmup_rises_linearly_from_lr_over_warmup_steps(train_config):
    assert lr(0, train_config) == pytest.approx(1e-4)
    assert lr(4, train_config) == pytest.approx(5e-4)
    assert lr(9, train_config) == pytest.approx(1e-3)


def test_cosine_decays_from_lr_to_min_lr_and_stays_there(train_config):
    assert lr(10, train_config) == 1e-3
    assert lr(60, train_config) == 1e-4 + 0.5 * (1e-3 - 1e-4)  # half way: cos = 0
    assert lr(110, train_config) == 1e-4
    assert lr(500, train_config) == 1e-4
    values = [lr(step, train_config) for step in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_no_warmup_and_warmup_to_the_end_are_valid():
    assert lr(0, TrainConfig(lr=1.0, min_lr=0.0, warmup_steps=0, max_steps=4)) == 1.0
    assert lr(3, TrainConfig(lr=1.0, min_lr=0.0, warmup_steps=0, max_steps=4)) == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 3 / 4))
    )
    assert lr(7, TrainConfig(lr=1.0, min_lr=0.0, warmup_steps=8, max_steps=8)) == 1.0


def test_wsd_warms_up_holds_lr_then_decays_linearly_over_the_last_fraction(wsd_config):
    assert [lr(step, wsd_config) for step in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert {lr(step, wsd_config) for step in range(10, 89)} == {1.0}  # decay starts at 0.8 x 110 = step 88
    assert lr(99, wsd_config) == pytest.approx(0.55, rel=1e-12)  # half way through the decay
    assert lr(110, wsd_config) == pytest.approx(0.1, rel=1e-12)
    assert lr(500, wsd_config) == pytest.approx(0.1, rel=1e-12)
    values = [lr(step, wsd_config) for step in range(88, 111)]
    assert all(a > b for a, b in zip(values, values[1:]))


def test_every_param_group_gets_the_schedule_scaled_to_its_own_base_lr(wsd_config, train_config):
    for train in (wsd_config, train_config):
        for step in (0, 5, 60, 99, 500):
            own = learning_rate_at(step, train, 20 * train.lr)
            assert own == pytest.approx(20 * lr(step, train), rel=1e-12)


def test_under_a_budget_the_decay_follows_the_fraction_used_and_warmup_stays_in_steps(wsd_config, train_config):
    assert lr(0, wsd_config, budget_fraction=0.9) == pytest.approx(0.1)  # still warming up
    assert lr(50, wsd_config, budget_fraction=0.5) == 1.0
    assert lr(50, wsd_config, budget_fraction=0.9) == pytest.approx(0.55, rel=1e-12)
    assert lr(50, wsd_config, budget_fraction=1.3) == pytest.approx(0.1, rel=1e-12)
    assert lr(10, train_config, budget_fraction=0.5) == 1e-4 + 0.5 * (1e-3 - 1e-4)
    assert lr(10, train_config, budget_fraction=1.0) == 1e-4


def test_a_run_is_over_at_max_steps_or_at_its_time_budget():
    budgeted = TrainConfig(max_minutes=2.0, max_steps=1000, warmup_steps=10)
    assert budget_fraction_used(60.0, budgeted) == 0.5
    assert budget_fraction_used(60.0, TrainConfig()) is None
    assert not run_is_over(999, 0.99, budgeted)
    assert run_is_over(999, 1.0, budgeted) and run_is_over(1000, 0.5, budgeted)
    assert not run_is_over(999, None, TrainConfig(max_steps=1000, warmup_steps=10))


@pytest.mark.parametrize(
    "settings", [{"decay_fraction": 0.0}, {"decay_fraction": 1.5}, {"max_minutes": 0.0}, {"max_minutes": math.inf}]
)
def test_a_decay_fraction_outside_0_to_1_and_a_budget_that_is_not_positive_are_refused(settings):
    with pytest.raises(ValueError, match=next(iter(settings))):
        TrainConfig(**settings)
