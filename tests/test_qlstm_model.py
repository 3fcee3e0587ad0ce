"""The qLSTM model: shapes, carried state, the three scans agreeing, learning, accounting."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from baselines.qlstm.model import QLSTM, QLSTMConfig, pick_scan
from languini.errors import UserError
from languini.family import load_family
from test_gpt import LANGUINI_RECIPE, LANGUINI_SIZES

SMALL = QLSTMConfig(vocab_size=50, seq_len=16, n_layer=2, d_model=32, n_head=2)
SCANS = ("reference", "block", "triton")


def model(scan: str = "auto", seed: int = 0, **overrides) -> QLSTM:
    torch.manual_seed(seed)
    return QLSTM(dataclasses.replace(SMALL, scan=scan, **overrides)).eval()


def tokens(B: int, T: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, SMALL.vocab_size, (B, T), generator=torch.Generator().manual_seed(seed))


def test_forward_shapes_and_state():
    m = model()
    logits, state = m(tokens(3, 10))
    assert logits.shape == (3, 10, SMALL.vocab_size)
    assert len(state) == SMALL.n_layer
    assert all(c.shape == (3, SMALL.d_model) and c.dtype == torch.float32 for c in state)


@pytest.mark.parametrize("scan", SCANS)
def test_state_carried_across_chunks_equals_one_pass(scan):
    m, x = model(scan), tokens(2, 24)
    whole, state_whole = m(x)
    first, state = m(x[:, :9])
    second, state = m(x[:, 9:], [c.detach() for c in state])
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(state, state_whole, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("scan", ["block", "triton"])
def test_scans_give_the_same_model(scan):
    """Same weights, same logits and parameter gradients, whichever recurrence runs."""
    x = tokens(2, 20)
    results = []
    for name in ("reference", scan):
        m = model(name)
        logits, _ = m(x)
        F.cross_entropy(logits.flatten(0, 1), x.flatten()).backward()
        results.append((logits, [p.grad for p in m.parameters()]))
    (l1, g1), (l2, g2) = results
    torch.testing.assert_close(l2, l1, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(g2, g1, atol=1e-5, rtol=1e-4)


def test_loss_decreases_on_a_repeated_sequence():
    m = model("block").train()
    x = tokens(4, 16).repeat(1, 2)  # each row repeats itself: learnable by carrying state
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        logits, _ = m(x[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_num_params_and_flops():
    m, c = model(), SMALL
    d, V, L = c.d_model, c.vocab_size, c.n_layer
    # per layer: gates 4d²+4d, out proj d²+d, MLP 8d²+5d, two LayerNorms 4d
    per_layer = 13 * d * d + 14 * d
    assert m.num_params() == V * d + L * per_layer + 2 * d + d * V
    assert m.flops_per_token(16) == 6 * (m.num_params() - V * d) + 30 * L * d
    assert m.flops_per_token(16) == m.flops_per_token(4096)  # no attention: no seq_len term


def test_sizes_match_languini_and_gpt():
    qlstm, gpt = load_family("qlstm"), load_family("gpt")
    assert qlstm.stateful and not gpt.stateful
    for size, (n_layer, d_model, n_head, head_dim) in LANGUINI_SIZES.items():  # projects/lstm/configs.py too
        cfg, train = qlstm.config(size)
        assert (cfg.n_layer, cfg.d_model, cfg.n_head, cfg.head_dim, cfg.vocab_size, cfg.seq_len) == (
            n_layer, d_model, n_head, head_dim, 16384, 512)
        assert train == gpt.config(size)[1]  # projects/lstm/main.py trains as projects/gpt/main.py does
        assert {k: train[k] for k in LANGUINI_RECIPE} == LANGUINI_RECIPE
    for size in ("nano", "micro"):
        cfg, train = qlstm.config(size)
        assert train["batch_size"] == 16 and train["lr"] == 3e-3
        m = qlstm.build(cfg)
        gpt_m = gpt.build(gpt.config(size)[0])
        assert 0.8 < m.num_params() / gpt_m.num_params() < 1.25


def test_scan_choice():
    assert pick_scan("auto", torch.device("cpu")) == "block"
    assert pick_scan("reference", torch.device("cpu")) == "reference"
    assert model().scan_impl == "block"
    with pytest.raises(UserError, match="Unknown qLSTM scan"):
        QLSTMConfig(scan="fast")
