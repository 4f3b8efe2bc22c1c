"""Stage ``classifier``: train the small CNN whose features define ``fid_classifier`` on one dataset."""
from __future__ import annotations

from vaebench import paths
from vaebench.atomic import write_json
from vaebench.device import pick_device
from vaebench.config import Study
from vaebench.data.prepared import load_prepared
from vaebench.metrics.classifier import (save_classifier, save_unavailable, train_classifier, unavailable_reason,
                                         unavailable_record)


def run(study: Study, dataset: str) -> dict:
    """Write ``paths.CLASSIFIER`` and ``paths.CLASSIFIER_METRICS``; returns the metrics, or for an unlabelled
    dataset the marker {"available": False, "reason"} written to both."""
    study.check_cell(dataset)
    data = load_prepared(paths.PREPARED.format(dataset=dataset))
    reason = unavailable_reason(data)
    if reason is not None:
        save_unavailable(paths.CLASSIFIER.format(dataset=dataset), reason)
        metrics = unavailable_record(reason)
        write_json(paths.CLASSIFIER_METRICS.format(dataset=dataset), metrics)
        return metrics
    model, metrics = train_classifier(data, study.config.classifier, pick_device(study.device))
    save_classifier(paths.CLASSIFIER.format(dataset=dataset), model, metrics)
    write_json(paths.CLASSIFIER_METRICS.format(dataset=dataset), {"available": True, **metrics})
    return {"available": True, **metrics}
