"""The GPT baseline: Languini Kitchen's GPT function, size for size and tensor for tensor.

Pre-LayerNorm blocks; the token embedding multiplied by √d_model before the learned position
embedding is added; causal attention whose width (n_head × head_dim) need not equal d_model
(Languini's `mini` is 8 × 32 inside d 512, its `XL` 24 × 128 inside d 2048); a tanh-GELU MLP
four times wider than the model; final LayerNorm and an untied output layer without bias.
Initialisation as Languini's: every weight N(0, 0.02) and every bias zero, except the MLP's
output projection at 0.02/√(2·layers); LayerNorms start at one and zero. Attention goes
through `scaled_dot_product_attention` (Languini's explicit masked softmax is the same
function) and Q, K, V are one fused matrix (three N(0, 0.02) blocks: the same distribution
as Languini's three matrices, one matmul instead of three).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from languini.errors import UserError


@dataclass
class GPTConfig:
    vocab_size: int = 16384
    seq_len: int = 512
    n_layer: int = 12
    d_model: int = 768
    n_head: int = 12
    head_dim: int | None = None  # None: d_model // n_head
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.head_dim = resolve_head_dim(self.d_model, self.n_head, self.head_dim)


def resolve_head_dim(d_model: int, n_head: int, head_dim: int | None) -> int:
    """An explicit head width stands; without one the heads split d_model evenly."""
    if n_head < 1:
        raise UserError(f"n_head must be at least 1, got {n_head}.")
    if head_dim is None:
        if d_model % n_head:
            raise UserError(f"d_model {d_model} is not divisible by n_head {n_head}: give head_dim.")
        return d_model // n_head
    if head_dim < 1:
        raise UserError(f"head_dim must be at least 1, got {head_dim}.")
    return head_dim


def init_weights(m: nn.Module, n_layer: int) -> None:
    """Languini's initialisation: N(0, 0.02) weights and zero biases, N(0, 0.02/√(2·layers)) for
    the layers marked `depth_scaled` (the MLP's output projection: GPT-2's residual scaling,
    which Languini applies there and not to the attention or recurrent output). The qLSTM
    shares it."""
    if isinstance(m, nn.Linear):
        std = 0.02 / math.sqrt(2 * n_layer) if getattr(m, "depth_scaled", False) else 0.02
        nn.init.normal_(m.weight, std=std)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Embedding):
        nn.init.normal_(m.weight, std=0.02)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        width = cfg.n_head * cfg.head_dim
        self.qkv = nn.Linear(cfg.d_model, 3 * width)
        self.proj = nn.Linear(width, cfg.d_model)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = (t.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
                   for t in self.qkv(x).chunk(3, dim=2))
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim))


class MLP(nn.Module):
    """tanh-GELU MLP four times wider than the model (Languini's `gelu` is the tanh form)."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.up = nn.Linear(cfg.d_model, 4 * cfg.d_model)
        self.down = nn.Linear(4 * cfg.d_model, cfg.d_model)
        self.down.depth_scaled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x), approximate="tanh"))


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
        x = self.drop(self.tok_emb(tokens) * math.sqrt(self.config.d_model) + self.pos_emb(pos))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x[:, logits_from:])), None

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token: 6 per weight (forward + backward) plus attention scores.

        The PaLM appendix B count: 6·N for the matrix weights (embeddings are lookups, not
        matmuls) and 6·layers·seq_len·width for QKᵀ and AV, forward and backward, where the
        width is the attention's (n_head · head_dim), not the model's.
        """
        c = self.config
        matmul_params = self.num_params() - self.tok_emb.weight.numel() - self.pos_emb.weight.numel()
        return 6.0 * matmul_params + 6.0 * c.n_layer * seq_len * c.n_head * c.head_dim
