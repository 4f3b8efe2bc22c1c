"""Stage ``evaluate``: score one trained cell on the test split: ELBO, importance-weighted L_k, bits/dim,
FID and image grids, written to ``metrics.json`` with the structured description of the model.

Estimators (all per test image, in nats, then averaged):
  * ELBO: single-sample estimate log p(x|z) - KL(q(z|x) || p(z)) with the closed-form KL (Kingma &
    Welling 2014, eq. 7), split into its reconstruction (-log p(x|z)) and KL terms, on ``elbo_n`` images.
  * L_k: the importance-weighted bound (Burda et al. 2016, eq. 8) with k = ``iwae_k`` samples from
    q(z|x), on the first ``iwae_n`` test images; test NLL = -L_k (an upper bound on -log p(x)).
  * bits/dim = (NLL + offset) / (D ln 2), offset = the likelihood's ``discrete_offset_nats(D)``.
  * FID in the feature space of the dataset's classifier between ``fid_n`` prior samples (decoder
    means, quantised to 8 bits) and the first ``fid_n`` test images (Heusel et al. 2017, "GANs Trained
    by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium", the Frechet distance of Gaussians).
The test set is mapped into the model's data space once with a fixed seed (binarised or dequantised),
so every model of a likelihood family is scored on the same data.
"""
from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import numpy as np
import torch
from pydantic import Field, NonNegativeInt, PositiveInt

from vaebench import paths
from vaebench.atomic import atomic_path, write_json
from vaebench.checkpoint import load_checkpoint, pick_device
from vaebench.data.prepared import load_prepared
from vaebench.metrics.bounds import bits_per_dim, iwae_bound
from vaebench.registry import AXES, StrictConfig
from vaebench.tracking import Tracker

if TYPE_CHECKING:
    from vaebench.config import Study


class EvaluateConfig(StrictConfig):
    """Evaluation settings: sizes of the test-set estimates, FID and grids."""

    elbo_n: PositiveInt | None = Field(None, description="Test images for the ELBO (null = the whole test split).")
    iwae_k: PositiveInt = Field(1000, description="Importance samples k of the L_k estimate of log p(x).")
    iwae_n: PositiveInt | None = Field(1000, description="Test images for L_k (null = the whole test split).")
    iwae_chunk: PositiveInt = Field(250, description="Samples per forward pass when computing L_k (memory bound).")
    fid_n: int = Field(10000, ge=2, description="Prior samples and test images for FID.")
    grid_n: int = Field(64, ge=1, le=400, description="Images in the sample and reconstruction grids.")
    batch_size: PositiveInt = Field(500, description="Images per forward pass.")
    seed: NonNegativeInt = Field(1234, description="Seed of the test-set binarisation/dequantisation and of the samples.")


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


@torch.no_grad()
def run(study: Study, dataset: str, model_name: str, seed: int) -> dict:
    """Evaluate one cell; writes ``paths.METRICS``, ``paths.SAMPLES_PNG`` and ``paths.RECON_PNG``.

    Returns:
        The metrics dict (nats per image unless the key says otherwise).
    Raises:
        FileNotFoundError: the checkpoint, prepared data or classifier is missing.
        FloatingPointError: a metric is not finite (nothing is written).
    """
    from torchvision.utils import make_grid, save_image  # lazy: torchvision import is slow

    from vaebench.metrics.classifier import load_classifier
    from vaebench.metrics.fid import fid_classifier

    cell = study.cell(dataset, model_name, seed)
    ecfg = cell.evaluate                                       # study settings + this model's overrides
    out = paths.cell_paths(dataset, model_name, seed)
    device = pick_device(cell.device)
    t0 = time.perf_counter()
    model, ckpt = load_checkpoint(out["checkpoint"], device)
    data = load_prepared(paths.PREPARED.format(dataset=dataset))
    x_test_u8 = torch.from_numpy(data["x_test"]).to(device)
    dim = int(np.prod(x_test_u8.shape[1:]))
    bs = ecfg.batch_size
    torch.manual_seed(ecfg.seed)
    x_test = model.preprocess_fixed(x_test_u8, seed=ecfg.seed, batch_size=bs)

    # ELBO and its terms, single sample per image
    n_elbo = min(ecfg.elbo_n or len(x_test), len(x_test))
    terms = {"elbo": 0.0, "recon": 0.0, "kl": 0.0}
    for i in range(0, n_elbo, bs):
        t = model.elbo_terms(x_test[i : min(i + bs, n_elbo)])
        for k in terms:
            terms[k] += float(t[k].double().sum())
    terms = {k: v / n_elbo for k, v in terms.items()}

    # importance-weighted L_k
    n_iwae = min(ecfg.iwae_n or len(x_test), len(x_test))
    k = ecfg.iwae_k
    iw_bs = max(1, min(bs, 100))
    lk = torch.cat([
        iwae_bound(model, x_test[i : min(i + iw_bs, n_iwae)], k=k, chunk_size=ecfg.iwae_chunk)
        for i in range(0, n_iwae, iw_bs)
    ])
    nll = -float(lk.mean())

    # FID between prior samples and test images in the classifier's feature space
    n_fid = min(ecfg.fid_n, len(x_test_u8))
    gen = torch.Generator(device=device).manual_seed(ecfg.seed)
    samples = torch.cat([model.sample(min(bs, n_fid - i), generator=gen) for i in range(0, n_fid, bs)])
    classifier, cls_metrics = load_classifier(paths.CLASSIFIER.format(dataset=dataset), device)
    fid = fid_classifier(classifier, x_test_u8[:n_fid], samples, device=device, batch_size=bs)

    # grids: prior samples; test images (odd rows) above their reconstructions (even rows)
    n_grid = min(ecfg.grid_n, n_fid, len(x_test))
    nrow = int(math.ceil(math.sqrt(n_grid)))
    with atomic_path(out["samples_png"]) as tmp:
        save_image(make_grid(samples[:n_grid].float().cpu(), nrow=nrow, padding=2), tmp)
    originals = x_test_u8[:n_grid].float().cpu() / 255.0
    recons = model.reconstruct(x_test[:n_grid]).float().cpu()
    pairs = []
    for r in range(0, n_grid, nrow):
        pairs += [originals[r : r + nrow], recons[r : r + nrow]]
    with atomic_path(out["recon_png"]) as tmp:
        save_image(make_grid(torch.cat(pairs), nrow=nrow, padding=2), tmp)

    tracked = model.tracked_scalars()
    metrics = {
        "study": cell.study,
        "dataset": dataset,
        "model": model_name,
        "seed": seed,
        **describe(cell.model_config),
        "cell": ckpt["cell"],
        "test_elbo_nats": terms["elbo"],
        "test_recon_nats": terms["recon"],
        "test_kl_nats": terms["kl"],
        "elbo_n_images": n_elbo,
        "test_nll_iwae_nats": nll,
        "iwae_k": k,
        "iwae_n_images": n_iwae,
        "bits_per_dim": bits_per_dim(nll, model.likelihood.discrete_offset_nats(dim), dim),
        "fid_classifier": fid,
        "fid_n": n_fid,
        "fid_reference": f"first {n_fid} test images vs {n_fid} prior samples (decoder means, 8-bit)",
        "classifier_test_accuracy": cls_metrics.get("test_accuracy"),
        "classifier_val_accuracy": _finite_or_none(cls_metrics.get("val_accuracy")),   # None: no validation split
        "classifier_epochs": cls_metrics.get("epochs"),
        "classifier_feature_dim": classifier.kwargs["feature_dim"],
        "train_seconds": ckpt["train_seconds"],
        "eval_seconds": time.perf_counter() - t0,
        "epochs": ckpt["epochs"],
        "device": str(device),
        "effective_beta": tracked.get("effective_beta"),
        "log_sigma": tracked.get("log_sigma"),
        "lambda": tracked.get("lambda"),
        "mlflow_run_id": ckpt.get("mlflow_run_id"),
    }
    for key, value in metrics.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise FloatingPointError(f"{dataset}/{model_name}/seed{seed}: metric {key} is {value}")
    write_json(out["metrics"], metrics)

    tracker = Tracker(cell.study)
    tracker.resume_run(ckpt.get("mlflow_run_id"))
    tracker.log_metrics({k: v for k, v in metrics.items() if k not in ("seed", "latent_dim", "epochs")},
                        step=ckpt["epochs"])
    for key in ("metrics", "samples_png", "recon_png"):
        tracker.log_artifact(str(out[key]), "evaluation")
    return metrics
