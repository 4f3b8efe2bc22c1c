"""Every field of an evaluate record, each data space and each tracked training scalar, declared once.

A field is a :class:`Metric` (a result: aggregated over seeds, compared), a :class:`Setting` (how the cell
was evaluated) or a :class:`Descriptive` field (identity, configuration, text). Units: nats per image unless
``unit`` says otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Literal, Union

Comparable = Literal["any", "same_space", "density", "valid_density"]


@dataclass(frozen=True)
class Metric:
    """A result: ``per_image`` its per_image.npz column (times ``per_image_sign``; None: compared per seed from the
    record), ``comparable`` which pairs it may compare, ``compare_as`` its name in comparisons and claims.yaml,
    ``paired`` compared for every single-axis pair, ``table``/``column``/``fmt`` its results-table column."""

    key: str
    label: str
    unit: str
    higher_is_better: bool | None = None
    per_image: str | None = None
    per_image_sign: float = 1.0
    comparable: Comparable = "any"
    aggregate: Literal["mean_over_seeds", "none"] = "mean_over_seeds"
    compare_as: str | None = None
    paired: bool = False
    table: str | None = None
    column: str | None = None
    fmt: str = ".2f"
    optional: bool = False
    kind = "metric"


@dataclass(frozen=True)
class Setting:
    """How the cell was evaluated (a sample size, a tolerance): never aggregated."""

    key: str
    label: str
    unit: str = ""
    optional: bool = False
    kind = "setting"


@dataclass(frozen=True)
class Descriptive:
    """Identity, configuration or text of a cell."""

    key: str
    label: str
    optional: bool = False
    kind = "descriptive"


Field = Union[Metric, Setting, Descriptive]


@dataclass(frozen=True)
class DataSpace:
    """A space the test data is scored in: table title, short name, phrase, bits/dim convention."""

    name: str
    title: str
    short: str
    text: str
    bits_convention: str


@dataclass(frozen=True)
class TrackedScalar:
    """A training scalar: ``name`` in ``tracked_scalars()`` and the training log, ``record_key`` in the record."""

    name: str
    record_key: str
    label: str
    axis_label: str
    fmt: str
    column: str


FIELDS: dict[str, Field] = {}
DATA_SPACES: dict[str, DataSpace] = {}
TRACKED: dict[str, TrackedScalar] = {}


def declare(field: Field) -> Field:
    """Add ``field`` to :data:`FIELDS`. Raises ValueError: its key is declared already."""
    if field.key in FIELDS:
        raise ValueError(f"record field {field.key!r} is declared twice")
    FIELDS[field.key] = field
    return field


def declare_space(space: DataSpace) -> DataSpace:
    """Add ``space`` to :data:`DATA_SPACES`. Raises ValueError: its name is declared already."""
    if space.name in DATA_SPACES:
        raise ValueError(f"data space {space.name!r} is declared twice")
    DATA_SPACES[space.name] = space
    return space


def declare_tracked(scalar: TrackedScalar) -> TrackedScalar:
    """Add ``scalar`` to :data:`TRACKED` and its record field (a metric of the training table)."""
    TRACKED[scalar.name] = scalar
    declare(Metric(scalar.record_key, scalar.label, "", table="training", column=scalar.column, fmt=scalar.fmt))
    return scalar


def metrics() -> Iterator[Metric]:
    """The declared metrics, in declaration order."""
    return (f for f in FIELDS.values() if isinstance(f, Metric))


def settings() -> Iterator[Setting]:
    """The declared evaluation settings, in declaration order."""
    return (f for f in FIELDS.values() if isinstance(f, Setting))


def aggregated_keys() -> list[str]:
    """Keys of the metrics summarised over seeds, sorted."""
    return sorted(m.key for m in metrics() if m.aggregate == "mean_over_seeds")


def setting_keys() -> frozenset[str]:
    """Keys of the evaluation settings."""
    return frozenset(s.key for s in settings())


def table_metrics(table: str) -> list[Metric]:
    """The metrics shown as columns of results table ``table``, in declaration order."""
    return [m for m in metrics() if m.table == table]


def compared(name: str) -> Metric:
    """The metric compared under ``name`` ('nll', 'fid', ...). Raises KeyError: none is."""
    for m in metrics():
        if m.compare_as == name:
            return m
    raise KeyError(f"no metric is compared as {name!r}")


def compared_names() -> list[str]:
    """Every comparison name, in declaration order."""
    return [m.compare_as for m in metrics() if m.compare_as]


def paired_names() -> list[str]:
    """The comparison names of every single-axis pair, in declaration order."""
    return [m.compare_as for m in metrics() if m.compare_as and m.paired]


def mlflow_keys() -> list[str]:
    """Record keys logged to MLflow as metrics: the measured quantities (settings are logged as tags)."""
    return [f.key for f in FIELDS.values() if isinstance(f, Metric)]


def build_record(values: dict) -> dict:
    """``values`` in declaration order.

    Raises:
        KeyError: a key of ``values`` is not declared, or a declared key that is not ``optional`` is missing.
    """
    unknown = [k for k in values if k not in FIELDS]
    if unknown:
        raise KeyError(f"undeclared record field(s) {', '.join(unknown)}: declare them in vaebench.metrics.spec")
    missing = [k for k, f in FIELDS.items() if k not in values and not f.optional]
    if missing:
        raise KeyError(f"record lacks the declared field(s) {', '.join(missing)}")
    return {k: values[k] for k in FIELDS if k in values}


_D, _S = Descriptive, Setting
for _key in ("study", "dataset", "model", "seed", "architecture", "latent_dim", "description"):
    declare(_D(_key, _key))
for _axis in ("architecture", "posterior", "likelihood", "objective"):
    if _axis != "architecture":
        declare(_D(_axis, _axis))
    declare(_D(f"{_axis}_params", f"{_axis} settings"))
    declare(_D(f"{_axis}_description", f"{_axis} description"))
for _key in ("likelihood_family", "sigma_mode", "data_space", "data_treatment", "likelihood_of", "valid_density",
             "cell"):
    declare(_D(_key, _key))
declare(_S("n_images", "test images", "images"))

_NATS = "nats/image"
_LIK = "likelihood"
declare(Metric("test_nll_iwae_nats", "test NLL = -L_k (nats/image)", _NATS, False, per_image="L_k",
               per_image_sign=-1.0, comparable="density", compare_as="nll", paired=True, table=_LIK,
               column="NLL = -L_k, k = {k} (nats/image; {space}) [{ci}]"))
declare(Metric("test_nll_iwae_se", "SE over images of the test NLL", _NATS))
declare(Metric("test_elbo_nats", "test ELBO (nats/image)", _NATS, True, per_image="elbo", comparable="density",
               compare_as="elbo", paired=True, table=_LIK, column="ELBO (nats/image; {space}) [{ci}]"))
declare(Metric("test_elbo_se", "SE over images of the test ELBO", _NATS))
declare(Metric("test_recon_nats", "test reconstruction -E_q log p(x|z) (nats/image)", _NATS, False,
               per_image="recon", comparable="same_space", compare_as="recon", table=_LIK,
               column="recon. NLL (nats/image)"))
declare(Metric("test_kl_nats", "test KL(q(z|x) || p(z)) (nats/image)", _NATS, False, per_image="kl",
               compare_as="kl", table=_LIK, column="KL (nats/image)"))
declare(_S("iwae_k", "importance samples k", "samples"))
declare(Metric("lk_gap_nats", "L_k - L_{k/10}", _NATS, False))
declare(Metric("lk_gap_se", "SE over images of L_k - L_{k/10}", _NATS))
declare(_S("lk_tolerance_nats", "tolerance of L_k - L_{k/10}", _NATS))
declare(_D("lk_converged", "L_k - L_{k/10} within the tolerance"))
declare(Metric("bits_per_dim", "bits/dim", "bits/dim", False, table=_LIK, column="bits/dim", fmt=".4f"))
declare(Metric("test_elbo_discretised_nats", "discretised ELBO, 8-bit (nats/image)", _NATS, True, optional=True,
               table=_LIK, column="discretised ELBO (nats/image; 8-bit) [{ci}]"))
declare(Metric("test_elbo_discretised_se", "SE over images of the discretised ELBO", _NATS, optional=True))
declare(Metric("test_nll_iwae_discretised_nats", "discretised NLL, 8-bit (nats/image)", _NATS, False,
               per_image="L_k_discretised", per_image_sign=-1.0, comparable="valid_density",
               compare_as="nll_discretised", paired=True, optional=True, table=_LIK,
               column="discretised NLL = -L_k (nats/image; 8-bit) [{ci}]"))
declare(Metric("test_nll_iwae_discretised_se", "SE over images of the discretised NLL", _NATS, optional=True))
declare(Metric("lk_gap_discretised_nats", "discretised L_k - L_{k/10}", _NATS, False, optional=True))
declare(Metric("bits_per_dim_discretised", "discretised bits/dim", "bits/dim", False, optional=True, table=_LIK,
               column="discretised bits/dim", fmt=".4f"))
declare(Metric("test_elbo_per_frame_nats", "test ELBO per scored frame (sequence models)", "nats/frame", True,
               optional=True, table="video", column="ELBO per frame (nats) [{ci}]"))
for _score, _unit, _fmt in (("ssim", "", ".4f"), ("psnr", "dB", ".2f")):
    _name = _score.upper()
    declare(Metric(f"{_score}_best", f"best-of-N {_name} (per-frame maximum over samples, mean over frames)", _unit,
                   True, per_image=f"{_score}_best", compare_as=_score, optional=True, fmt=_fmt, table="video",
                   column=f"{_name}, best of N [{{ci}}]"))
    declare(Metric(f"{_score}_best_se", f"SE over sequences of the best-of-N {_name}", _unit, optional=True))
    declare(_D(f"{_score}_best_per_frame", f"best-of-N {_name} of each predicted frame", optional=True))
    declare(Metric(f"{_score}_best_sample", f"{_name} of the sample with the best mean SSIM", _unit, True,
                   per_image=f"{_score}_best_sample", optional=True, fmt=_fmt, table="video",
                   column=f"{_name}, best sample"))
    declare(_D(f"{_score}_best_sample_per_frame", f"{_name} of each predicted frame of that sample", optional=True))
    declare(Metric(f"{_score}_sample", f"{_name} of one sample (mean over samples)", _unit, True, optional=True,
                   fmt=_fmt, table="video", column=f"{_name}, one sample"))
declare(_S("video_samples", "continuations per test sequence", "samples", optional=True))
declare(_S("n_past", "conditioning frames", "frames", optional=True))
declare(_S("scored_frames", "frames scored by the likelihood per sequence", "frames", optional=True))
declare(_S("predicted_frames", "predicted frames per continuation", "frames", optional=True))
declare(Metric("test_sse", "test reconstruction SSE (sum over pixels, unit scale)", "squared error/image", False,
               per_image="sse", comparable="same_space", compare_as="sse", optional=True))
declare(Metric("test_mse", "test reconstruction MSE (unit scale)", "squared error/dimension", False,
               optional=True))
declare(Metric("latent_rate_nats", "rate E_x KL(q(z|x) || p(z))", "nats", table="latent", column="rate (nats)"))
declare(Metric("latent_marginal_kl_nats", "marginal KL(q(z) || p(z))", "nats", table="latent",
               column="marginal KL (nats)"))
declare(Metric("latent_mutual_info_nats", "mutual information I(x; z)", "nats", table="latent",
               column="mutual information (nats)"))
declare(_D("latent_mutual_info_saturated", "the MI estimate is within 0.1 nats of its bound log N"))
declare(_S("latent_log_n_nats", "log N, bound on the mutual information", "nats"))
declare(Metric("active_units", "active units", "latent dimensions", True))
declare(_S("latent_n", "images (sequences) of the latent analysis", "images"))
declare(_D("latent_rate_per_frame_nats", "sequence models: the rate (KL to the learned prior) of each scored frame "
                                        "(nats)", optional=True))
declare(_D("latent_dims_per_layer", "latent dimensions of each stochastic layer, bottom first", optional=True))
declare(_D("latent_rate_per_layer_nats", "rate of each stochastic layer, bottom first (nats)", optional=True))
declare(_D("active_units_per_layer", "active units of each stochastic layer, bottom first", optional=True))
declare(Metric("fid_classifier", "FID (classifier features)", "", False, compare_as="fid", paired=True))
declare(Metric("fid_classifier_std", "std of the FID over sample seeds", ""))
declare(_D("fid_classifier_per_seed", "FID of each sample seed"))
declare(Metric("fid_classifier_draws", "FID of draws x ~ p(x|z)", "", False))
declare(_D("fid_classifier_unavailable", "why there is no classifier-feature FID"))
declare(_S("fid_n", "prior samples per FID", "images"))
declare(_S("fid_seeds", "sample seeds of the FID", "seeds"))
declare(Metric("fid_floor", "FID of held-out real images", ""))
declare(_S("fid_floor_n", "real images of the FID floor", "images"))
declare(Metric("fid_blurred_reference", "FID of the same held-out images blurred (5x5 box)", "", optional=True))
declare(Metric("fid_noise_reference", "FID of uniform noise images", "", optional=True))
declare(_D("fid_reference", "what the FID compares"))
declare(Metric("fid_inception", "Inception FID", "", False, compare_as="fid_inception"))
declare(_S("fid_inception_n", "samples of the Inception FID", "images"))
declare(_S("fid_inception_reference_n", "test images of the Inception FID", "images"))
declare(_D("fid_inception_status", "whether the Inception FID was computed"))
declare(Metric("classifier_test_accuracy", "test accuracy of the FID classifier", "fraction", True))
declare(Metric("classifier_val_accuracy", "validation accuracy of the FID classifier", "fraction", True))
declare(_S("classifier_epochs", "training epochs of the FID classifier", "epochs"))
declare(_S("classifier_feature_dim", "feature dimension of the FID classifier", "features"))
declare_tracked(TrackedScalar("log_sigma", "log_sigma", "decoder log sigma", "log sigma", ".3f", "log sigma"))
declare_tracked(TrackedScalar("effective_beta", "effective_beta", "effective beta", "effective beta", ".3g",
                              "effective beta"))
declare_tracked(TrackedScalar("lambda", "lambda", "GECO lambda", "GECO lambda", ".3g", "GECO lambda"))
declare_tracked(TrackedScalar("constraint", "geco_constraint_ma", "GECO constraint (moving average)",
                              "GECO constraint", ".3g", "GECO C_ma"))
declare(Metric("train_seconds", "training time", "s", False, table="training", column="train time (s)", fmt=".0f"))
declare(Metric("eval_seconds", "evaluation time", "s", False))
declare(_D("epochs", "epochs trained"))
declare(_D("device", "device"))
declare(_D("mlflow_run_id", "MLflow run"))

declare_space(DataSpace(
    "binarised", "binarised data (Bernoulli-type decoders)", "binarised", "a likelihood of binarised images",
    "the NLL is a likelihood of the binarised images (dynamic binarisation in training, the test set binarised "
    "once with a fixed seed), not of the grey levels; bits/dim, where given, are per binary pixel."))
declare_space(DataSpace(
    "dequantised", "8-bit data through dequantisation (continuous decoders)", "dequantised density",
    "a density of dequantised 8-bit images",
    "bits/dim = (NLL + D ln 256) / (D ln 2), a bound on the 8-bit data via uniform dequantisation (D = C*H*W)."))
declare_space(DataSpace(
    "discrete", "8-bit data, discrete likelihood", "8-bit discrete", "a discrete likelihood of 8-bit images",
    "bits/dim = NLL / (D ln 2), an exact discrete likelihood of the 8-bit data (D = C*H*W)."))
