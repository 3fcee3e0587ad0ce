import math

import numpy as np
import pytest
import torch

from languini.evaluate import TokenScores, rolling_windows, score_unigram, score_windows
from languini.family import load_family


@pytest.mark.parametrize("n,seq_len,stride", [(10, 16, 4), (17, 16, 4), (100, 16, 4), (100, 16, 16), (101, 8, 3)])
def test_windows_score_every_target_once_with_enough_context(n, seq_len, stride):
    scored = []
    for start, scored_from, end in rolling_windows(n, seq_len, stride):
        assert end - 1 - start == min(seq_len, n - 1)
        for target in range(scored_from, end):
            scored.append(target)
            if start > 0:
                assert target - 1 - start >= seq_len - stride  # at least seq_len − stride tokens of context
    assert sorted(scored) == list(range(1, n))


def test_sliding_windows_match_a_direct_forward_pass():
    fam = load_family("gpt")
    cfg, _ = fam.config("nano", vocab_size=40, seq_len=16)
    torch.manual_seed(0)
    model = fam.build(cfg).eval()
    tokens = np.random.default_rng(0).integers(0, 40, 70).astype(np.uint16)
    scores = score_windows(model, tokens, seq_len=16, stride=16, batch_size=3, dev=torch.device("cpu"))
    # stride == seq_len: windows are disjoint chunks [0,16), [16,32)... predicting their next tokens
    t = torch.from_numpy(tokens.astype(np.int64))
    with torch.no_grad():
        logits, _ = model(t[:16].view(1, -1))
    direct = torch.nn.functional.cross_entropy(logits[0], t[1:17], reduction="none").numpy()
    assert np.allclose(scores.nll[:16], direct, atol=1e-5)
    assert np.isfinite(scores.nll).all() and len(scores.nll) == 69


def test_unigram_scores_by_hand():
    counts = np.array([3, 1, 0])  # add-one: p = [4, 2, 1] / 7
    scores = score_unigram(counts, np.array([0, 0, 1, 2]))
    assert np.allclose(scores.nll, [-math.log(4 / 7), -math.log(2 / 7), -math.log(1 / 7)])
    assert isinstance(scores, TokenScores) and scores.correct is None


def test_streams_carry_the_state_like_one_long_pass():
    from languini.evaluate import score_streams

    fam = load_family("qlstm")
    cfg, _ = fam.config("nano", vocab_size=40, seq_len=16)
    torch.manual_seed(0)
    model = fam.build(cfg).eval()
    tokens = np.random.default_rng(1).integers(0, 40, 70).astype(np.uint16)
    scores = score_streams(model, tokens, seq_len=16, streams=1, dev=torch.device("cpu"))
    t = torch.from_numpy(tokens.astype(np.int64))
    with torch.no_grad():
        logits, _ = model(t[:-1].view(1, -1))  # one pass over all 69 inputs
    direct = torch.nn.functional.cross_entropy(logits[0], t[1:], reduction="none").numpy()
    assert np.allclose(scores.nll, direct, atol=1e-5)
    # several streams still score every target exactly once
    assert len(score_streams(model, tokens, 16, 4, torch.device("cpu")).nll) == 69
