"""The quasi-LSTM baseline, as in Languini Kitchen, in one readable file.

A GPT-shaped stack whose token mixer is a recurrence instead of attention. Each block:
pre-LayerNorm -> multi-head quasi-LSTM -> output projection -> residual, then pre-LayerNorm
-> tanh-GELU MLP (4x) -> residual. The gates depend on the input only, so all four come from one
linear map over the whole sequence:

    f = σ(W_f x + b_f + 1),  i = σ(W_i x + b_i),  z = tanh(W_z x + b_z),  o = σ(W_o x + b_o)
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ z_t,   h_t = o_t ⊙ tanh(c_t)

and only the elementwise recurrence runs along time. The gates and the recurrence are
n_head × head_dim channels wide (Languini's `mini`: 8 × 32 inside d 512), and an output
projection maps them back to d_model. The carried state is c alone, one (batch, n_head ·
head_dim) fp32 tensor per layer (Languini also carries h, which a quasi-LSTM never reads),
and `forward` returns it so the next chunk of the same streams continues from it. No
positional embedding (the recurrence knows the order); the embedding is scaled by √d_model;
final LayerNorm and an untied output layer. Initialisation as Languini's and the GPT
baseline's: N(0, 0.02) weights, zero biases, the MLP's output projection at 0.02/√(2·layers).

Heads: the recurrence is per channel, so a head is a grouping of channels with no effect on
the function; only the width n_head · head_dim matters.

Three implementations of the recurrence share one interface (see `reference.py`); `scan`
in the config picks one, and "auto" takes the fastest available: the Triton kernels on CUDA,
the block-parallel scan elsewhere. `model.scan_impl` names the one in use, for the
throughput certificate.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from baselines.gpt.model import MLP, init_weights, resolve_head_dim
from languini.errors import UserError

ScanFn = Callable[[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]]
SCANS = ("reference", "block", "triton")


@dataclass
class QLSTMConfig:
    vocab_size: int = 16384
    seq_len: int = 512  # training chunk length; the model itself takes any length
    n_layer: int = 12
    d_model: int = 768
    n_head: int = 12
    head_dim: int | None = None  # None: d_model // n_head
    dropout: float = 0.0
    scan: str = "auto"  # auto | reference | block | triton

    def __post_init__(self) -> None:
        if self.scan not in ("auto", *SCANS):
            raise UserError(f"Unknown qLSTM scan '{self.scan}' (use auto, {', '.join(SCANS)}).")
        self.head_dim = resolve_head_dim(self.d_model, self.n_head, self.head_dim)

    @property
    def width(self) -> int:
        """Channels of the gates and the recurrence."""
        return self.n_head * self.head_dim


def pick_scan(choice: str, device: torch.device) -> str:
    """Resolve "auto" to the fastest implementation for `device`; other choices stand."""
    if choice != "auto":
        return choice
    if device.type == "cuda" and importlib.util.find_spec("triton") is not None:
        return "triton"
    return "block"


def scan_function(name: str) -> ScanFn:
    """The `qlstm_scan` of an implementation; Triton is imported only when asked for."""
    if name == "reference":
        from baselines.qlstm.reference import qlstm_scan
    elif name == "block":
        from baselines.qlstm.scan import qlstm_scan
    elif name == "triton":
        from baselines.qlstm.kernels import qlstm_scan
    else:
        raise ValueError(f"unknown scan implementation '{name}'")
    return qlstm_scan


class QuasiLSTM(nn.Module):
    """Multi-head quasi-LSTM: gate projections, the recurrence, the output projection."""

    def __init__(self, cfg: QLSTMConfig) -> None:
        super().__init__()
        self.gates = nn.Linear(cfg.d_model, 4 * cfg.width)  # f, i, z, o
        self.proj = nn.Linear(cfg.width, cfg.d_model)
        # The forget gate's +1 is added to the bias vector, not to the (B, T, 4, width) gate
        # tensor: the same function without an extra pass over the largest activation.
        offset = torch.zeros(4, cfg.width)
        offset[0] = 1.0
        self.register_buffer("gate_offset", offset.flatten(), persistent=False)

    def forward(self, x: torch.Tensor, c0: torch.Tensor | None, scan: ScanFn) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, _ = x.shape
        pre = F.linear(x, self.gates.weight, self.gates.bias + self.gate_offset).view(B, T, 4, -1)
        h, c = scan(pre, c0)
        return self.proj(h), c


class Block(nn.Module):
    def __init__(self, cfg: QLSTMConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.rnn = QuasiLSTM(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, c0: torch.Tensor | None, scan: ScanFn) -> tuple[torch.Tensor, torch.Tensor]:
        y, c = self.rnn(self.ln1(x), c0, scan)
        x = x + self.drop(y)
        return x + self.drop(self.mlp(self.ln2(x))), c


class QLSTM(nn.Module):
    config_class = QLSTMConfig
    stateful = True

    def __init__(self, config: QLSTMConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.apply(lambda m: init_weights(m, config.n_layer))

    @property
    def scan_impl(self) -> str:
        """The recurrence implementation a forward on the model's current device uses."""
        return pick_scan(self.config.scan, self.head.weight.device)

    def forward(
        self, tokens: torch.Tensor, state: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits for `tokens` (B, T) and the per-layer cell states after the last token.

        `state` is the list a previous call returned (None: zeros); pass it back, detached,
        to continue the same B streams.
        """
        if state is not None and len(state) != self.config.n_layer:
            raise ValueError(f"state has {len(state)} layers, the model {self.config.n_layer}")
        scan = scan_function(pick_scan(self.config.scan, tokens.device))
        x = self.drop(self.tok_emb(tokens) * math.sqrt(self.config.d_model))
        new_state = []
        for block, c0 in zip(self.blocks, state or [None] * self.config.n_layer):
            x, c = block(x, c0, scan)
            new_state.append(c)
        return self.head(self.ln_f(x)), new_state

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token: 6 per weight (forward + backward) plus the recurrence.

        6·N for the matrix weights as for GPT (the embedding is a lookup, not a matmul), and
        30·layers·width for the elementwise recurrence: about 10 operations per channel
        forward (four activations, the state update, tanh, the output gate), twice that
        backward. No term grows with `seq_len`: a recurrent step costs the same anywhere.
        """
        c = self.config
        matmul_params = self.num_params() - self.tok_emb.weight.numel()
        return 6.0 * matmul_params + 30.0 * c.n_layer * c.width
