import math

import pytest
import torch

from languini.config import TrainConfig, train_config
from languini.errors import UserError
from languini.family import load_family
from languini.step import lr_at, make_optimizer


def languini_cosine_lr(step: int, warmup: int, max_lr: float, min_lr: float, max_steps: int) -> float:
    """Languini Kitchen's CosineLR (train_lib/lr_schedules.py, decay_after=False) for the
    optimizer step `step` (0-based): its counter is at step + 1 then, having stepped once at
    construction; a cosine over min(t, max_steps)/max_steps times the ramp min(t, warmup)/warmup."""
    t = step + 1
    cosine = min_lr + (1 + math.cos(math.pi * min(t, max_steps) / max_steps)) * 0.5 * (max_lr - min_lr)
    return min(t, warmup) / warmup * cosine


def test_schedule_is_languinis_and_ends_at_the_floor_on_the_last_step():
    cfg = TrainConfig(lr=6e-4, warmup_steps=200, min_lr_ratio=0.01)
    total = 18_265  # GPT small's steps in the 6-hour class at batch 128
    lrs = [lr_at(s, total, cfg) for s in range(total)]
    assert lrs == pytest.approx([languini_cosine_lr(s, 200, 6e-4, 6e-6, total) for s in range(total)], rel=1e-12)
    assert lrs[0] == pytest.approx(6e-4 / 200, rel=1e-4)
    assert lrs[-1] == pytest.approx(6e-6, rel=1e-12)
    assert all(a >= b for a, b in zip(lrs[199:], lrs[200:]))


def test_short_runs_cap_the_warmup():
    cfg = TrainConfig(lr=1.0, warmup_steps=1000)
    assert lr_at(4, 50, cfg) == pytest.approx(languini_cosine_lr(4, 5, 1.0, 0.1, 50))  # a tenth of 50 steps
    assert lr_at(0, 50, TrainConfig(lr=1.0, warmup_steps=0)) == pytest.approx(languini_cosine_lr(0, 1, 1.0, 0.1, 50))


def test_languini_sizes_train_with_adam_without_decay_or_clipping():
    fam = load_family("gpt")
    cfg, train = fam.config("mini", vocab_size=64)
    tcfg = train_config(train, {})
    with torch.device("meta"):
        opt = make_optimizer(fam.build(cfg), tcfg)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 0.0]  # AdamW without decay is Adam
    assert all(g["eps"] == 1e-8 and g["betas"] == (0.9, 0.95) for g in opt.param_groups)
    assert tcfg.grad_clip == 0.0


def test_batch_must_divide_into_micro_batches():
    with pytest.raises(UserError, match="multiple"):
        TrainConfig(batch_size=10, micro_batch_size=3).micro()
    assert TrainConfig(batch_size=12, micro_batch_size=3).micro() == 3


def test_unknown_training_keys_are_errors():
    with pytest.raises(UserError, match="momentum"):
        train_config({"momentum": 0.9}, {})


def test_adamw_without_decay_steps_as_languinis_adam():
    """projects/*/main.py: torch.optim.Adam(lr, betas=(0.9, 0.95), eps=1e-08); ours is AdamW with
    weight_decay 0 from the size's recipe. Same gradients, same parameters after every step."""
    fam = load_family("qlstm")
    cfg, train = fam.config("nano", vocab_size=64)
    tcfg = train_config(train, {"weight_decay": 0.0, "grad_clip": 0.0})
    torch.manual_seed(0)
    ours = fam.build(cfg)
    theirs = fam.build(cfg)
    theirs.load_state_dict(ours.state_dict())
    opts = make_optimizer(ours, tcfg), torch.optim.Adam(theirs.parameters(), lr=tcfg.lr, betas=(0.9, 0.95), eps=1e-8)
    x = torch.randint(0, 64, (2, 33), generator=torch.Generator().manual_seed(1))
    for _ in range(3):
        for model, opt in zip((ours, theirs), opts):
            logits, _ = model(x[:, :-1])
            opt.zero_grad()
            torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten()).backward()
            opt.step()
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters()))
