"""The fast qLSTM recurrences against the reference loop: outputs, final state, gradients.

Tolerances (fp32): atol 1e-5, rtol 1e-4 on h, c_last and the gradients of pre and c0. The
Triton kernels run under the interpreter here (tests/conftest.py sets TRITON_INTERPRET),
which is slow per scanned element, so they get a parametrisation that covers every size
of interest (T 1, 7, 63, 130; channels 1, 500, 1024; batch 1, 3) without the full product;
the block-parallel scan gets the full product.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from baselines.qlstm import reference, scan

TOL = dict(atol=1e-5, rtol=1e-4)
KERNEL_SHAPES = [(1, 1, 1024), (3, 7, 500), (3, 63, 1), (1, 130, 20)]  # (batch, time, channels)
ALL_SHAPES = list(itertools.product((1, 3), (1, 7, 63, 130), (1, 500, 1024)))


def triton_scan(pre, c0=None):
    from baselines.qlstm import kernels

    return kernels.qlstm_scan(pre, c0)


def inputs(B: int, T: int, C: int, dtype=torch.float32, scale: float = 2.0, seed: int = 0):
    """Pre-activations wide enough to reach the gates' saturated regions, a random state,
    and random upstream gradients for h and c_last."""
    g = torch.Generator().manual_seed(seed)
    pre = (torch.randn(B, T, 4, C, generator=g) * scale).to(dtype).requires_grad_()
    c0 = torch.randn(B, C, generator=g).to(dtype).requires_grad_()
    dh = torch.randn(B, T, C, generator=g).to(dtype)
    dc = torch.randn(B, C, generator=g).to(dtype)
    return pre, c0, dh, dc


def run(fn, pre, c0, dh, dc):
    """h, c_last and the gradients of pre and c0 for the loss <h, dh> + <c_last, dc>."""
    h, c_last = fn(pre, c0)
    d_pre, d_c0 = torch.autograd.grad((h * dh).sum() + (c_last * dc).sum(), (pre, c0))
    return h, c_last, d_pre, d_c0


def assert_matches_reference(fn, B: int, T: int, C: int, **kw) -> None:
    args = inputs(B, T, C, **kw)
    got, want = run(fn, *args), run(reference.qlstm_scan, *args)
    for name, a, b in zip(("h", "c_last", "d_pre", "d_c0"), got, want):
        assert a.dtype == b.dtype, name
        torch.testing.assert_close(a, b, **TOL, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("B,T,C", ALL_SHAPES)
def test_block_matches_reference(B, T, C):
    assert_matches_reference(scan.qlstm_scan, B, T, C)


@pytest.mark.parametrize("B,T,C", KERNEL_SHAPES)
def test_kernel_matches_reference(B, T, C):
    assert_matches_reference(triton_scan, B, T, C)


@pytest.mark.filterwarnings("ignore:overflow encountered in exp")  # the interpreter's σ(-60)
@pytest.mark.parametrize("fn", [scan.qlstm_scan, triton_scan], ids=["block", "triton"])
def test_saturated_gates_stay_finite(fn):
    """Forget gates of exactly 0 and 1 (pre-activations of ±60) must not give inf or NaN."""
    assert_matches_reference(fn, 2, 40, 8, scale=60.0)


@pytest.mark.parametrize(
    "fn", [reference.qlstm_scan, scan.qlstm_scan, triton_scan], ids=["reference", "block", "triton"]
)
def test_two_chunks_chain_like_one_sequence(fn):
    """Running halves with the state carried equals one pass, gradients through the seam too."""
    pre, c0, dh, dc = inputs(2, 45, 24)
    whole = run(fn, pre, c0, dh, dc)

    h1, c1 = fn(pre[:, :20], c0)
    h2, c2 = fn(pre[:, 20:], c1)
    h = torch.cat([h1, h2], dim=1)
    loss = (h * dh).sum() + (c2 * dc).sum()
    chained = (h, c2, *torch.autograd.grad(loss, (pre, c0)))
    for name, a, b in zip(("h", "c_last", "d_pre", "d_c0"), chained, whole):
        torch.testing.assert_close(a, b, **TOL, msg=lambda m: f"{name}: {m}")


def test_missing_state_means_zeros():
    pre, c0, _, _ = inputs(2, 9, 6)
    zeros = torch.zeros_like(c0)
    for fn in (reference.qlstm_scan, scan.qlstm_scan, triton_scan):
        torch.testing.assert_close(fn(pre, None), fn(pre, zeros), **TOL)


@pytest.mark.parametrize(
    "fn",
    [reference.qlstm_scan, lambda pre, c0: scan.qlstm_scan(pre, c0, block_len=4)],
    ids=["reference", "block"],
)
def test_gradcheck_float64(fn):
    """Exact gradients of the two autograd paths; T = 11 spans three blocks of 4 and padding."""
    pre, c0, _, _ = inputs(2, 11, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(fn, (pre, c0))
