"""The qLSTM Triton kernels on CUDA against the reference loop, fp32 and half precision.

Tolerances. fp32: atol 1e-4, rtol 1e-3 (the kernel's exp is the hardware approximation,
whose error compounds over 512 steps; a wrong kernel is off by O(1)). Half precision: both
sides read the same 16-bit pre-activations and compute in fp32, so they differ by the final
rounding: h and d_pre within two units of the last place (bf16 atol = rtol = 2e-2, fp16
2e-3); c_last and d_c0 are fp32 and keep the fp32 tolerance.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from baselines.qlstm import reference, scan
from baselines.qlstm.model import QLSTM, QLSTMConfig

pytestmark = pytest.mark.gpu

FP32 = dict(atol=1e-4, rtol=1e-3)
HALF = {torch.bfloat16: dict(atol=2e-2, rtol=2e-2), torch.float16: dict(atol=2e-3, rtol=2e-3)}
SHAPES = list(itertools.product((1, 3), (1, 7, 63, 130, 512), (1, 500, 1024)))


def triton_scan(pre, c0=None):
    from baselines.qlstm import kernels

    return kernels.qlstm_scan(pre, c0)


def inputs(B: int, T: int, C: int, dtype=torch.float32, seed: int = 0):
    """16-bit or fp32 pre-activations and upstream gradient of h; fp32 state and its gradient."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    pre = (torch.randn(B, T, 4, C, generator=g, device="cuda") * 2).to(dtype).requires_grad_()
    c0 = torch.randn(B, C, generator=g, device="cuda").requires_grad_()
    dh = torch.randn(B, T, C, generator=g, device="cuda").to(dtype)
    dc = torch.randn(B, C, generator=g, device="cuda")
    return pre, c0, dh, dc


def run(fn, pre, c0, dh, dc):
    h, c_last = fn(pre, c0)
    d_pre, d_c0 = torch.autograd.grad((h.float() * dh.float()).sum() + (c_last * dc).sum(), (pre, c0))
    return h, c_last, d_pre, d_c0


def assert_close_all(got, want, half_tol=None) -> None:
    for name, a, b in zip(("h", "c_last", "d_pre", "d_c0"), got, want):
        assert a.dtype == b.dtype, name
        tol = half_tol if half_tol is not None and name in ("h", "d_pre") else FP32
        torch.testing.assert_close(a, b, **tol, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("B,T,C", SHAPES)
def test_kernel_matches_reference_fp32(B, T, C):
    args = inputs(B, T, C)
    assert_close_all(run(triton_scan, *args), run(reference.qlstm_scan, *args))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("B,T,C", [(3, 512, 1024), (1, 130, 500), (3, 7, 1)])
def test_kernel_matches_reference_half(B, T, C, dtype):
    args = inputs(B, T, C, dtype)
    got, want = run(triton_scan, *args), run(reference.qlstm_scan, *args)
    assert got[0].dtype == dtype and got[1].dtype == torch.float32
    assert_close_all(got, want, HALF[dtype])


@pytest.mark.parametrize("B,T,C", [(3, 512, 1024), (2, 130, 500)])
def test_block_matches_reference_on_cuda(B, T, C):
    args = inputs(B, T, C)
    assert_close_all(run(scan.qlstm_scan, *args), run(reference.qlstm_scan, *args))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_kernel_chunks_chain(dtype):
    pre, c0, dh, dc = inputs(2, 300, 768, dtype)
    whole = run(triton_scan, pre, c0, dh, dc)
    h1, c1 = triton_scan(pre[:, :170], c0)
    h2, c2 = triton_scan(pre[:, 170:], c1)
    h = torch.cat([h1, h2], dim=1)
    loss = (h.float() * dh.float()).sum() + (c2 * dc).sum()
    chained = (h, c2, *torch.autograd.grad(loss, (pre, c0)))
    assert_close_all(chained, whole, HALF.get(dtype))


def small_model(scan_name: str) -> QLSTM:
    torch.manual_seed(0)
    cfg = QLSTMConfig(vocab_size=512, seq_len=64, n_layer=2, d_model=256, n_head=4, scan=scan_name)
    return QLSTM(cfg).cuda()


def test_model_picks_triton_and_matches_block_under_autocast():
    x = torch.randint(0, 512, (4, 64), device="cuda")
    assert small_model("auto").scan_impl == "triton"
    out = {}
    for name in ("triton", "block"):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits, state = small_model(name)(x)
        assert all(c.dtype == torch.float32 for c in state)
        out[name] = logits.float()
    torch.testing.assert_close(out["triton"], out["block"], atol=5e-2, rtol=5e-2)


def test_model_state_carries_across_chunks():
    m, x = small_model("triton"), torch.randint(0, 512, (2, 64), device="cuda")
    whole, _ = m(x)
    first, state = m(x[:, :40])
    second, _ = m(x[:, 40:], [c.detach() for c in state])
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, **FP32)


def test_model_compiles_around_the_kernel():
    m, x = small_model("triton"), torch.randint(0, 512, (2, 64), device="cuda")
    eager, _ = m(x)
    compiled, _ = torch.compile(m)(x)
    torch.testing.assert_close(compiled, eager, **FP32)
