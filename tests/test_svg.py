"""SVG-LP (``vaebench.vae.sequence``, architectures ``svg_dcgan64`` and ``svg_vgg64``): the per-frame KL against
torch.distributions, causality of the posterior and the learned prior, log w against an independent recomputation,
the closed-form ELBO against the mean log weight, generation step by step against the teacher-forced path, every
likelihood and objective plugged in."""
from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

from vaebench.config import ConfigError
from vaebench.vae import build_model

TINY_NETS = {"name": "svg_dcgan64", "filters": 4, "g_dim": 8, "rnn_size": 16, "n_past": 3}


def svg(likelihood="gaussian_learned_shared", objective=None, latent_dim=3, **nets):
    cfg = {"latent_dim": latent_dim, "architecture": {**TINY_NETS, **nets}, "posterior": {"name": "diagonal"},
           "likelihood": {"name": likelihood}, "objective": objective or {"name": "elbo"}}
    return build_model(cfg, (6, 1, 64, 64))


def videos(b=3, t=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x8 = torch.zeros(b, t, 1, 64, 64, dtype=torch.uint8)
    for i in range(b):                                   # a bright square moving one pixel per frame
        for s in range(t):
            y0 = int(torch.randint(0, 40, (1,), generator=g))
            x8[i, s, 0, y0: y0 + 12, 10 + 2 * s: 22 + 2 * s] = 200
    return x8


@pytest.fixture(params=["svg_dcgan64", "svg_vgg64"])
def model(one_thread, request):
    """A tiny model in eval mode whose BatchNorm running statistics come from 30 training-mode passes (at
    initialisation they are (0, 1), under which the N(0, 0.02) weights shrink the deep VGG net's signal to ~1e-10)."""
    torch.manual_seed(0)
    m = svg(name=request.param)
    x = m.preprocess(videos(), torch.Generator().manual_seed(3))
    with torch.no_grad():
        for bn in (mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d)):
            bn.momentum = None                            # cumulative average over the passes
        for _ in range(30):
            m.forward_terms(x)
    m.eval()
    return m


def test_kl_is_the_sum_over_frames_of_the_closed_form_kl_to_the_learned_prior(model):
    x = model.preprocess(videos(), torch.Generator().manual_seed(1))
    h, _ = model.encode_frames(x)
    q, p = model.posterior_and_prior(h)
    ref = kl_divergence(Independent(Normal(q.mu, (0.5 * q.logvar).exp()), 1),
                        Independent(Normal(p.mu, (0.5 * p.logvar).exp()), 1)).view(3, 5).sum(-1)
    kl = model.forward_terms(x)["kl"]
    assert kl.shape == (3,) and torch.allclose(kl, ref, rtol=1e-5, atol=1e-5)
    assert (kl > 0).all()


@pytest.mark.parametrize("training", [False, True])
def test_posterior_sees_frames_up_to_t_and_the_prior_frames_before_t(model, training):
    """In eval mode and in training mode, where BatchNorm normalises with batch statistics: those of one time step
    (a statistic over all frames would let frame 3 shift q(z_1))."""
    model.train(training)
    x = model.preprocess(videos(), torch.Generator().manual_seed(1))
    changed = x.clone()
    changed[:, 3] = 1.0 - changed[:, 3]                   # frame 3 only
    (q0, p0), (q1, p1) = (model.posterior_and_prior(model.encode_frames(v)[0]) for v in (x, changed))
    mu_q0, mu_q1 = q0.mu.view(3, 5, -1), q1.mu.view(3, 5, -1)   # rows t = 1..5
    mu_p0, mu_p1 = p0.mu.view(3, 5, -1), p1.mu.view(3, 5, -1)
    assert torch.equal(mu_q0[:, :2], mu_q1[:, :2]) and not torch.equal(mu_q0[:, 2], mu_q1[:, 2])   # q(z_3) moves
    assert torch.equal(mu_p0[:, :3], mu_p1[:, :3]) and not torch.equal(mu_p0[:, 3], mu_p1[:, 3])   # p(z_4) moves


def test_log_weights_are_log_px_plus_log_prior_minus_log_posterior_at_the_drawn_path(model):
    x = model.preprocess(videos(), torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(5)
    terms = model.forward_terms(x, k=4, need_z=True, generator=g)
    z = terms["z"].view(4, 3 * 5, 3)
    h, _ = model.encode_frames(x)
    q, p = model.posterior_and_prior(h)
    lq = Independent(Normal(q.mu, (0.5 * q.logvar).exp()), 1).log_prob(z).view(4, 3, 5).sum(-1)
    lp = Independent(Normal(p.mu, (0.5 * p.logvar).exp()), 1).log_prob(z).view(4, 3, 5).sum(-1)
    assert torch.allclose(terms["log_w"], terms["log_px"] + lp - lq, rtol=1e-5, atol=1e-3)
    # the same draws decode to the same log p(x|z): log_px at k = 1 with the generator restarted
    again = model.forward_terms(x, k=4, generator=torch.Generator().manual_seed(5))
    assert torch.equal(again["log_w"], terms["log_w"])


def test_closed_form_elbo_is_the_mean_log_weight(one_thread):
    torch.manual_seed(0)
    model = svg().eval()
    x = model.preprocess(videos(b=2), torch.Generator().manual_seed(1))
    with torch.no_grad():
        for logvar_head in (model.posterior_rnn.heads[1], model.prior_rnn.heads[1]):
            logvar_head.bias.fill_(-1.0)                  # posterior and prior differ in scale, not only mean
        model.posterior_rnn.heads[0].bias.fill_(0.7)
        elbo = model.elbo_terms(x)["elbo"]
        log_w = torch.cat([model.log_weights(x, 500, generator=torch.Generator().manual_seed(s)) for s in range(3)])
    mean, se = log_w.double().mean(0), log_w.double().std(0) / math.sqrt(len(log_w))
    assert ((mean - elbo.double()).abs() < 4 * se + 1e-3).all(), (mean, elbo, se)


def test_generation_step_by_step_is_the_teacher_forced_path_on_its_own_frames(model):
    """With deterministic posterior and prior (log variance -40), ``predict``'s frames equal the teacher-forced
    decoder means on the video made of the conditioning frames and those predictions, with z_t the posterior mean
    for t < n_past and the prior mean after (so the skip rule and the recurrent states agree)."""
    with torch.no_grad():
        for head in (model.posterior_rnn.heads[1], model.prior_rnn.heads[1]):
            head.weight.zero_()
            head.bias.fill_(-40.0)
    x = model.preprocess(videos(), torch.Generator().manual_seed(1))
    predicted = model.predict(x, n_future=3)
    assert predicted.shape == (3, 3, 1, 64, 64)
    full = torch.cat([x[:, :3], predicted], 1)            # n_past = 3 true frames, then the predictions
    h, skips = model.encode_frames(full)
    q, p = model.posterior_and_prior(h)
    z = torch.cat([q.mu.view(3, 5, -1)[:, :2], p.mu.view(3, 5, -1)[:, 2:]], 1)
    out = model.decode_path(h, skips, z.unsqueeze(0))[0]
    teacher = model.likelihood.mean(out).view(3, 5, 1, 64, 64)[:, 2:]
    assert torch.allclose(teacher, predicted, atol=1e-5)
    assert [model.skip_index(t) for t in range(1, 6)] == [0, 1, 1, 1, 1]


def test_sequence_latent_analysis_against_torch_distributions_and_a_dense_variance(model):
    """Rate and its per-frame values against torch.distributions' KL; active units against a dense recomputation
    of the standardised departure (mu_q - mu_p) / sigma_p; the batch size changes nothing; the training mode is
    restored."""
    from vaebench.metrics.latent import sequence_latent_analysis

    with torch.no_grad():                    # latent 0 and 1 informative; in latent 2 q and p have constant means
        model.posterior_rnn.heads[0].weight.normal_(0.0, 20.0, generator=torch.Generator().manual_seed(5))
        for rnn in (model.posterior_rnn, model.prior_rnn):
            rnn.heads[0].weight[2].zero_()
    x = model.preprocess(videos(b=5, seed=4), torch.Generator().manual_seed(1))
    with torch.no_grad():
        q, p = model.posterior_and_prior(model.encode_frames(x)[0])
    kl = kl_divergence(Independent(Normal(q.mu, (0.5 * q.logvar).exp()), 1),
                       Independent(Normal(p.mu, (0.5 * p.logvar).exp()), 1)).double().view(5, 5)
    delta = ((q.mu - p.mu) / (0.5 * p.logvar).exp()).double().numpy()
    out = sequence_latent_analysis(model, x, batch_size=2)
    assert out["rate_nats"] == pytest.approx(float(kl.sum(-1).mean()), rel=1e-5)
    assert out["rate_per_frame_nats"] == pytest.approx(kl.mean(0).tolist(), rel=1e-5)
    assert out["unit_variances"] == pytest.approx(delta.var(0, ddof=1).tolist(), rel=1e-4)
    assert out["active_units"] == int((delta.var(0, ddof=1) > 0.01).sum()) == 2 and out["unit_variances"][2] < 1e-10
    assert out["n_sequences"] == 5 and out["latent_dim"] == 3
    whole = sequence_latent_analysis(model, x, batch_size=500)
    for key, value in out.items():
        assert whole[key] == pytest.approx(value, rel=1e-5), key
    model.train()
    sequence_latent_analysis(model, x)
    assert model.training


def test_a_posterior_equal_to_the_learned_prior_has_no_active_units_and_zero_rate(model, monkeypatch):
    """q = p: nothing is learned from frame t beyond the past, whatever p's means do over time; with a fixed
    N(0, I) prior the criterion is Burda et al.'s variance of the posterior mean."""
    from vaebench.metrics.latent import sequence_latent_analysis
    from vaebench.vae.posteriors.diagonal import DiagonalGaussian

    x = model.preprocess(videos(b=5, seed=4), torch.Generator().manual_seed(1))
    real = model.posterior_and_prior
    monkeypatch.setattr(model, "posterior_and_prior", lambda h: (real(h)[1], real(h)[1]))
    out = sequence_latent_analysis(model, x)
    assert out["rate_nats"] == pytest.approx(0.0, abs=1e-9) and out["active_units"] == 0
    assert out["unit_variances"] == [0.0] * 3

    def standard_prior(h):
        q, _ = real(h)
        return q, DiagonalGaussian(torch.zeros_like(q.mu), torch.zeros_like(q.logvar))

    monkeypatch.setattr(model, "posterior_and_prior", standard_prior)
    out = sequence_latent_analysis(model, x)
    with torch.no_grad():
        mu = real(model.encode_frames(x)[0])[0].mu.double()
    assert out["unit_variances"] == pytest.approx(mu.var(0).tolist(), rel=1e-4)
    with pytest.raises(ValueError, match="N >= 2 sequences"):
        sequence_latent_analysis(model, x[:1])
    image_model = build_model({"latent_dim": 2, "architecture": {"name": "mlp", "hidden_dims": [8]},
                               "posterior": {"name": "diagonal"}, "likelihood": {"name": "bernoulli"},
                               "objective": {"name": "elbo"}}, (1, 4, 4))
    with pytest.raises(ValueError, match="no learned prior"):
        sequence_latent_analysis(image_model, x)


@pytest.mark.parametrize("likelihood", ["gaussian_fixed", "gaussian_learned_shared", "gaussian_optimal_shared",
                                        "gaussian_optimal_per_image", "gaussian_per_pixel", "bernoulli"])
def test_every_sigma_mode_scores_frames_as_images(one_thread, likelihood):
    """The per-sequence log p(x|z) is the likelihood's per-image log p summed over the scored frames 1..T-1."""
    torch.manual_seed(0)
    m = svg(likelihood)
    m.train()
    x8 = videos()
    x = m.preprocess(x8, torch.Generator().manual_seed(1))
    terms = m.forward_terms(x, generator=torch.Generator().manual_seed(2))
    h, skips = m.encode_frames(m.likelihood.to_unit(x))
    q, _ = m.posterior_and_prior(h)
    z = q.rsample(generator=torch.Generator().manual_seed(2)).view(1, 3, 5, -1)
    out = m.decode_path(h, skips, z)[0]
    per_frame = m.likelihood.log_prob(x[:, 1:].flatten(0, 1), out).view(3, 5)
    assert torch.allclose(terms["log_px"], per_frame.sum(-1), rtol=1e-5)
    loss, logs = m.training_loss(x)
    loss.backward()
    assert math.isfinite(float(loss.detach())) and all(p.grad is not None for p in m.parameters() if p.requires_grad)


@pytest.mark.parametrize("objective", [{"name": "elbo", "beta": 1e-4}, {"name": "iwae", "k": 3},
                                       {"name": "geco", "kappa": 0.05}])
def test_objectives_plug_in(one_thread, objective):
    torch.manual_seed(0)
    m = svg("gaussian_fixed", objective)
    x = m.preprocess(videos(), torch.Generator().manual_seed(1))
    loss, logs = m.training_loss(x)
    loss.backward()
    assert math.isfinite(float(loss.detach())) and "loss" in logs


def test_invalid_combinations_and_shapes_are_rejected():
    with pytest.raises(ConfigError, match="posterior.name.*diagonal Gaussian"):
        build_model({"latent_dim": 3, "architecture": TINY_NETS, "posterior": {"name": "ar1"},
                     "likelihood": {"name": "bernoulli"}, "objective": {"name": "elbo"}}, (6, 1, 64, 64))
    with pytest.raises(ConfigError, match="objective.name.*learned p"):
        build_model({"latent_dim": 3, "architecture": TINY_NETS, "posterior": {"name": "diagonal"},
                     "likelihood": {"name": "bernoulli"}, "objective": {"name": "info_vae"}}, (6, 1, 64, 64))
    with pytest.raises(ValueError, match=r"takes \(T, C, H, W\) videos"):
        build_model({"latent_dim": 3, "architecture": TINY_NETS, "posterior": {"name": "diagonal"},
                     "likelihood": {"name": "bernoulli"}, "objective": {"name": "elbo"}}, (1, 64, 64))
    with pytest.raises(ValueError, match="frames must be 64x64"):
        build_model({"latent_dim": 3, "architecture": TINY_NETS, "posterior": {"name": "diagonal"},
                     "likelihood": {"name": "bernoulli"}, "objective": {"name": "elbo"}}, (6, 1, 32, 32))
    with pytest.raises(ValueError, match="n_past: must be >= 2"):
        svg(n_past=1)
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\) uint8 videos"):
        svg().preprocess(torch.zeros(2, 1, 64, 64, dtype=torch.uint8))


def test_frame_scores_pair_every_sample_with_its_own_true_frame_whatever_the_chunking():
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    from vaebench.metrics.video import frame_scores

    g = torch.Generator().manual_seed(0)
    truth = torch.rand(2, 3, 1, 16, 16, generator=g)                       # (N, F, C, H, W)
    predicted = (truth + 0.2 * torch.randn(4, 2, 3, 1, 16, 16, generator=g)).clamp(0, 1)   # S = 4 samples
    whole = frame_scores(predicted, truth)
    for batch_frames in (1, 5, 7):                                          # chunks that cross samples
        chunked = frame_scores(predicted, truth, batch_frames=batch_frames)
        assert all(torch.equal(chunked[k], whole[k]) for k in whole)
    for s, n, f in [(0, 0, 0), (3, 1, 2), (2, 0, 1)]:                      # one frame at a time, by hand
        p, t = predicted[s, n, f][None], truth[n, f][None]
        ssim = structural_similarity_index_measure(p, t, gaussian_kernel=False, kernel_size=7, data_range=1.0)
        assert whole["ssim"][s, n, f] == pytest.approx(float(ssim), abs=1e-6)
        assert whole["psnr"][s, n, f] == pytest.approx(float(peak_signal_noise_ratio(p, t, data_range=1.0)), rel=1e-5)
