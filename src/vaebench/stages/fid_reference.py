"""Stage ``fid_reference``: the FID reference statistics of one dataset's test split (Heusel et al. 2017) and its
FID floor, the FID of ``fid_n`` unseen real images (Chong & Forsyth 2020: FID is biased upwards at finite N)."""
from __future__ import annotations

import numpy as np
import torch

from vaebench import paths
from vaebench.atomic import atomic_path
from vaebench.device import pick_device
from vaebench.config import Study
from vaebench.data.prepared import load_prepared
from vaebench.metrics.references import blurred, fixed_subset, study_inception_weights, uniform_noise_images
from vaebench.seeds import stream_seed


def run(study: Study, dataset: str) -> dict:
    """Write ``paths.FID_REFERENCE`` (npz: ``mu`` (d,), ``sigma`` (d, d) float64 and the floor's scalars; without
    a classifier ``available`` False and ``reason``) and ``paths.FID_INCEPTION_REFERENCE`` (Inception-v3 pool3
    statistics, or why not); returns the scalars. Raises FileNotFoundError (input missing) or ValueError
    (fewer than 2 floor images)."""
    from vaebench.metrics.classifier import ClassifierUnavailable, load_classifier
    from vaebench.metrics.fid import classifier_features, feature_statistics, fid_from_statistics

    study.check_cell(dataset)
    ecfg = study.config.evaluate
    device = pick_device(study.device)
    data = load_prepared(paths.PREPARED.format(study=study.name, dataset=dataset))
    try:
        classifier, _ = load_classifier(paths.CLASSIFIER.format(study=study.name, dataset=dataset), device)
    except ClassifierUnavailable as exc:
        out = {"available": False, "reason": exc.reason}
        with atomic_path(paths.FID_REFERENCE.format(study=study.name, dataset=dataset)) as tmp, open(tmp, "wb") as f:
            np.savez(f, available=np.array(False), reason=np.array(exc.reason))
    else:
        mu, sigma = feature_statistics(classifier_features(classifier, torch.from_numpy(data["x_test"]), device,
                                                           ecfg.batch_size))
        split = "val" if len(data["x_val"]) >= 2 else "train"
        pool = data[f"x_{split}"]
        idx = fixed_subset(len(pool), ecfg.fid_n, stream_seed(ecfg.seed, "fid_floor_subset"))
        held_out = pool[idx]
        references = {"floor_fid": held_out, "blurred_fid": blurred(held_out),
                      "noise_fid": uniform_noise_images(held_out.shape, stream_seed(ecfg.seed, "fid_noise"))}
        out = {"available": True, "n_reference": int(len(data["x_test"])), "floor_n": int(len(idx)),
               "floor_split": split}
        for key, images in references.items():
            out[key] = float(fid_from_statistics((mu, sigma), classifier_features(
                classifier, torch.from_numpy(images), device, ecfg.batch_size)))
        with atomic_path(paths.FID_REFERENCE.format(study=study.name, dataset=dataset)) as tmp, open(tmp, "wb") as f:
            np.savez(f, mu=mu, sigma=sigma, **out)

    from vaebench.metrics.inception import inception_statistics, save_statistics

    weights = study_inception_weights(study.config.evaluate)
    target = paths.FID_INCEPTION_REFERENCE.format(study=study.name, dataset=dataset)
    if weights is None:
        status = ("not computed: evaluate.inception is 'off'" if ecfg.inception == "off"
                  else "not computed: weights unavailable")
        save_statistics(target, np.zeros(0), np.zeros((0, 0)), computed=False, status=status, weights="")
    else:
        test = torch.from_numpy(data["x_test"])
        frames = test.flatten(0, 1) if test.dim() == 5 else test       # a video's every frame is a reference image
        i_mu, i_sigma = inception_statistics(frames, weights, device)
        status = f"Inception-v3 pool3, TF-ported 2015-12-05 weights ({weights.name})"
        save_statistics(target, i_mu, i_sigma, computed=True, status=status, weights=str(weights),
                        n_reference=int(len(frames)))
    out["inception"] = status
    return out
