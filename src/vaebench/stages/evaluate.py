"""Stage ``evaluate``: score one trained cell on a fixed subset of test images, in nats per image: ELBO
(Kingma & Welling 2014, eq. 7), importance-weighted L_k (Burda et al. 2016, eq. 8) with its diagnostic
L_k - L_{k/10}, bits/dim = (NLL + offset) / (D ln 2), latent analysis, FID (Heusel et al. 2017) and grids."""
from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import numpy as np
import torch

from vaebench import paths
from vaebench.atomic import atomic_path, write_json
from vaebench.checkpoint import CELL_KEYS, load_checkpoint
from vaebench.device import pick_device
from vaebench.data.prepared import load_prepared
from vaebench.grids import interleave_rows, save_grid_png
from vaebench.metrics.bounds import bits_per_dim, per_image_estimates, samples_per_pass
from vaebench.registry import AXES
from vaebench.seeds import generator, stream_seed
from vaebench.tracking import Tracker
from vaebench.vae.sampling import prior_samples

if TYPE_CHECKING:
    from vaebench.config import Study


def describe(model_config) -> dict:
    """The model as structured fields: each component's name and settings, and the likelihood's metadata
    (family, sigma mode, data space, what its number is a likelihood of, whether it is a valid density)."""
    out = {"architecture": model_config.architecture.name, "latent_dim": model_config.latent_dim,
           "description": model_config.description}
    for axis, reg in AXES.items():
        comp = getattr(model_config, axis)
        out[axis] = comp.name
        out[f"{axis}_params"] = comp.model_dump(mode="json", by_alias=True, exclude={"name"})
        out[f"{axis}_description"] = reg.get(comp.name).description
    out.update(AXES["likelihood"].get(model_config.likelihood.name).metadata())
    return out


def _finite_or_none(v):
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None


def _stats(values: torch.Tensor) -> dict:
    """Mean and standard error over images of a per-image array (N,)."""
    v = values.double()
    se = float(v.std(unbiased=True) / math.sqrt(len(v))) if len(v) > 1 else None
    return {"mean": float(v.mean()), "se": se}


def run(study: Study, dataset: str, model_name: str, seed: int) -> dict:
    """Evaluate one cell; writes ``paths.METRICS``, ``paths.PER_IMAGE``, ``paths.SAMPLES_PNG`` and
    ``paths.RECON_PNG``.

    Returns:
        The metrics dict (nats per image unless the key says otherwise).
    Raises:
        FileNotFoundError: the checkpoint, prepared data, classifier or FID reference is missing.
        vaebench.checkpoint.CheckpointError: the checkpoint is damaged or not a train checkpoint;
            CheckpointMismatchError (a subclass): it is another cell's, stale, or its weights do not fit.
        vaebench.data.prepared.PreparedDataError: the prepared dataset is damaged or breaks its contract.
        FloatingPointError: a metric is not finite (metrics and per-image values are not written).
        The others are raised before any output is written.
    """
    from vaebench.metrics.classifier import load_classifier
    from vaebench.metrics.fid import classifier_features, fid_from_statistics
    from vaebench.metrics.latent import latent_analysis
    from vaebench.metrics.references import inception_reference_status, load_reference

    cell = study.cell(dataset, model_name, seed)
    ecfg = cell.evaluate                                       # study settings + this model's overrides
    out = paths.cell_paths(study.name, dataset, model_name, seed)
    device = pick_device(cell.device)
    t0 = time.perf_counter()
    record = cell.record()
    model, ckpt = load_checkpoint(out["checkpoint"], device, expect={k: record[k] for k in CELL_KEYS})
    data = load_prepared(paths.PREPARED.format(study=study.name, dataset=dataset))
    if getattr(model, "sequence", False):
        return run_video(cell, model, ckpt, data, out, device, t0)
    index, x_u8, x, bs = _test_set(model, data, ecfg, device)
    est = per_image_estimates(model, x, x_u8, k=ecfg.iwae_k, memory_mb=ecfg.memory_mb,
                              generator=generator(ecfg.seed, "posterior_samples"))
    latent, _ = latent_analysis(model, x[: ecfg.latent_n], batch_size=bs,
                                seed=stream_seed(ecfg.seed, "latent_samples"))

    # without a classifier: only the first seed's samples, for the grid and the Inception FID
    ref = load_reference(study.name, dataset)
    fid_unavailable = None if ref["available"] else ref["reason"]
    classifier, cls_metrics = ((None, {}) if fid_unavailable is not None
                               else load_classifier(paths.CLASSIFIER.format(study=study.name, dataset=dataset), device))

    fids, first_samples = [], None
    for s in range(ecfg.fid_seeds if classifier is not None else 1):
        samples = prior_samples(model, ecfg.fid_n, stream_seed(ecfg.seed, "fid_samples", s), bs, draw=False)
        first_samples = samples if first_samples is None else first_samples
        if classifier is not None:
            fids.append(fid_from_statistics((ref["mu"], ref["sigma"]),
                                            classifier_features(classifier, samples, device, bs)))
    draws = None if classifier is None else prior_samples(model, ecfg.fid_n, stream_seed(ecfg.seed, "fid_draws"), bs,
                                                          draw=True)
    inception = inception_reference_status(study.name, dataset)
    fid_inception = None
    if inception["computed"]:
        from vaebench.metrics.fid import frechet_distance, feature_statistics
        from vaebench.metrics.inception import inception_features

        feats = inception_features(first_samples, inception["weights"], device)
        fid_inception = frechet_distance(inception["mu"], inception["sigma"], *feature_statistics(feats))
    fid_draws = None if draws is None else fid_from_statistics(
        (ref["mu"], ref["sigma"]), classifier_features(classifier, draws, device, bs))

    # test images (odd rows) above their reconstructions (even rows)
    n_grid = min(ecfg.grid_n, ecfg.fid_n, len(x))
    nrow = int(math.ceil(math.sqrt(n_grid)))
    with atomic_path(out["samples_png"]) as tmp:
        save_grid_png(first_samples[:n_grid].float().cpu(), nrow, tmp)
    originals = x_u8[:n_grid].float().cpu() / 255.0
    recons = model.reconstruct(x[:n_grid]).float().cpu()
    with atomic_path(out["recon_png"]) as tmp:
        save_grid_png(interleave_rows([originals, recons], nrow), nrow, tmp)

    values = _bound_values(cell, model, ckpt, est, len(index), int(np.prod(x_u8.shape[1:])))
    values.update(_latent_values(latent))
    values.update(_fid_values(ecfg, fids, fid_draws, fid_unavailable, ref, inception, fid_inception))
    values.update(_classifier_values(classifier, cls_metrics))
    return _finish(cell, model, ckpt, values, {"index": index, **{k: v.numpy() for k, v in est.items()}}, out,
                   device, t0)


def _test_set(model, data: dict, ecfg, device: torch.device, frames: int = 1):
    """(index, x_u8, x, batch size): the fixed test subset of ``evaluate.n_images`` images (or videos of
    ``frames`` scored frames), as uint8 on ``device`` and preprocessed once with the ``test_noise`` stream."""
    from vaebench.metrics.references import fixed_subset

    n_test = len(data["x_test"])
    index = fixed_subset(n_test, ecfg.n_images or n_test, stream_seed(ecfg.seed, "test_subset"))
    x_u8 = torch.from_numpy(data["x_test"][index]).to(device)
    bs = max(1, min(ecfg.batch_size, samples_per_pass(model, ecfg.memory_mb, frames)))
    x = model.preprocess_fixed(x_u8, seed=stream_seed(ecfg.seed, "test_noise"), batch_size=bs)
    return index, x_u8, x, bs


def _bound_values(cell, model, ckpt: dict, est: dict, n_images: int, dim: int) -> dict:
    """The record's identity, model description and likelihood fields from ``per_image_estimates``' ``est`` over
    ``n_images`` test images (or sequences) of ``dim`` scored dimensions each."""
    ecfg = cell.evaluate
    values = {"study": cell.study, "dataset": cell.dataset, "model": cell.model, "seed": cell.seed,
              **describe(cell.model_config), "cell": ckpt["cell"], "n_images": n_images,
              "test_kl_nats": float(est["kl"].mean()), "iwae_k": ecfg.iwae_k,
              "lk_tolerance_nats": ecfg.lk_tolerance_nats}
    offset = model.likelihood.discrete_offset_nats(dim)
    columns = {"": offset} | {f"_{c}": 0.0 for c in sorted({k[len("L_k_"):] for k in est if k.startswith("L_k_")})}
    for suffix, off in columns.items():
        lk, lk10 = est[f"L_k{suffix}"], est[f"L_k10{suffix}"]
        values.update(_likelihood_values(suffix, {
            "elbo": _stats(est[f"elbo{suffix}"]), "recon": _stats(est[f"recon{suffix}"]), "nll": _stats(-lk),
            "lk_gap": float((lk - lk10).mean()), "lk_gap_se": _stats(lk - lk10)["se"],
            "bits_per_dim": bits_per_dim(-float(lk.mean()), off, dim)}))
    values["lk_converged"] = values["lk_gap_nats"] <= ecfg.lk_tolerance_nats
    if "sse" in est:
        values.update({"test_sse": float(est["sse"].mean()), "test_mse": float(est["sse"].mean()) / dim})
    return values


def _finish(cell, model, ckpt: dict, values: dict, arrays: dict, out: dict, device: torch.device, t0: float) -> dict:
    """Add the training scalars and timings to ``values``, build the record (FloatingPointError naming a
    non-finite metric, before anything is written), write ``per_image`` (``arrays``) and ``metrics``, and log them
    to the cell's MLflow run; returns the record."""
    from vaebench.metrics import spec

    tracked = model.tracked_scalars()
    values.update({"train_seconds": ckpt["train_seconds"], "eval_seconds": time.perf_counter() - t0,
                   "epochs": ckpt["epochs"], "device": str(device), "mlflow_run_id": ckpt.get("mlflow_run_id")})
    values.update({s.record_key: tracked.get(s.name) for s in spec.TRACKED.values()})
    metrics = spec.build_record(values)
    for key, value in metrics.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise FloatingPointError(f"{cell.dataset}/{cell.model}/seed{cell.seed}: metric {key} is {value}")
    with atomic_path(out["per_image"]) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    write_json(out["metrics"], metrics)

    tracker = Tracker(cell.study)
    tracker.resume_run(ckpt.get("mlflow_run_id"))
    tracker.log_record(metrics, step=ckpt["epochs"])
    for key in ("metrics", "samples_png", "recon_png"):
        tracker.log_artifact(str(out[key]), "evaluation")
    return metrics


def run_video(cell, model, ckpt: dict, data: dict, out: dict, device: torch.device, t0: float) -> dict:
    """Evaluate a sequence model (``run`` dispatches here) on a fixed subset of test sequences, nats per sequence
    (its T - 1 frames after the first): ELBO, L_k and its diagnostic, and SVG's video prediction scores
    (:mod:`vaebench.metrics.video`: ``video_samples`` continuations of the first n_past frames per sequence,
    best-of-N SSIM and PSNR per predicted frame). ``samples_png``: per shown sequence, the true frames 1..T-1, the
    best continuation and one other; ``recon_png``: true frames over teacher-forced reconstructions. The frame FID
    (:func:`_frame_fid`) when the study computes Inception statistics. The latent analysis against the learned prior
    (:func:`vaebench.metrics.latent.sequence_latent_analysis`: rate, its value per frame, active units) on the
    first ``latent_n`` of those sequences; the aggregate-posterior fields are None."""
    from vaebench.metrics import video
    from vaebench.metrics.latent import sequence_latent_analysis

    ecfg = cell.evaluate
    frames = data["x_test"].shape[1] - 1
    index, x_u8, x, bs = _test_set(model, data, ecfg, device, frames)
    est = per_image_estimates(model, x, x_u8, k=ecfg.iwae_k, memory_mb=ecfg.memory_mb,
                              generator=generator(ecfg.seed, "posterior_samples"))
    values = _bound_values(cell, model, ckpt, est, len(index), int(np.prod(x_u8.shape[2:])) * frames)
    values["test_elbo_per_frame_nats"] = values["test_elbo_nats"] / frames

    model.eval()
    samples = video.predict_samples(model, x, ecfg.video_samples, stream_seed(ecfg.seed, "video_samples"),
                                    batch_size=bs)
    truth = x_u8[:, model.n_past:].float().cpu() / 255.0
    scores = video.frame_scores(samples, truth)
    best = video.best_of_n(scores)
    values.update(video.summary(scores, best))
    values.update({"video_samples": ecfg.video_samples, "n_past": model.n_past, "scored_frames": frames,
                   "predicted_frames": truth.shape[1]})

    n_show = min(ecfg.grid_n // len(paths.VIDEO_GRID_ROWS["samples_png"]) or 1, len(x))
    seen = x_u8[:n_show, 1:].float().cpu() / 255.0             # (n_show, frames, C, H, W)
    shown = torch.arange(n_show)
    chosen = best["best_sample"][:n_show].long()
    continuations = [torch.cat([seen[:, :model.n_past - 1], samples[s, shown]], 1)
                     for s in (chosen, (chosen + 1) % ecfg.video_samples)]
    with atomic_path(out["samples_png"]) as tmp:
        save_grid_png(interleave_rows([v.flatten(0, 1) for v in (seen, *continuations)], frames), frames, tmp)
    recons = model.reconstruct(x[:n_show]).float().cpu()
    with atomic_path(out["recon_png"]) as tmp:
        save_grid_png(interleave_rows([seen.flatten(0, 1), recons.flatten(0, 1)], frames), frames, tmp)

    values.update(_frame_fid(cell, samples[0], device))
    latent = sequence_latent_analysis(model, x[: ecfg.latent_n], batch_size=bs)
    values.update(dict.fromkeys(("latent_marginal_kl_nats", "latent_mutual_info_nats", "latent_mutual_info_saturated",
                                 "latent_log_n_nats")))
    values.update({"latent_rate_nats": latent["rate_nats"], "latent_rate_per_frame_nats": latent["rate_per_frame_nats"],
                   "active_units": latent["active_units"], "latent_n": latent["n_sequences"]})
    arrays = {"index": index, **{k: v.numpy() for k, v in est.items()}, "best_sample": best["best_sample"].numpy(),
              **{f"{s}_best": best[f"{s}_max"].mean(1).numpy() for s in scores},
              **{f"{s}_best_sample": best[f"{s}_best_sample"].mean(1).numpy() for s in scores}}
    return _finish(cell, model, ckpt, values, arrays, out, device, t0)


def _frame_fid(cell, continuation: torch.Tensor, device: torch.device) -> dict:
    """The FID fields of a sequence model: the Inception FID of the predicted frames of one continuation per test
    sequence, ``continuation`` (N, F, C, H, W) in [0, 1], against the statistics of every frame of the test
    sequences (when the study computes Inception statistics); no classifier-feature FID (video datasets are
    unlabelled)."""
    from vaebench.metrics.references import inception_reference_status

    reason = "videos: no classifier of frames (unlabelled); the frame FID is the Inception FID"
    out = dict.fromkeys(("fid_classifier", "fid_classifier_std", "fid_classifier_per_seed", "fid_classifier_draws",
                         "fid_n", "fid_seeds", "fid_floor", "fid_floor_n", "fid_inception", "fid_inception_n",
                         "fid_inception_reference_n"))
    out.update({"fid_classifier_unavailable": reason, "fid_reference": f"unavailable: {reason}",
                **_classifier_values(None, {})})
    inception = inception_reference_status(cell.study, cell.dataset)
    out["fid_inception_status"] = inception["status"]
    if inception["computed"]:
        from vaebench.metrics.fid import feature_statistics, frechet_distance
        from vaebench.metrics.inception import inception_features

        frames = continuation.flatten(0, 1)
        feats = inception_features(frames, inception["weights"], device)
        out.update({"fid_inception": frechet_distance(inception["mu"], inception["sigma"], *feature_statistics(feats)),
                    "fid_inception_n": len(frames), "fid_inception_reference_n": inception.get("n_reference"),
                    "fid_inception_status": f"{inception['status']}; the predicted frames of the first continuation "
                                            "of each test sequence against every test frame"})
    return out


# ------------------------------------------------------------------------------------------------
# The record's fields, by source (declared in vaebench.metrics.spec)

def _likelihood_values(suffix: str, col: dict) -> dict:
    """The record fields of one likelihood column (suffix '' or '_discretised'); the main column adds its
    reconstruction term and the SE of its gap."""
    out = {f"test_elbo{suffix}_nats": col["elbo"]["mean"], f"test_elbo{suffix}_se": col["elbo"]["se"],
           f"test_nll_iwae{suffix}_nats": col["nll"]["mean"], f"test_nll_iwae{suffix}_se": col["nll"]["se"],
           f"lk_gap{suffix}_nats": col["lk_gap"], f"bits_per_dim{suffix}": col["bits_per_dim"]}
    if not suffix:
        out.update({"test_recon_nats": col["recon"]["mean"], "lk_gap_se": col["lk_gap_se"]})
    return out


def _latent_values(latent: dict) -> dict:
    """The record fields of :func:`vaebench.metrics.latent.latent_analysis`'s summary (per layer for a hierarchical
    model)."""
    values = {"latent_rate_nats": latent["rate_nats"], "latent_marginal_kl_nats": latent["marginal_kl_nats"],
              "latent_mutual_info_nats": latent["mutual_info_nats"],
              "latent_mutual_info_saturated": latent["mutual_info_saturated"],
              "latent_log_n_nats": latent["log_n_nats"], "active_units": latent["active_units"],
              "latent_n": latent["n_images"]}
    if "layer_dims" in latent:
        values.update({"latent_dims_per_layer": latent["layer_dims"],
                       "latent_rate_per_layer_nats": latent["rate_per_layer_nats"],
                       "active_units_per_layer": latent["active_units_per_layer"]})
    return values


def _fid_values(ecfg, fids: list, fid_draws, fid_unavailable, ref: dict, inception: dict, fid_inception) -> dict:
    """The FID record fields: classifier-feature FID over sample seeds, draws, floor, Inception FID."""
    reference = (f"unavailable: {fid_unavailable}" if fid_unavailable is not None else
                 f"{ecfg.fid_n} prior samples (decoder means, 8-bit; mean over {ecfg.fid_seeds} sample "
                 f"seeds) vs the statistics of all {ref['n_reference']} test images")
    return {
        "fid_classifier": float(np.mean(fids)) if fids else None,
        "fid_classifier_std": float(np.std(fids, ddof=1)) if len(fids) > 1 else None,
        "fid_classifier_per_seed": fids if fids else None, "fid_classifier_draws": fid_draws,
        "fid_classifier_unavailable": fid_unavailable, "fid_n": ecfg.fid_n, "fid_seeds": ecfg.fid_seeds,
        "fid_floor": ref.get("floor_fid"), "fid_floor_n": ref.get("floor_n"), "fid_reference": reference,
        "fid_blurred_reference": ref.get("blurred_fid"), "fid_noise_reference": ref.get("noise_fid"),
        "fid_inception": fid_inception, "fid_inception_n": ecfg.fid_n if inception["computed"] else None,
        "fid_inception_reference_n": inception.get("n_reference"), "fid_inception_status": inception["status"],
    }


def _classifier_values(classifier, cls_metrics: dict) -> dict:
    """The FID classifier's record fields (None without a classifier or a validation split)."""
    return {"classifier_test_accuracy": cls_metrics.get("test_accuracy"),
            "classifier_val_accuracy": _finite_or_none(cls_metrics.get("val_accuracy")),
            "classifier_epochs": cls_metrics.get("epochs"),
            "classifier_feature_dim": None if classifier is None else classifier.kwargs["feature_dim"]}
