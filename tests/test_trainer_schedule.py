import pytest

from languini.config import TrainConfig, train_config
from languini.errors import UserError
from languini.trainer import lr_at


def test_schedule_warms_up_then_ends_at_the_floor_on_the_last_step():
    cfg = TrainConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    total = 200
    lrs = [lr_at(s, total, cfg) for s in range(total)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert max(lrs) == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.1)
    assert all(a >= b - 1e-12 for a, b in zip(lrs[9:], lrs[10:]))


def test_short_runs_cap_the_warmup():
    cfg = TrainConfig(lr=1.0, warmup_steps=1000)
    assert lr_at(4, 50, cfg) == pytest.approx(1.0)  # warm-up capped at a tenth of 50 steps


def test_batch_must_divide_into_micro_batches():
    with pytest.raises(UserError, match="multiple"):
        TrainConfig(batch_size=10, micro_batch_size=3).micro()
    assert TrainConfig(batch_size=12, micro_batch_size=3).micro() == 3


def test_unknown_training_keys_are_errors():
    with pytest.raises(UserError, match="momentum"):
        train_config({"momentum": 0.9}, {})
