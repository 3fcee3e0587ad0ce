"""The baselines are Languini Kitchen's models: same function, sizes, parameter counts and init.

The reference here is written from Languini Kitchen's definitions (languini-kitchen/languini-
kitchen, languini/projects/gpt/{lib,model,configs}.py and languini/projects/lstm/{lib,model,
configs}.py), in their parameter names and shapes, as plain tensor arithmetic: an explicit
masked softmax, GELU's tanh formula, a step-by-step quasi-LSTM loop carrying (c, h). Our
models' tensors are mapped one to one onto those names (the fused Q|K|V and f|i|z|o matrices
split into Languini's separate ones) and both are run in float64.
"""

from __future__ import annotations

import math

import pytest
import torch

from baselines.gpt.model import GPT, GPTConfig
from baselines.qlstm.model import QLSTM, QLSTMConfig
from languini.family import load_family

# Languini's parameter counts at vocabulary 16384 and sequence 512, from their definitions:
# the sizes of projects/{gpt,lstm}/configs.py (layers, h_dim, mlp_dim = 4·h_dim, head_dim,
# n_heads) and the layers of projects/{gpt,lstm}/lib.py (GPT: LayerNorm weight and bias, Q, K,
# V and O with biases, c_fc and c_proj with biases, token and position embeddings, an output
# layer without bias; quasi-LSTM: the same with four gate projections Fx, Ix, Zx, Ox and
# linear_post_head in place of attention, and no position embedding).
LANGUINI_PARAMS = {
    "gpt": {"mini": 27_549_696, "tiny": 53_912_064, "small": 110_615_040, "medium": 336_390_144,
            "large": 731_077_632, "XL": 1_478_160_384},
    "qlstm": {"mini": 27_812_864, "tiny": 55_881_216, "small": 117_308_928, "medium": 361_056_256,
              "large": 786_951_168, "XL": 1_628_180_480},
}


# --- Languini's definitions, in plain tensor arithmetic -----------------------------------


def gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def layer_norm(x: torch.Tensor, P: dict, name: str) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5) * P[f"{name}.weight"] + P[f"{name}.bias"]


def linear(x: torch.Tensor, P: dict, name: str) -> torch.Tensor:
    y = x @ P[f"{name}.weight"].T
    return y + P[f"{name}.bias"] if f"{name}.bias" in P else y


def mlp(x: torch.Tensor, P: dict, name: str) -> torch.Tensor:
    return linear(gelu(linear(x, P, f"{name}.c_fc")), P, f"{name}.c_proj")


def attention(x: torch.Tensor, P: dict, name: str, n_heads: int, head_dim: int) -> torch.Tensor:
    B, T, _ = x.shape
    q, k, v = (linear(x, P, f"{name}.linear_{w}").view(B, T, n_heads, head_dim).transpose(1, 2) for w in "QKV")
    dot = torch.einsum("bhid,bhjd->bhij", q, k) * head_dim ** -0.5
    dot = dot.masked_fill(torch.ones(T, T, dtype=torch.bool).tril().logical_not(), float("-inf"))
    new_v = torch.einsum("bhij,bhjd->bhid", torch.softmax(dot, dim=-1), v)
    return linear(new_v.transpose(1, 2).reshape(B, T, n_heads * head_dim), P, f"{name}.linear_O")


def languini_gpt(tokens: torch.Tensor, P: dict, c: dict) -> torch.Tensor:
    T = tokens.shape[1]
    x = P["input_embedding.weight"][tokens] * math.sqrt(c["h_dim"]) + P["position_embedding.weight"][:T]
    for i in range(c["n_layers"]):
        x = x + attention(layer_norm(x, P, f"layers.{i}.ln1"), P, f"layers.{i}.attn", c["n_heads"], c["head_dim"])
        x = x + mlp(layer_norm(x, P, f"layers.{i}.ln2"), P, f"layers.{i}.mlp")
    return linear(layer_norm(x, P, "ln_f"), P, "linear")


def quasi_lstm(x: torch.Tensor, P: dict, name: str, state: tuple, n_heads: int, head_dim: int):
    """Languini's MultiHeadQuasiLSTMCell by its definition: the loop over time ("the slow
    implementation" beside their block-parallel one), gates from x only, f biased by +1."""
    B, T, _ = x.shape
    fx, ix, zx, ox = (linear(x, P, f"{name}.linear_{g}x").view(B, T, n_heads, head_dim) for g in "FIZO")
    c, h = state
    hs = []
    for t in range(T):
        c = torch.sigmoid(fx[:, t] + 1.0) * c + torch.sigmoid(ix[:, t]) * torch.tanh(zx[:, t])
        h = torch.sigmoid(ox[:, t]) * torch.tanh(c)
        hs.append(h)
    y = torch.stack(hs, dim=1).reshape(B, T, n_heads * head_dim)
    return linear(y, P, f"{name}.linear_post_head"), (c, h)


def languini_qlstm(tokens: torch.Tensor, P: dict, c: dict, state: list | None = None):
    B = tokens.shape[0]
    zeros = torch.zeros(B, c["n_heads"], c["head_dim"], dtype=torch.float64)
    state = state or [(zeros, zeros)] * c["n_layers"]
    x = P["input_embedding.weight"][tokens] * math.sqrt(c["h_dim"])
    new_state = []
    for i in range(c["n_layers"]):
        y, s = quasi_lstm(layer_norm(x, P, f"layers.{i}.ln1"), P, f"layers.{i}.rnn", state[i], c["n_heads"],
                          c["head_dim"])
        new_state.append(s)
        x = x + y
        x = x + mlp(layer_norm(x, P, f"layers.{i}.ln2"), P, f"layers.{i}.mlp")
    return linear(layer_norm(x, P, "ln_f"), P, "linear"), new_state


def languini_shapes(family: str, c: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor Languini's model of this family holds, by its name, with its shape."""
    d, A, m, V = c["h_dim"], c["n_heads"] * c["head_dim"], 4 * c["h_dim"], c["vocab_size"]
    shapes = {"input_embedding.weight": (V, d), "ln_f.weight": (d,), "ln_f.bias": (d,), "linear.weight": (V, d)}
    if family == "gpt":
        shapes["position_embedding.weight"] = (c["seq_len"], d)
    for i in range(c["n_layers"]):
        p = f"layers.{i}"
        for ln in ("ln1", "ln2"):
            shapes |= {f"{p}.{ln}.weight": (d,), f"{p}.{ln}.bias": (d,)}
        mixer, ins, out = (("attn", "QKV", "linear_O") if family == "gpt" else
                           ("rnn", ("Fx", "Ix", "Zx", "Ox"), "linear_post_head"))
        for w in ins:
            shapes |= {f"{p}.{mixer}.linear_{w}.weight": (A, d), f"{p}.{mixer}.linear_{w}.bias": (A,)}
        shapes |= {f"{p}.{mixer}.{out}.weight": (d, A), f"{p}.{mixer}.{out}.bias": (d,),
                   f"{p}.mlp.c_fc.weight": (m, d), f"{p}.mlp.c_fc.bias": (m,),
                   f"{p}.mlp.c_proj.weight": (d, m), f"{p}.mlp.c_proj.bias": (d,)}
    return shapes


# --- our tensors under Languini's names -----------------------------------------------------


def as_languini(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Our model's tensors, one to one, under Languini's names (fused matrices split)."""
    gpt = isinstance(model, GPT)
    P = {"input_embedding.weight": model.tok_emb.weight, "linear.weight": model.head.weight,
         "ln_f.weight": model.ln_f.weight, "ln_f.bias": model.ln_f.bias}
    if gpt:
        P["position_embedding.weight"] = model.pos_emb.weight
    for i, block in enumerate(model.blocks):
        p = f"layers.{i}"
        mixer, fused, out = (("attn", block.attn.qkv, block.attn.proj) if gpt else
                             ("rnn", block.rnn.gates, block.rnn.proj))
        names = ("Q", "K", "V") if gpt else ("Fx", "Ix", "Zx", "Ox")
        for w, weight, bias in zip(names, fused.weight.chunk(len(names)), fused.bias.chunk(len(names))):
            P |= {f"{p}.{mixer}.linear_{w}.weight": weight, f"{p}.{mixer}.linear_{w}.bias": bias}
        out_name = "linear_O" if gpt else "linear_post_head"
        P |= {f"{p}.{mixer}.{out_name}.weight": out.weight, f"{p}.{mixer}.{out_name}.bias": out.bias}
        for ours, theirs in ((block.ln1, "ln1"), (block.ln2, "ln2"), (block.mlp.up, "mlp.c_fc"),
                             (block.mlp.down, "mlp.c_proj")):
            P |= {f"{p}.{theirs}.weight": ours.weight, f"{p}.{theirs}.bias": ours.bias}
    return P


def languini_config(cfg: GPTConfig | QLSTMConfig) -> dict:
    return {"vocab_size": cfg.vocab_size, "seq_len": cfg.seq_len, "n_layers": cfg.n_layer, "h_dim": cfg.d_model,
            "n_heads": cfg.n_head, "head_dim": cfg.head_dim}


# head_dim · n_head = 24, not d_model = 40: the width is independent of the model's
ODD = dict(vocab_size=37, seq_len=16, n_layer=2, d_model=40, n_head=3, head_dim=8)


def float64_model(family: str, seed: int = 0) -> torch.nn.Module:
    """A model with every tensor drawn at random (biases and LayerNorms included, so that each
    one matters to the output), in float64."""
    model = (GPT(GPTConfig(**ODD)) if family == "gpt" else QLSTM(QLSTMConfig(**ODD, scan="block"))).double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.3)
    return model.eval()


@pytest.mark.parametrize("family", ["gpt", "qlstm"])
def test_our_tensors_are_languinis_tensors(family):
    model = float64_model(family)
    P = as_languini(model)
    assert {k: tuple(v.shape) for k, v in P.items()} == languini_shapes(family, languini_config(model.config))
    assert sum(v.numel() for v in P.values()) == model.num_params()  # nothing left over, nothing used twice


def test_gpt_computes_languinis_function_in_float64():
    model = float64_model("gpt")
    tokens = torch.randint(0, ODD["vocab_size"], (3, ODD["seq_len"]), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, _ = model(tokens)
        theirs = languini_gpt(tokens, as_languini(model), languini_config(model.config))
        tail, _ = model(tokens, logits_from=5)
    assert (ours - theirs).abs().max() < 1e-10
    assert (tail - theirs[:, 5:]).abs().max() < 1e-10


@pytest.mark.parametrize("scan", ["block", "reference"])
def test_qlstm_computes_languinis_function_in_float64_with_the_state_carried(scan):
    model = float64_model("qlstm")
    model.config.scan = scan
    tokens = torch.randint(0, ODD["vocab_size"], (2, 2 * ODD["seq_len"]), generator=torch.Generator().manual_seed(2))
    P, c = as_languini(model), languini_config(model.config)
    with torch.no_grad():
        first, state = model(tokens[:, :11])
        second, state = model(tokens[:, 11:], state)
        theirs_first, their_state = languini_qlstm(tokens[:, :11], P, c)
        theirs_second, their_state = languini_qlstm(tokens[:, 11:], P, c, their_state)
    assert (first - theirs_first).abs().max() < 1e-10
    assert (second - theirs_second).abs().max() < 1e-10
    for ours, (cell, _) in zip(state, their_state):
        assert (ours - cell.reshape(ours.shape)).abs().max() < 1e-10


def languini_init_std(name: str, n_layers: int) -> float:
    """Languini's initial standard deviation of a tensor (lib.py, model.py): 0.02 for every
    weight and embedding, 0.02/√(2·layers) for the MLP's c_proj; biases zero, LayerNorms one."""
    if ".c_proj.weight" in name:
        return 0.02 / math.sqrt(2 * n_layers)
    return 0.02


@pytest.mark.parametrize("family", ["gpt", "qlstm"])
def test_initialisation_is_languinis_tensor_by_tensor(family):
    cfg = dict(vocab_size=2000, seq_len=128, n_layer=3, d_model=256, n_head=4, head_dim=32)
    torch.manual_seed(0)
    model = GPT(GPTConfig(**cfg)) if family == "gpt" else QLSTM(QLSTMConfig(**cfg))
    for name, t in as_languini(model).items():
        if ".ln" in name or name.startswith("ln_f"):
            assert torch.all(t == (1.0 if name.endswith("weight") else 0.0)), name
        elif name.endswith("bias"):
            assert torch.all(t == 0), name
        else:
            std = languini_init_std(name, cfg["n_layer"])
            assert abs(t.mean().item()) < 3 * std / math.sqrt(t.numel()) + 1e-12, name
            assert t.std().item() == pytest.approx(std, rel=0.03), name


@pytest.mark.parametrize("family", ["gpt", "qlstm"])
def test_every_size_builds_and_languinis_sizes_have_languinis_parameter_counts(family, monkeypatch):
    # meta tensors hold no values to draw; torch's first meta normal_ takes seconds to set up
    monkeypatch.setattr(torch.nn.init, "normal_", lambda t, mean=0.0, std=1.0: t)
    fam = load_family(family)
    sizes = fam.sizes()
    assert set(LANGUINI_PARAMS[family]) <= set(sizes)
    for name in sizes:
        cfg, _ = fam.config(name)
        with torch.device("meta"):  # XL has 1.6 billion parameters: shapes, no memory
            model = fam.build(cfg)
        assert 0 < model.flops_per_token(cfg.seq_len) < 6 * model.num_params() + 6 * cfg.n_layer * cfg.seq_len * cfg.d_model * 4
        if name in LANGUINI_PARAMS[family]:
            assert (cfg.vocab_size, cfg.seq_len) == (16384, 512)
            assert model.num_params() == LANGUINI_PARAMS[family][name], name
            assert {k: tuple(v.shape) for k, v in as_languini(model).items()} == languini_shapes(
                family, languini_config(cfg))
