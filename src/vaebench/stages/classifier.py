"""Stage ``classifier``: train the small CNN whose features define ``fid_classifier`` on one dataset."""
from __future__ import annotations

from pathlib import Path

from vaebench import paths
from vaebench.atomic import write_json
from vaebench.device import pick_device
from vaebench.config import Study
from vaebench.data.prepared import load_prepared
from vaebench.shared import content_key, file_sha256, reuse_or_build
from vaebench.metrics.classifier import (save_classifier, save_unavailable, train_classifier, unavailable_reason,
                                         unavailable_record)


def run(study: Study, dataset: str) -> dict:
    """Write ``paths.CLASSIFIER`` and ``paths.CLASSIFIER_METRICS``; returns the metrics, or for an unlabelled
    dataset the marker {"available": False, "reason"} written to both. A classifier trained on the same prepared
    bytes with the same settings, device type and code by any study is copied from the shared store
    (:mod:`vaebench.shared`)."""
    import json

    study.check_cell(dataset)
    fmt = dict(study=study.name, dataset=dataset)
    prepared = paths.PREPARED.format(**fmt)
    out = {".pt": Path(paths.CLASSIFIER.format(**fmt)), ".json": Path(paths.CLASSIFIER_METRICS.format(**fmt))}
    device = pick_device(study.device)
    key = content_key("classifier", {"data": file_sha256(prepared), "device": device.type,
                                     "settings": study.config.classifier.model_dump(mode="json")})

    def build():
        data = load_prepared(prepared)
        reason = unavailable_reason(data)
        if reason is not None:
            save_unavailable(out[".pt"], reason)
            write_json(out[".json"], unavailable_record(reason))
            return
        model, metrics = train_classifier(data, study.config.classifier, device)
        save_classifier(out[".pt"], model, metrics)
        write_json(out[".json"], {"available": True, **metrics})

    reuse_or_build("classifier", dataset, key, out, build)
    return json.loads(out[".json"].read_text())
