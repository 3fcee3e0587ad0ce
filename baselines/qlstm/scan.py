"""The quasi-LSTM recurrence as a block-parallel scan in plain PyTorch.

`c_t = f_t c_{t-1} + u_t` (with u = i ⊙ z) unrolls to
`c_t = Σ_{s≤t} (f_{s+1}⋯f_t) u_s + (f_1⋯f_t) c_0`. The products are differences of a
cumulative sum of log f, so every state follows from a few tensor ops instead of a loop over
time. Done over the whole sequence this costs O(T²) per channel, so it is done twice over
shorter spans: within blocks of L steps (from a zero state), then across the T/L blocks,
each block acting as one step whose forget factor is the product of its gates. Every
exponent is a log of a product of gates (≤ 0), so nothing overflows, whatever the gates.

This is the CPU path and the baseline the Triton kernel must beat; autograd gives the
backward. Same interface as `reference.qlstm_scan`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from baselines.qlstm.reference import compute_dtype, initial_state

# Work is O(T·L) within blocks and O((T/L)²) across them; 8 balances the two for T ≈ 512 and
# measured fastest on CPU for T 128-512 (Languini Kitchen used 16).
BLOCK_LEN = 8


def _decayed_sums(cum_log_f: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """`Σ_{s≤t} exp(A_t − A_s) u_s` for every t along dim −2, with A = `cum_log_f`.

    Shapes (..., L, C). The (..., L, L, C) matrix of decays is masked above the diagonal
    before `exp`, where the differences are positive and could overflow.
    """
    L = cum_log_f.shape[-2]
    causal = torch.ones(L, L, dtype=torch.bool, device=u.device).tril().unsqueeze(-1)
    log_decay = cum_log_f.unsqueeze(-2) - cum_log_f.unsqueeze(-3)
    decay = log_decay.masked_fill(~causal, float("-inf")).exp()
    return (decay * u.unsqueeze(-3)).sum(-2)


def qlstm_scan(
    pre: torch.Tensor, c0: torch.Tensor | None = None, block_len: int = BLOCK_LEN
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pre (B, T, 4, C), c0 (B, C)) -> (h (B, T, C), c_last (B, C)); see `reference.py`."""
    B, T, _, C = pre.shape
    c0 = initial_state(pre, c0)
    pf, pi, pz, po = pre.to(compute_dtype(pre.dtype)).unbind(2)
    log_f = F.logsigmoid(pf)
    u = torch.sigmoid(pi) * torch.tanh(pz)
    # Pad the time axis to whole blocks with identity steps (f = 1, u = 0): the state passes
    # through them unchanged, so the last block's end state is c_last.
    pad = -T % block_len
    if pad:
        log_f, u = F.pad(log_f, (0, 0, 0, pad)), F.pad(u, (0, 0, 0, pad))
    n_blocks = (T + pad) // block_len
    log_f, u = log_f.reshape(B, n_blocks, block_len, C), u.reshape(B, n_blocks, block_len, C)

    cum = log_f.cumsum(2)
    local = _decayed_sums(cum, u)  # states within each block, starting from zero
    block_cum = cum[:, :, -1].cumsum(1)
    ends = _decayed_sums(block_cum, local[:, :, -1]) + block_cum.exp() * c0.unsqueeze(1)
    starts = torch.cat([c0.unsqueeze(1), ends[:, :-1]], dim=1)
    c = (local + cum.exp() * starts.unsqueeze(2)).reshape(B, n_blocks * block_len, C)[:, :T]
    h = torch.sigmoid(po) * torch.tanh(c)
    return h.to(pre.dtype), ends[:, -1]
