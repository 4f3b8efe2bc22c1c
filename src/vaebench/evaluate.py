"""Evaluate one trained cell on the test split: ELBO, importance-weighted L_k, bits/dim, FID, grids.

Estimators (all per test image, in nats, then averaged):
  * ELBO: single-sample estimate  log p(x|z) + log p(z) - log q(z|x) split into its reconstruction
    (-log p(x|z)) and closed-form KL terms (Kingma & Welling 2014), on ``elbo_n`` test images.
  * L_k: the importance-weighted bound of Burda et al. 2016 (eq. 8) with k = ``iwae_k`` samples from
    q(z|x), on the first ``iwae_n`` test images; test NLL = -L_k (an upper bound on -log p(x)).
  * bits/dim = (NLL + offset) / (D ln 2): offset D ln 256 for a Gaussian density on dequantised data
    (a bound on the 8-bit data, methods.md 6.3), 0 for a categorical decoder (exact discrete
    likelihood), 0 for a Bernoulli decoder, whose number is a likelihood of the *binarised* test set.
  * FID in the feature space of the dataset's classifier between ``fid_n`` prior samples (decoder
    means, quantised to 8 bits) and the first ``fid_n`` test images (Heusel et al. 2017).
The test set is mapped into the model's data space once with a fixed seed (binarised or dequantised),
so every model of a family is scored on the same data.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from vaebench import paths
from vaebench.config import resolve_cell
from vaebench.data import load_prepared
from vaebench.io import atomic_path, write_json
from vaebench.tracking import Tracker
from vaebench.train import _preprocess_fixed, load_checkpoint, pick_device
from vaebench.vae import iwae_bound

DATA_TREATMENT = {
    "binary": "dynamically binarised: x ~ Bernoulli(pixel/255) (test set binarised once, fixed seed)",
    "dequantized": "uniformly dequantised: (pixel + u)/256, u ~ U[0,1) (test set dequantised once, fixed seed)",
    "discrete": "integer intensities 0..255 (no dequantisation)",
}
LIKELIHOOD_OF = {
    "binary": "binarised test images (Bernoulli likelihood of the binarised data, not of the 8-bit images)",
    "dequantized": "8-bit test images (upper bound on -log P via dequantisation: continuous NLL + D ln 256)",
    "discrete": "8-bit test images (exact discrete likelihood)",
}


def bits_per_dim(nll_nats: float, data_kind: str, dim: int) -> float:
    """Convert a per-image NLL in nats to bits per dimension (methods.md 6.3).

    Args:
        nll_nats: -log p per image, nats (continuous density for ``dequantized`` data).
        data_kind: 'binary' | 'dequantized' | 'discrete'.
        dim: D = C*H*W.
    Returns:
        bits/dim; for 'dequantized' nll/(D ln 2) + 8, a bound on the discrete 8-bit data.
    Raises:
        ValueError: unknown data_kind.
    """
    if data_kind not in DATA_TREATMENT:
        raise ValueError(f"unknown data_kind {data_kind!r}")
    offset = dim * math.log(256) if data_kind == "dequantized" else 0.0
    return (nll_nats + offset) / (dim * math.log(2))


def _describe_likelihood(cfg: dict) -> str:
    lik = cfg["likelihood"]
    return lik["family"] + (f"/{lik['sigma']}" if "sigma" in lik else "")


@torch.no_grad()
def evaluate_cell(params: dict, dataset: str, model_name: str, seed: int, threads: int | None = None) -> dict:
    """Evaluate one cell; writes ``paths.METRICS``, ``paths.SAMPLES_PNG`` and ``paths.RECON_PNG``.

    Returns:
        The metrics dict (nats per image unless the key says otherwise).
    """
    from torchvision.utils import make_grid, save_image  # lazy: torchvision import is slow

    from vaebench.classifier import load_classifier
    from vaebench.fid import fid_classifier

    if threads:
        torch.set_num_threads(threads)
    ecfg = resolve_cell(params, dataset, model_name, seed)["evaluate"]  # study defaults + model overrides
    out = paths.cell_paths(dataset, model_name, seed)
    device = pick_device(params["train"]["device"])
    t0 = time.perf_counter()
    model, ckpt = load_checkpoint(out["checkpoint"], device)
    cfg = ckpt["cell"]["model_cfg"]
    data = load_prepared(paths.PREPARED.format(dataset=dataset))
    x_test_u8 = torch.from_numpy(data["x_test"]).to(device)
    dim = int(np.prod(x_test_u8.shape[1:]))
    bs = ecfg["batch_size"]
    torch.manual_seed(ecfg["seed"])
    x_test = _preprocess_fixed(model, x_test_u8, seed=ecfg["seed"], batch_size=bs)

    # ELBO and its terms, single sample per image
    n_elbo = min(ecfg["elbo_n"] or len(x_test), len(x_test))
    terms = {"elbo": 0.0, "recon": 0.0, "kl": 0.0}
    for i in range(0, n_elbo, bs):
        t = model.elbo_terms(x_test[i : min(i + bs, n_elbo)])
        for k in terms:
            terms[k] += float(t[k].double().sum())
    terms = {k: v / n_elbo for k, v in terms.items()}

    # importance-weighted L_k
    n_iwae = min(ecfg["iwae_n"] or len(x_test), len(x_test))
    k = ecfg["iwae_k"]
    iw_bs = max(1, min(bs, 100))
    lk = torch.cat([
        iwae_bound(model, x_test[i : min(i + iw_bs, n_iwae)], k=k, chunk_size=ecfg["iwae_chunk"])
        for i in range(0, n_iwae, iw_bs)
    ])
    nll = -float(lk.mean())

    # FID between prior samples and test images in the classifier's feature space
    n_fid = min(ecfg["fid_n"], len(x_test_u8))
    gen = torch.Generator(device=device).manual_seed(ecfg["seed"])
    samples = torch.cat([model.sample(min(bs, n_fid - i), generator=gen) for i in range(0, n_fid, bs)])
    classifier, cls_metrics = load_classifier(paths.CLASSIFIER.format(dataset=dataset), device)
    fid = fid_classifier(classifier, x_test_u8[:n_fid], samples, device=device, batch_size=bs)

    # grids: prior samples; test images (odd rows) above their reconstructions (even rows)
    n_grid = min(ecfg["grid_n"], n_fid, len(x_test))
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

    obj = cfg["objective"]
    tracked = model.tracked_scalars()
    metrics = {
        "study": params["study"],
        "dataset": dataset,
        "model": model_name,
        "seed": seed,
        "architecture": cfg["architecture"],
        "latent_dim": cfg["latent_dim"],
        "posterior": cfg["posterior"],
        "likelihood": _describe_likelihood(cfg),
        "objective": obj["name"],
        "beta": obj.get("beta", 1.0) if obj["name"] == "elbo" else None,
        "data_treatment": DATA_TREATMENT[model.data_kind],
        "test_elbo_nats": terms["elbo"],
        "test_recon_nats": terms["recon"],
        "test_kl_nats": terms["kl"],
        "elbo_n_images": n_elbo,
        "test_nll_iwae_nats": nll,
        "iwae_k": k,
        "iwae_n_images": n_iwae,
        "bits_per_dim": bits_per_dim(nll, model.data_kind, dim),
        "likelihood_of": LIKELIHOOD_OF[model.data_kind],
        "fid_classifier": fid,
        "fid_n": n_fid,
        "fid_reference": f"first {n_fid} test images vs {n_fid} prior samples (decoder means, 8-bit)",
        "classifier_test_accuracy": cls_metrics.get("test_accuracy"),
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

    tracker = Tracker(params["study"])
    tracker.resume_run(ckpt.get("mlflow_run_id"))
    tracker.log_metrics({k: v for k, v in metrics.items() if k not in ("seed", "latent_dim", "epochs")}, step=ckpt["epochs"])
    for key in ("metrics", "samples_png", "recon_png"):
        tracker.log_artifact(str(out[key]), "evaluation")
    return metrics
