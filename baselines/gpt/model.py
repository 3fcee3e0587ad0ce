"""The GPT baseline, as in Languini Kitchen: GPT-2 style, in one readable file.

Pre-LayerNorm blocks, learned positions, a GELU MLP four times wider than the model, an
untied output layer, and the residual projections initialised with std 0.02/sqrt(2·layers)
so the residual stream's variance does not grow with depth. Attention goes through
`scaled_dot_product_attention`, which picks a fused kernel where one exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    vocab_size: int = 16384
    seq_len: int = 512
    n_layer: int = 12
    d_model: int = 768
    n_head: int = 12
    dropout: float = 0.0


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        assert cfg.d_model % cfg.n_head == 0, "d_model must be divisible by n_head"
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.proj.residual = True
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


def init_weights(m: nn.Module, n_layer: int) -> None:
    """N(0, 0.02) weights, zero biases; residual projections scaled by 1/sqrt(2·layers) so the
    residual stream's variance does not grow with depth (GPT-2). The qLSTM shares it."""
    if isinstance(m, nn.Linear):
        std = 0.02 / math.sqrt(2 * n_layer) if getattr(m, "residual", False) else 0.02
        nn.init.normal_(m.weight, std=std)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Embedding):
        nn.init.normal_(m.weight, std=0.02)


class MLP(nn.Module):
    """GELU MLP four times wider than the model; its output is a residual projection."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.up = nn.Linear(cfg.d_model, 4 * cfg.d_model)
        self.down = nn.Linear(4 * cfg.d_model, cfg.d_model)
        self.down.residual = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x)))
        return x + self.drop(self.mlp(self.ln2(x)))


class GPT(nn.Module):
    config_class = GPTConfig
    stateful = False

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.seq_len, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.apply(lambda m: init_weights(m, config.n_layer))

    def forward(self, tokens: torch.Tensor, state: None = None, logits_from: int = 0) -> tuple[torch.Tensor, None]:
        """Logits for positions logits_from.. only: sliding-window evaluation scores the last
        stride positions of each window, and the output layer dominates a small model's cost."""
        T = tokens.shape[1]
        if T > self.config.seq_len:
            raise ValueError(f"sequence of {T} tokens exceeds the model's seq_len {self.config.seq_len}")
        pos = torch.arange(T, device=tokens.device)
        x = self.drop(self.tok_emb(tokens) + self.pos_emb(pos))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x[:, logits_from:])), None

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token: 6 per weight (forward + backward) plus attention scores.

        The PaLM appendix B count: 6·N for the matrix weights (embeddings are lookups, not
        matmuls) and 6·layers·seq_len·d_model for QKᵀ and AV, forward and backward.
        """
        c = self.config
        matmul_params = self.num_params() - self.tok_emb.weight.numel() - self.pos_emb.weight.numel()
        return 6.0 * matmul_params + 6.0 * c.n_layer * seq_len * c.d_model
