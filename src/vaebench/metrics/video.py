"""Video prediction as SVG evaluates it (Denton & Fergus 2018, Section 4; svg-code generate_svg_lp.py and
utils.eval_seq; docs/methods.md 11.4): for each test sequence, N continuations of its first n_past frames sampled
from the learned prior, scored against the true frames by SSIM and PSNR per predicted frame (torchmetrics; SSIM
with scikit-image's default window, which svg-code used: 7x7 uniform, K1 = 0.01, K2 = 0.03; data range 1 on
[0, 1] frames; a colour frame's SSIM is the mean over channels), then the best of the N: the per-frame maximum
over samples, and the one sample with the highest SSIM averaged over frames (the one svg-code's GIFs show)."""
from __future__ import annotations

import math

import torch

SSIM_WINDOW = 7
PSNR_CAP_DB = 100.0


@torch.no_grad()
def frame_scores(predicted: torch.Tensor, truth: torch.Tensor, batch_frames: int = 4096) -> dict[str, torch.Tensor]:
    """SSIM and PSNR (dB) of every predicted frame: ``predicted`` (S, N, F, C, H, W) and ``truth`` (N, F, C, H, W),
    float in [0, 1] -> {'ssim', 'psnr'}: (S, N, F) float64 on the CPU. PSNR = 10 log10(1 / MSE), capped at
    ``PSNR_CAP_DB`` for an exact match. Raises ValueError for mismatched shapes."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    if predicted.dim() != 6 or predicted.shape[1:] != truth.shape:
        raise ValueError(f"frame_scores: predicted (S, N, F, C, H, W) must match truth (N, F, C, H, W), got "
                         f"{tuple(predicted.shape)} and {tuple(truth.shape)}")
    s, n, f = predicted.shape[:3]
    pred = predicted.reshape(-1, *truth.shape[-3:]).float()
    frames = truth.reshape(-1, *truth.shape[-3:]).float()      # the S samples share them: indexed, never copied S times
    ssim, psnr = [], []
    for i in range(0, len(pred), batch_frames):
        p = pred[i: i + batch_frames]
        t = frames[torch.arange(i, i + len(p)) % len(frames)]
        per_channel = structural_similarity_index_measure(
            p.flatten(0, 1)[:, None], t.flatten(0, 1)[:, None], gaussian_kernel=False, kernel_size=SSIM_WINDOW,
            data_range=1.0, reduction="none")
        ssim.append(per_channel.view(len(p), -1).mean(1).double().cpu())
        db = peak_signal_noise_ratio(p, t, data_range=1.0, reduction="none", dim=(1, 2, 3))
        psnr.append(db.double().cpu().nan_to_num(posinf=PSNR_CAP_DB).clamp(max=PSNR_CAP_DB))
    return {"ssim": torch.cat(ssim).view(s, n, f), "psnr": torch.cat(psnr).view(s, n, f)}


def best_of_n(scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The best of the S samples per sequence, from ``frame_scores``' (S, N, F) arrays: '<score>_max' (N, F) the
    per-frame maximum over samples; 'best_sample' (N,) the sample of highest frame-mean SSIM, and
    '<score>_best_sample' (N, F) its scores."""
    best = scores["ssim"].mean(-1).argmax(0)
    out = {"best_sample": best}
    for name, v in scores.items():
        out[f"{name}_max"] = v.max(0).values
        out[f"{name}_best_sample"] = v.gather(0, best.view(1, -1, 1).expand(1, *v.shape[1:]))[0]
    return out


@torch.no_grad()
def predict_samples(model, x: torch.Tensor, n_samples: int, seed: int, batch_size: int) -> torch.Tensor:
    """``n_samples`` continuations of every sequence of data-space x (N, T, C, H, W) by ``model.predict`` (its
    n_past frames conditioning, T - n_past predicted), ``batch_size`` sequences x samples per pass, from a CPU
    generator seeded with ``seed``: (n_samples, N, T - n_past, C, H, W) float in [0, 1] on the CPU. Raises
    ValueError if n_samples or batch_size < 1."""
    if int(n_samples) < 1 or int(batch_size) < 1:
        raise ValueError(f"predict_samples: n_samples and batch_size must be >= 1, got {n_samples!r}, {batch_size!r}")
    g = torch.Generator().manual_seed(int(seed))
    n, t = x.shape[:2]
    n_future = t - model.n_past
    per_pass = max(1, int(batch_size) // int(n_samples))
    parts = []
    for i in range(0, n, per_pass):
        xb = x[i: i + per_pass]
        rep = xb[:, :model.n_past].unsqueeze(0).expand(int(n_samples), *xb[:, :model.n_past].shape).flatten(0, 1)
        parts.append(model.predict(rep, n_future, generator=g).float().cpu().view(int(n_samples), len(xb), n_future,
                                                                                   *x.shape[2:]))
    return torch.cat(parts, 1)


def summary(scores: dict[str, torch.Tensor], best: dict[str, torch.Tensor]) -> dict:
    """Record values: per score s in (ssim, psnr), 's_best' (mean over sequences and frames of the per-frame
    maximum), its SE over sequences 's_best_se', 's_best_per_frame' (list, one per predicted frame), and the same for
    the single best sample ('s_best_sample', 's_best_sample_per_frame') and for one sample ('s_sample',
    the mean over samples)."""
    out = {}
    for name in scores:
        per_seq = best[f"{name}_max"].mean(1)
        out[f"{name}_best"] = float(per_seq.mean())
        out[f"{name}_best_se"] = float(per_seq.std() / math.sqrt(len(per_seq))) if len(per_seq) > 1 else None
        out[f"{name}_best_per_frame"] = [float(v) for v in best[f"{name}_max"].mean(0)]
        out[f"{name}_best_sample"] = float(best[f"{name}_best_sample"].mean())
        out[f"{name}_best_sample_per_frame"] = [float(v) for v in best[f"{name}_best_sample"].mean(0)]
        out[f"{name}_sample"] = float(scores[name].mean())
    return out
