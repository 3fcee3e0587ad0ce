"""The quasi-LSTM recurrence, defined as a plain loop over time.

This is the definition the fast paths (`scan.py`, `kernels.py`) are tested against, written
for reading rather than speed. All three share one interface:

    qlstm_scan(pre, c0) -> (h, c_last)

- `pre` (batch, time, 4, channels): gate pre-activations in the order f, i, z, o, with the
  forget gate's +1 bias already added by the caller. Heads are folded into channels: the
  recurrence is elementwise, so a head is only a grouping of channels.
- `c0` (batch, channels): the carried cell state, fp32 (None means zeros).
- Returns `h` (batch, time, channels) in `pre`'s dtype and `c_last` (batch, channels), the
  state after the last step, in the compute dtype (fp32, or fp64 for gradient checks), so
  chunks chain: running two halves with the state carried equals running the whole.

Per step:  f, i, z, o = σ(f̃), σ(ĩ), tanh(z̃), σ(õ);  c_t = f ⊙ c_{t-1} + i ⊙ z;  h_t = o ⊙ tanh(c_t).
"""

from __future__ import annotations

import torch


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The state is never kept in less than fp32: half-precision inputs are upcast."""
    return torch.promote_types(dtype, torch.float32)


def gates(pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Activated gates f, i, z, o, each (batch, time, channels), in the compute dtype."""
    pf, pi, pz, po = pre.to(compute_dtype(pre.dtype)).unbind(2)
    return torch.sigmoid(pf), torch.sigmoid(pi), torch.tanh(pz), torch.sigmoid(po)


def initial_state(pre: torch.Tensor, c0: torch.Tensor | None) -> torch.Tensor:
    """`c0` in the compute dtype, or zeros when no state is carried in."""
    B, _, _, C = pre.shape
    dtype = compute_dtype(pre.dtype)
    if c0 is None:
        return torch.zeros(B, C, dtype=dtype, device=pre.device)
    if c0.shape != (B, C):
        raise ValueError(f"c0 has shape {tuple(c0.shape)}, expected {(B, C)}")
    return c0.to(dtype)


def qlstm_scan(pre: torch.Tensor, c0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence, one time step after another."""
    f, i, z, o = gates(pre)
    c = initial_state(pre, c0)
    hs = []
    for t in range(pre.shape[1]):
        c = f[:, t] * c + i[:, t] * z[:, t]
        hs.append(o[:, t] * torch.tanh(c))
    return torch.stack(hs, dim=1).to(pre.dtype), c
