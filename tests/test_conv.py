"""The 'conv' architecture: any image size, the sigma-VAE reference network as default (equal to 'conv28' at
28x28), the rho-VAE papers' networks written as settings, size errors at build time and at study validation, and
a few training steps of a whole VAE."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import yaml

from conftest import REPO
from vaebench.config import ConfigError, validate_model
from vaebench.validation import validate_study
from vaebench.registry import ARCHITECTURES
from vaebench.vae.model import build_model

SHAPES = [(1, 28, 28), (3, 32, 32), (3, 64, 64), (1, 28, 20), (3, 28, 28)]

# The rho-VAE networks (Ferdowsi et al. 2019, github.com/sssohrab/rho_VAE models.py) as 'conv' settings, as
# written in the module docstring.
CNN_VAE = {
    "name": "conv", "activation": "elu",
    "encoder": [{"channels": 64, "kernel": 4, "stride": 2, "padding": 15},
                {"channels": 128, "kernel": 4, "stride": 2, "padding": 15}],
    "encoder_fc": [1024],
    "decoder_fc": [1024],
    "decoder_start_activation": "elu",
    "decoder": [{"channels": 64, "kernel": 4, "stride": 2, "activation": "relu"}, {"kernel": 4, "stride": 2}],
}
DCGAN = {
    "name": "conv", "batch_norm": True,
    "encoder": [{"channels": 64, "kernel": 4, "stride": 2}, {"channels": 64, "kernel": 3},
                {"channels": 128, "kernel": 4, "stride": 2}, {"channels": 128, "kernel": 3}],
    "encoder_fc": [1024], "encoder_fc_activation": "identity",
    "decoder_fc": [1024],
    "decoder_start_activation": "relu",
    "decoder": [{"channels": 64, "kernel": 4, "stride": 2}, {"channels": 64, "kernel": 3},
                {"channels": 32, "kernel": 4, "stride": 2}, {"kernel": 3}],
}


@pytest.fixture(autouse=True)
def one_thread():
    """These networks are small: one thread is as fast as two on an idle 2-core machine, and several times faster
    when the cores are shared (two intra-op threads then wait on each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(settings: dict, shape=(1, 28, 28), latent_dim=8, head_dim=16, out_channels=1):
    return ARCHITECTURES.build(settings).build(shape, latent_dim, head_dim, out_channels)


def feature_shapes(net: nn.Module, x: torch.Tensor, kind: type) -> list[tuple]:
    """The output shapes (without the batch) of every ``kind`` layer of ``net`` on input ``x``."""
    shapes = []
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:])))
             for m in net.modules() if isinstance(m, kind)]
    net(x)
    for h in hooks:
        h.remove()
    return shapes


def param_shapes(net: nn.Module) -> list[tuple]:
    return [tuple(p.shape) for p in net.parameters()]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("out_channels", [1, 2, 256])
def test_output_shapes(shape, out_channels):
    torch.manual_seed(0)
    encoder, decoder = build({"name": "conv"}, shape, latent_dim=8, head_dim=16, out_channels=out_channels)
    x = torch.rand(2, *shape)
    assert encoder(x).shape == (2, 16)
    out = decoder(torch.randn(3, 8))
    assert out.shape == (3, out_channels * shape[0], *shape[1:]) and torch.isfinite(out).all()


@pytest.mark.parametrize("shape, start", [((1, 28, 28), (7, 7)), ((3, 32, 32), (8, 8)), ((3, 64, 64), (16, 16)),
                                          ((1, 28, 20), (7, 5))])
def test_default_decoder_starts_where_the_encoder_ends(shape, start):
    encoder, decoder = build({"name": "conv"}, shape)
    assert encoder.sizes[-1] == start and decoder.start_shape == (128, *start)


def test_any_image_size_is_reached_exactly():
    """Odd sizes too (output_padding makes up the rounding), on the meta device (shapes only)."""
    with torch.device("meta"):
        for h in range(4, 37):
            for w in (h, 33):
                encoder, decoder = build({"name": "conv"}, (1, h, w), out_channels=2)
                assert encoder(torch.empty(2, 1, h, w)).shape == (2, 16)
                assert decoder(torch.empty(2, 8)).shape == (2, 2, h, w), (h, w)


def test_default_paddings():
    from vaebench.vae.networks.conv import ConvLayer, ConvTransposeLayer

    assert [ConvLayer(channels=1, kernel=k).resolved_padding() for k in (1, 3, 4, 5)] == [0, 1, 1, 2]
    assert [ConvTransposeLayer(kernel=k, stride=s).resolved_padding()
            for k, s in ((4, 2), (6, 2), (5, 1), (3, 1), (2, 4))] == [1, 2, 2, 1, 0]
    assert ConvTransposeLayer(kernel=4, stride=2, padding=0).resolved_padding() == 0
    _, decoder = build({"name": "conv", "decoder": [{"channels": 4, "kernel": 2, "stride": 4}, {"kernel": 1}]},
                       (1, 13, 30))
    assert decoder(torch.randn(2, 8)).shape == (2, 1, 13, 30)


@pytest.mark.parametrize("channels, out_channels", [(1, 1), (1, 256), (3, 2)])
def test_default_equals_conv28_at_28x28(channels, out_channels):
    """The sigma-VAE reference network: same parameter shapes as 'conv28' and, with its weights, the same outputs."""
    torch.manual_seed(0)
    shape = (channels, 28, 28)
    ref_enc, ref_dec = build({"name": "conv28"}, shape, latent_dim=8, head_dim=16, out_channels=out_channels)
    enc, dec = build({"name": "conv"}, shape, latent_dim=8, head_dim=16, out_channels=out_channels)
    for ref, ours in ((ref_enc, enc), (ref_dec, dec)):
        assert param_shapes(ours) == param_shapes(ref)
        ref_sd, our_sd = ref.state_dict(), ours.state_dict()
        assert len(ref_sd) == len(our_sd)
        ours.load_state_dict(dict(zip(our_sd, ref_sd.values())))       # parameter names differ: map by order
    x, z = torch.rand(4, *shape), torch.randn(4, 8)
    torch.testing.assert_close(enc(x), ref_enc(x), rtol=0, atol=0)
    torch.testing.assert_close(dec(z), ref_dec(z), rtol=0, atol=0)


def test_rho_vae_cnn_vae_is_expressible():
    """CNN_VAE: Conv(1->64,k4,s2,p15) ELU, Conv(64->128,k4,s2,p15) ELU at 28x28, flatten 100352, FC 1024 ELU -> head;
    decoder FC d->1024 ELU -> FC 1024->6272 ELU -> 128x7x7 -> ConvT(128->64,k4,s2,p1) ReLU -> ConvT(64->1,k4,s2,p1)."""
    d = 20
    with torch.device("meta"):                     # a 102.8M-parameter Linear: shapes only
        encoder, decoder = build(CNN_VAE, (1, 28, 28), latent_dim=d, head_dim=2 * d, out_channels=1)
        assert encoder.sizes == [(28, 28), (28, 28)] and encoder.flat_features == 100352
        assert feature_shapes(encoder, torch.empty(2, 1, 28, 28), nn.Conv2d) == [(64, 28, 28), (128, 28, 28)]
        assert feature_shapes(decoder, torch.empty(2, d), nn.ConvTranspose2d) == [(64, 14, 14), (1, 28, 28)]
    assert decoder.start_shape == (128, 7, 7)
    assert [type(m) for m in encoder.conv] == [nn.Conv2d, nn.ELU, nn.Conv2d, nn.ELU]
    assert [type(m) for m in decoder.fc] == [nn.Linear, nn.ELU, nn.Linear, nn.ELU]
    assert [type(m) for m in decoder.conv] == [nn.ConvTranspose2d, nn.ReLU, nn.ConvTranspose2d]
    assert param_shapes(encoder) == [(64, 1, 4, 4), (64,), (128, 64, 4, 4), (128,), (1024, 100352), (1024,),
                                     (2 * d, 1024), (2 * d,)]
    assert param_shapes(decoder) == [(1024, d), (1024,), (6272, 1024), (6272,), (128, 64, 4, 4), (64,),
                                     (64, 1, 4, 4), (1,)]
    # the reference has one Linear(100352, 1024) ELU branch per head (mu, logvar): one fewer here
    ref_encoder = 64 * 16 + 64 + 128 * 64 * 16 + 128 + 2 * (100352 * 1024 + 1024 + 1024 * d + d)
    assert sum(p.numel() for p in encoder.parameters()) == ref_encoder - (100352 * 1024 + 1024)
    # the decoder is the reference's: same weights, same outputs (its final sigmoid belongs to the likelihood)
    torch.manual_seed(0)
    _, decoder = build(CNN_VAE, (1, 28, 28), latent_dim=d, head_dim=2 * d)
    ref = nn.Sequential(nn.Linear(d, 1024), nn.ELU(), nn.Linear(1024, 7 * 7 * 128), nn.ELU(),
                        nn.Unflatten(1, (128, 7, 7)), nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.ReLU(),
                        nn.ConvTranspose2d(64, 1, 4, 2, 1))
    ref.load_state_dict(dict(zip(ref.state_dict(), decoder.state_dict().values())))
    z = torch.randn(3, d)
    torch.testing.assert_close(decoder(z), ref(z), rtol=0, atol=0)


class ConvReluBatch(nn.Sequential):
    """The rho-VAE code's ConvReluBatch / ConvTrReluBatch: conv -> ReLU -> BatchNorm2d."""

    def __init__(self, conv: nn.Module):
        super().__init__(conv, nn.ReLU(), nn.BatchNorm2d(conv.out_channels))


def test_rho_vae_dcgan_info_vae_is_expressible():
    """INFO_VAE: 4 x (Conv ReLU BN) to 128x7x7, flatten 6272 -> Linear 1024 (no activation) -> heads; decoder
    Linear d->1024 ReLU -> Linear ->6272 ReLU -> 3 x (ConvT ReLU BN) -> ConvT(32->1,k3,s1,p1): the reference's
    network, weights and outputs (in training and in eval mode), with its two heads as one."""
    d = 16
    torch.manual_seed(0)
    encoder, decoder = build(DCGAN, (1, 28, 28), latent_dim=d, head_dim=2 * d)
    x = torch.rand(5, 1, 28, 28)
    assert encoder.sizes == [(14, 14), (14, 14), (7, 7), (7, 7)] and encoder.flat_features == 6272
    assert feature_shapes(encoder, x, nn.Conv2d) == [(64, 14, 14), (64, 14, 14), (128, 7, 7), (128, 7, 7)]
    assert decoder.start_shape == (128, 7, 7)
    assert feature_shapes(decoder, torch.randn(5, d), nn.ConvTranspose2d) == [
        (64, 14, 14), (64, 14, 14), (32, 28, 28), (1, 28, 28)]
    ref_enc = nn.Sequential(
        ConvReluBatch(nn.Conv2d(1, 64, 4, 2, 1)), ConvReluBatch(nn.Conv2d(64, 64, 3, 1, 1)),
        ConvReluBatch(nn.Conv2d(64, 128, 4, 2, 1)), ConvReluBatch(nn.Conv2d(128, 128, 3, 1, 1)),
        nn.Flatten(), nn.Linear(6272, 1024))
    ref_mu, ref_std = nn.Linear(1024, d), nn.Linear(1024, d)
    ref_dec = nn.Sequential(
        nn.Linear(d, 1024), nn.ReLU(), nn.Linear(1024, 6272), nn.ReLU(), nn.Unflatten(1, (128, 7, 7)),
        ConvReluBatch(nn.ConvTranspose2d(128, 64, 4, 2, 1)), ConvReluBatch(nn.ConvTranspose2d(64, 64, 3, 1, 1)),
        ConvReluBatch(nn.ConvTranspose2d(64, 32, 4, 2, 1)), nn.ConvTranspose2d(32, 1, 3, 1, 1))
    n_ref_enc = sum(p.numel() for m in (ref_enc, ref_mu, ref_std) for p in m.parameters())
    assert sum(p.numel() for p in encoder.parameters()) == n_ref_enc
    assert param_shapes(decoder) == param_shapes(ref_dec)
    # the same weights give the same outputs; the two heads are the rows of one Linear
    sd = encoder.state_dict()
    head_w, head_b = sd.pop("head.weight"), sd.pop("head.bias")
    ref_enc.load_state_dict(dict(zip(ref_enc.state_dict(), sd.values())))
    ref_mu.load_state_dict({"weight": head_w[:d], "bias": head_b[:d]})
    ref_std.load_state_dict({"weight": head_w[d:], "bias": head_b[d:]})
    ref_dec.load_state_dict(dict(zip(ref_dec.state_dict(), decoder.state_dict().values())))
    z = torch.randn(5, d)
    for mode in ("train", "eval"):                 # batch statistics, then the running averages
        for m in (encoder, decoder, ref_enc, ref_dec):
            getattr(m, mode)()
        h = ref_enc(x)
        torch.testing.assert_close(encoder(x), torch.cat([ref_mu(h), ref_std(h)], 1), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(decoder(z), ref_dec(z), rtol=1e-6, atol=1e-6)


def test_rho_vae_beta_vae_64x64_is_expressible_as_the_fig3_study_writes_it():
    """BETAVAE (rho-VAE Fig. 3, studies/rho_vae_fig3_betavae.yaml): 4 x Conv(k4, s2, p1) ReLU to 64x4x4,
    Conv(64->256, k4) ReLU to 256x1x1 -> Linear 256->2d; decoder Linear d->256 ReLU -> ConvT(256->64, k4) ReLU -> 3
    x ConvT(k4, s2, p1) ReLU -> ConvT(32->1, k4, s2, p1): the reference's layers, weights and outputs."""
    study = yaml.safe_load((REPO / "studies" / "rho_vae_fig3_betavae.yaml").read_text())
    settings = {"name": "conv", **study["components"]["architecture"]["conv"]}
    assert study["datasets"]["mnist"]["image_size"] == study["datasets"]["fashion_mnist"]["image_size"] == 64
    d = 10
    torch.manual_seed(0)
    encoder, decoder = build(settings, (1, 64, 64), latent_dim=d, head_dim=2 * d)
    assert encoder.sizes == [(32, 32), (16, 16), (8, 8), (4, 4), (1, 1)] and encoder.flat_features == 256
    assert decoder.start_shape == (256, 1, 1)
    assert feature_shapes(decoder, torch.randn(2, d), nn.ConvTranspose2d) == [
        (64, 4, 4), (64, 8, 8), (32, 16, 16), (32, 32, 32), (1, 64, 64)]
    ref_enc = nn.Sequential(
        nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1),
        nn.ReLU(), nn.Conv2d(64, 64, 4, 2, 1), nn.ReLU(), nn.Conv2d(64, 256, 4, 1, 0), nn.ReLU(), nn.Flatten(),
        nn.Linear(256, 2 * d))
    ref_dec = nn.Sequential(
        nn.Linear(d, 256), nn.ReLU(), nn.Unflatten(1, (256, 1, 1)), nn.ConvTranspose2d(256, 64, 4, 1, 0), nn.ReLU(),
        nn.ConvTranspose2d(64, 64, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(32, 1, 4, 2, 1))
    assert param_shapes(encoder) == param_shapes(ref_enc) and param_shapes(decoder) == param_shapes(ref_dec)
    assert sum(p.numel() for m in (encoder, decoder) for p in m.parameters()) == 763285
    ref_enc.load_state_dict(dict(zip(ref_enc.state_dict(), encoder.state_dict().values())))
    ref_dec.load_state_dict(dict(zip(ref_dec.state_dict(), decoder.state_dict().values())))
    x, z = torch.rand(3, 1, 64, 64), torch.randn(3, d)
    torch.testing.assert_close(encoder(x), ref_enc(x), rtol=0, atol=0)
    torch.testing.assert_close(decoder(z), ref_dec(z), rtol=0, atol=0)


@pytest.mark.parametrize("settings, shape, layer", [
    ({"name": "conv", "encoder": [{"channels": 8, "kernel": 4, "stride": 2}] * 4}, (1, 4, 4), "encoder[2]"),
    ({"name": "conv", "encoder": [{"channels": 8, "kernel": 7, "padding": 0}]}, (3, 4, 4), "encoder[0]"),
    ({"name": "conv", "decoder": [{"channels": 8, "kernel": 4, "stride": 2}] * 3 + [{"kernel": 3}]}, (1, 4, 4),
     "decoder[0]"),
    ({"name": "conv"}, (1, 2, 2), "decoder[0]"),
    ({"name": "conv", "decoder": [{"kernel": 9, "padding": 0}]}, (1, 6, 6), "decoder[0]"),
])
def test_impossible_sizes_raise_naming_the_image_size_and_the_layer(settings, shape, layer):
    with pytest.raises(ValueError) as err:
        build(settings, shape)
    assert f"{shape[1]}x{shape[2]}" in str(err.value) and layer in str(err.value), str(err.value)


@pytest.mark.parametrize("decoder, message", [
    ([{"channels": 8, "kernel": 3}], "decoder[0].channels must be left out"),
    ([{"kernel": 4, "stride": 2}, {"kernel": 3}], "decoder[0].channels is required"),
    ([{"kernel": 3, "activation": "relu"}], "decoder[0].activation must be left out"),
])
def test_bad_decoder_settings_are_config_errors(decoder, message):
    model = {"latent_dim": 4, "architecture": {"name": "conv", "decoder": decoder}, "posterior": {"name": "diagonal"},
             "likelihood": {"name": "bernoulli"}, "objective": {"name": "elbo"}}
    with pytest.raises(ConfigError, match="'architecture.decoder'") as err:
        validate_model(model)
    assert message in str(err.value)
    with pytest.raises(ValueError, match="channels|activation"):          # direct construction too
        ARCHITECTURES.get("conv")(decoder=decoder)


def test_study_validation_checks_every_dataset_size(tmp_path):
    """'conv28' on Frey Face (28x20) fails validation naming the model, the dataset and both sizes; 'conv' takes
    MNIST (28x28) and Frey Face."""
    def entry(arch):
        return {"description": "test", "latent_dim": 8, "architecture": arch, "posterior": {"name": "diagonal"},
                "likelihood": {"name": "gaussian_learned_shared"}, "objective": {"name": "elbo"}}

    catalogue = tmp_path / "catalogue.yaml"
    catalogue.write_text(yaml.safe_dump({"models": {
        "net_conv28": entry({"name": "conv28"}), "net_conv": entry({"name": "conv"}),
        "net_dcgan": entry(DCGAN)}}))
    raw = yaml.safe_load((REPO / "studies" / "smoke.yaml").read_text())
    raw["datasets"] = {d: raw["datasets"].get(d, {}) for d in ("mnist", "frey_face")}
    bad = {**copy.deepcopy(raw), "models": {"net_conv": {}, "net_conv28": {}}}
    with pytest.raises(ConfigError) as err:
        validate_study(bad, source="study.yaml", catalogue=catalogue)
    msg = str(err.value)
    assert msg.startswith("study.yaml: ") and "'net_conv28'" in msg and "'frey_face'" in msg, msg
    assert "28 x 20" in msg and "28x28" in msg and "28x20" in msg, msg
    good = {**copy.deepcopy(raw), "models": {"net_conv": {}, "net_dcgan": {}}}
    study = validate_study(good, source="study.yaml", catalogue=catalogue)
    for dataset, start in (("mnist", (7, 7)), ("frey_face", (7, 5))):
        model = build_model(study.cell(dataset, "net_conv", 0).model_config, (1, 28, 28 if dataset == "mnist" else 20))
        assert model.decoder.start_shape == (128, *start)
    # a study override that the sizes do not allow fails naming the dataset
    too_deep = {**copy.deepcopy(raw), "models": {"net_conv": {"architecture": {
        "encoder": [{"channels": 8, "kernel": 4, "stride": 2}] * 5}}}}
    with pytest.raises(ConfigError, match=r"'net_conv'.*'mnist'.*28x28.*encoder\[4\]"):
        validate_study(too_deep, source="study.yaml", catalogue=catalogue)


def test_a_conv_vae_trains_on_3x32x32_images():
    """A few Adam steps of a sigma-VAE with the sigma-VAE network at half width lower the loss on a fixed random
    batch, with finite gradients for every parameter."""
    torch.manual_seed(0)
    half_width = {"name": "conv",
                  "encoder": [{"channels": 16, "kernel": 3}, {"channels": 32, "kernel": 4, "stride": 2},
                              {"channels": 64, "kernel": 5, "stride": 2}],
                  "decoder": [{"channels": 32, "kernel": 6, "stride": 2}, {"channels": 16, "kernel": 6, "stride": 2},
                              {"kernel": 5}]}
    cfg = {"latent_dim": 8, "architecture": half_width, "posterior": {"name": "diagonal"},
           "likelihood": {"name": "gaussian_learned_shared"}, "objective": {"name": "elbo"}}
    model = build_model(cfg, (3, 32, 32))
    x = model.preprocess(torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8),
                         generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss, _ = model.training_loss(x)
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
    model.eval()
    assert model.sample(2).shape == (2, 3, 32, 32)
