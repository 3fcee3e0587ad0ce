import pytest
import torch

from baselines.gpt.model import GPTConfig
from languini.config import train_config
from languini.errors import UserError
from languini.family import config_hash, load_family

# projects/gpt/configs.py: layers, h_dim, n_heads, head_dim
LANGUINI_SIZES = {"mini": (4, 512, 8, 32), "tiny": (4, 768, 12, 64), "small": (12, 768, 12, 64),
                  "medium": (24, 1024, 16, 64), "large": (24, 1536, 16, 96), "XL": (24, 2048, 24, 128)}
# projects/gpt/main.py: Adam(β 0.9/0.95, ε 1e-8), CosineLR(warmup 200, 6e-4 → 6e-6), grad_clip_norm 0
LANGUINI_RECIPE = {"lr": 6e-4, "min_lr_ratio": 0.01, "warmup_steps": 200, "weight_decay": 0.0, "beta1": 0.9,
                   "beta2": 0.95, "adam_eps": 1e-8, "grad_clip": 0.0}


def test_gpt_sizes_and_recipe_match_languini():
    fam = load_family("gpt")
    for name, (layers, d, heads, head_dim) in LANGUINI_SIZES.items():
        cfg, train = fam.config(name)
        assert (cfg.n_layer, cfg.d_model, cfg.n_head, cfg.head_dim, cfg.vocab_size, cfg.seq_len) == (
            layers, d, heads, head_dim, 16384, 512)
        tcfg = train_config(train, {})
        assert {k: getattr(tcfg, k) for k in LANGUINI_RECIPE} == LANGUINI_RECIPE
        assert tcfg.batch_size > 0 and tcfg.precision == "auto"


def test_head_dim_defaults_to_an_even_split_and_is_checked():
    assert GPTConfig(d_model=64, n_head=4).head_dim == 16
    assert GPTConfig(d_model=2048, n_head=24, head_dim=128).head_dim == 128
    with pytest.raises(UserError, match="give head_dim"):
        GPTConfig(d_model=2048, n_head=24)


def test_gpt_forward_is_causal_and_counts_params():
    fam = load_family("gpt")
    cfg, _ = fam.config("nano", vocab_size=50)
    torch.manual_seed(0)
    model = fam.build(cfg).eval()
    x = torch.randint(0, 50, (2, 16))
    logits, state = model(x)
    assert logits.shape == (2, 16, 50) and state is None
    y = x.clone()
    y[:, 10:] = (y[:, 10:] + 1) % 50  # changing the future must not change the past
    assert torch.allclose(model(y)[0][:, :10], logits[:, :10], atol=1e-6)
    assert model.num_params() == sum(p.numel() for p in model.parameters())
    assert model.flops_per_token(16) > 6 * (model.num_params() - 50 * 64 - 128 * 64) - 1


def test_gpt_learns_a_repeated_sequence():
    fam = load_family("gpt")
    cfg, _ = fam.config("nano", vocab_size=20)
    torch.manual_seed(0)
    model = fam.build(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = torch.arange(33).remainder(20).view(1, 33)
    losses = []
    for _ in range(60):
        logits, _ = model(x[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.view(-1, 20), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]


def test_config_hash_tracks_every_field():
    fam = load_family("gpt")
    a, _ = fam.config("nano", vocab_size=100)
    b, _ = fam.config("nano", vocab_size=101)
    assert config_hash(a) != config_hash(b)
    assert config_hash(a) == config_hash(fam.config("nano", vocab_size=100)[0])
