"""The quasi-LSTM recurrence as Triton kernels (forward and backward).

Same interface as `reference.qlstm_scan`, the definition these kernels are tested against:
`qlstm_scan(pre (B, T, 4, C), c0 (B, C) fp32) -> (h (B, T, C) in pre's dtype, c_last fp32)`.

Design. The recurrence is elementwise, so it is memory-bound: the goal is to move each byte
once. One program owns BLOCK_C channels of one sequence and walks time in tiles of
BLOCK_T steps. A tile's four gate streams are loaded at once (BLOCK_T·BLOCK_C values each,
contiguous along channels), activated in registers, and the tile's states come from an
associative scan over time of the affine maps c -> f·c + u, continued from the state the
previous tile left. Loading whole tiles keeps many loads in flight, which a step-by-step
loop (one dependent step per memory latency) cannot.

Forward reads `pre` once and writes `h`, plus the state at the start of each tile
(`ckpt`, 1/BLOCK_T of a state per step, fp32). Nothing else is kept for backward: the
backward kernel walks the tiles from last to first, recomputes the activations and the
tile's states from its checkpoint, and runs the reverse scan for the state gradient
g_t = a_t + f_{t+1} g_{t+1}, where a_t = ∂L/∂h_t · o_t (1 − tanh² c_t) and g just after the
last step is the gradient flowing into `c_last`. Bytes per (step, channel), 2-byte inputs:
forward 8 in + 2 out, backward 8 + 2 in + 8 out; `min_bytes` counts them for benchmarks.

BLOCK_T is set by the sequence length, not autotuned: forward and backward must agree on the
checkpoint spacing, and short sequences (evaluation tails, tests) waste less on padding
with a shorter tile. BLOCK_C and the warp count are autotuned per channel count. The
interpreter (TRITON_INTERPRET=1) has no `tanh`, hence `_tanh` via the sigmoid, and runs
every autotune config for real, hence one config there.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from baselines.qlstm.reference import initial_state

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
CONFIGS = (
    [triton.Config({"BLOCK_C": 16}, num_warps=1)]
    if INTERPRET
    else [triton.Config({"BLOCK_C": bc}, num_warps=w) for bc in (32, 64, 128) for w in (2, 4, 8)]
)


@triton.jit
def _tanh(x):
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def _compose(f1, u1, f2, u2):
    """Apply c -> f1·c + u1, then c -> f2·c + u2 (also right to left in a reverse scan)."""
    return f1 * f2, f2 * u1 + u2


@triton.jit
def _load_gates(p, C, mask):
    """Activated f, i, z, o for a tile; `p` points at the forget pre-activations."""
    f = tl.sigmoid(tl.load(p, mask=mask, other=0.0).to(tl.float32))
    i = tl.sigmoid(tl.load(p + C, mask=mask, other=0.0).to(tl.float32))
    z = _tanh(tl.load(p + 2 * C, mask=mask, other=0.0).to(tl.float32))
    o = tl.sigmoid(tl.load(p + 3 * C, mask=mask, other=0.0).to(tl.float32))
    return f, i, z, o


@triton.jit
def _tile_states(f, u, c_start, mask):
    """States of a tile from the state before it; padded steps are identities (f=1, u=0)."""
    F, U = tl.associative_scan((tl.where(mask, f, 1.0), tl.where(mask, u, 0.0)), 0, _compose)
    return U + F * c_start[None, :]


@triton.autotune(configs=CONFIGS, key=["C"])
@triton.jit
def _forward_kernel(pre, c0, h, c_last, ckpt, T, C, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    b = tl.program_id(1).to(tl.int64)
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    rows = tl.arange(0, BLOCK_T)
    col_ok = cols < C
    n_tiles = tl.cdiv(T, BLOCK_T)
    pre_b, h_b, ckpt_b = pre + b * T * 4 * C, h + b * T * C, ckpt + b * n_tiles * C

    c = tl.load(c0 + b * C + cols, mask=col_ok, other=0.0)
    for k in range(0, n_tiles):
        tl.store(ckpt_b + k * C + cols, c, mask=col_ok)
        t = k * BLOCK_T + rows
        mask = (t < T)[:, None] & col_ok[None, :]
        f, i, z, o = _load_gates(pre_b + t[:, None] * 4 * C + cols[None, :], C, mask)
        cs = _tile_states(f, i * z, c, mask)
        tl.store(h_b + t[:, None] * C + cols[None, :], (o * _tanh(cs)).to(h.dtype.element_ty), mask=mask)
        c = tl.sum(tl.where(rows[:, None] == BLOCK_T - 1, cs, 0.0), axis=0)
    tl.store(c_last + b * C + cols, c, mask=col_ok)


@triton.autotune(configs=CONFIGS, key=["C"])
@triton.jit
def _backward_kernel(
    pre, ckpt, dh, dc_last, dpre, dc0, T, C, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr
):
    b = tl.program_id(1).to(tl.int64)
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    rows = tl.arange(0, BLOCK_T)
    col_ok = cols < C
    n_tiles = tl.cdiv(T, BLOCK_T)
    pre_b, dpre_b = pre + b * T * 4 * C, dpre + b * T * 4 * C
    dh_b, ckpt_b = dh + b * T * C, ckpt + b * n_tiles * C

    g = tl.load(dc_last + b * C + cols, mask=col_ok, other=0.0)  # ∂L/∂c just after the tile
    for j in range(0, n_tiles):
        k = n_tiles - 1 - j
        t = k * BLOCK_T + rows
        mask = (t < T)[:, None] & col_ok[None, :]
        offs = t[:, None] * 4 * C + cols[None, :]
        f, i, z, o = _load_gates(pre_b + offs, C, mask)
        u = i * z
        c = _tile_states(f, u, tl.load(ckpt_b + k * C + cols, mask=col_ok, other=0.0), mask)
        tc = _tanh(c)
        dh_t = tl.load(dh_b + t[:, None] * C + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        a = dh_t * o * (1.0 - tc * tc)
        # f_{t+1} carries g_{t+1} back to step t; after the last step (and on padding) it is 1.
        next_ok = (t + 1 < T)[:, None] & col_ok[None, :]
        pf_next = tl.load(pre_b + offs + 4 * C, mask=next_ok, other=0.0).to(tl.float32)
        f_next = tl.where(next_ok, tl.sigmoid(pf_next), 1.0)
        M, A = tl.associative_scan((f_next, a), 0, _compose, reverse=True)
        g_t = A + M * g[None, :]
        # ∂c_t/∂f̃_t = c_{t-1} f (1 − f) and f c_{t-1} = c_t − u: no shifted state needed.
        ty = dpre.dtype.element_ty
        tl.store(dpre_b + offs, (g_t * (c - u) * (1.0 - f)).to(ty), mask=mask)
        tl.store(dpre_b + offs + C, (g_t * z * i * (1.0 - i)).to(ty), mask=mask)
        tl.store(dpre_b + offs + 2 * C, (g_t * i * (1.0 - z * z)).to(ty), mask=mask)
        tl.store(dpre_b + offs + 3 * C, (dh_t * tc * o * (1.0 - o)).to(ty), mask=mask)
        g = tl.sum(tl.where(rows[:, None] == 0, g_t, 0.0), axis=0)
    f0 = tl.sigmoid(tl.load(pre_b + cols, mask=col_ok, other=0.0).to(tl.float32))
    tl.store(dc0 + b * C + cols, f0 * g, mask=col_ok)


def _block_t(T: int) -> int:
    return 16 if T <= 16 else 32


def _grid(B: int, C: int):
    return lambda meta: (triton.cdiv(C, meta["BLOCK_C"]), B)


class QLSTMScan(torch.autograd.Function):
    """Autograd wrapper: saves `pre` and the tile checkpoints, nothing per step."""

    @staticmethod
    def forward(ctx, pre: torch.Tensor, c0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pre, c0 = pre.contiguous(), c0.float().contiguous()
        B, T, _, C = pre.shape
        h = torch.empty(B, T, C, dtype=pre.dtype, device=pre.device)
        c_last = torch.empty_like(c0)
        block_t = _block_t(T)
        ckpt = torch.empty(B, triton.cdiv(T, block_t), C, dtype=torch.float32, device=pre.device)
        _forward_kernel[_grid(B, C)](pre, c0, h, c_last, ckpt, T, C, BLOCK_T=block_t)
        ctx.save_for_backward(pre, ckpt)
        ctx.block_t = block_t
        return h, c_last

    @staticmethod
    def backward(ctx, dh: torch.Tensor, dc_last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # An output that got no gradient arrives as zeros (autograd materialises them).
        pre, ckpt = ctx.saved_tensors
        B, T, _, C = pre.shape
        dh, dc_last = dh.contiguous(), dc_last.float().contiguous()
        dpre = torch.empty_like(pre)
        dc0 = torch.empty(B, C, dtype=torch.float32, device=pre.device)
        _backward_kernel[_grid(B, C)](pre, ckpt, dh, dc_last, dpre, dc0, T, C, BLOCK_T=ctx.block_t)
        return dpre, dc0


@torch.compiler.disable
def qlstm_scan(pre: torch.Tensor, c0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(pre (B, T, 4, C), c0 (B, C)) -> (h (B, T, C), c_last (B, C)); see `reference.py`.

    Opaque to torch.compile (a graph break), which compiles the model around it.
    """
    return QLSTMScan.apply(pre, initial_state(pre, c0).float())


def min_bytes(B: int, T: int, C: int, dtype: torch.dtype) -> int:
    """Bytes a forward + backward must move at least: pre twice (forward, backward), h, dh, dpre."""
    return B * T * C * dtype.itemsize * (4 + 1 + 1 + 4 + 4)
