import torch

from languini.family import config_hash, load_family


def test_gpt_sizes_match_languini():
    fam = load_family("gpt")
    expect = {"mini": (4, 512, 8), "tiny": (4, 768, 12), "small": (12, 768, 12), "medium": (24, 1024, 16),
              "large": (24, 1536, 16), "XL": (24, 2048, 24)}
    for name, (layers, d, heads) in expect.items():
        cfg, train = fam.config(name)
        assert (cfg.n_layer, cfg.d_model, cfg.n_head, cfg.vocab_size, cfg.seq_len) == (layers, d, heads, 16384, 512)
        assert train["batch_size"] > 0


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
