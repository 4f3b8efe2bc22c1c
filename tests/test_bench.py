"""``python -m vaebench bench`` (vaebench.dev.bench): a tiny configuration on the real MNIST mirror gives every
figure for both loops and both models, and the command runs where MLflow, Snakemake and DVC cannot be
imported (the light-import constraint)."""
from __future__ import annotations

import json
import math
import sys
import textwrap

import pytest

from conftest import REPO, run
from vaebench import paths

MODELS = ["vae_bernoulli", "sigma_vae_conv"]
# Never imported by the bench: the pipeline's heavy dependencies (and the report's / metrics' optional ones).
BLOCKED = ("mlflow", "snakemake", "dvc", "matplotlib", "torchmetrics", "torch_fidelity")


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
    """One folder for torchvision's decompressed MNIST files, shared by the tests of this module."""
    return tmp_path_factory.mktemp("bench_raw")


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_tiny_bench_measures_both_loops_of_both_models(mirror, raw_dir, tmp_path, monkeypatch, capsys):
    from vaebench.dev.bench import BenchConfig
    from vaebench.cli import main

    monkeypatch.chdir(REPO)                     # the catalogue is read relative to the repository root
    out = tmp_path / "bench.json"
    n_train, batch, epochs = 256, 100, 1        # 3 steps per epoch, the last one partial (56 images)
    argv = ["bench", "--mirror", str(mirror), "--raw-dir", str(raw_dir), "--out", str(out),
            "--models", *MODELS, "--epochs", str(epochs), "--batch-size", str(batch), "--n-train", str(n_train),
            "--n-test", "64", "--eval-images", "4", "--k", "20", "--warmup-steps", "1", "--device", "cpu"]
    assert main(argv) == 0
    table = capsys.readouterr().out
    res = json.loads(out.read_text())

    assert res["device"] == "cpu" and res["device_name"] and res["cuda_version"] is None
    assert res["torch_version"] and res["torch_threads"] >= 1
    assert BenchConfig.model_validate(res["config"]).n_train == n_train          # the config used, complete
    assert res["data"]["sha256"]["train-images-idx3-ubyte"].startswith("ba891046")
    if sys.platform == "linux":
        assert res["host_memory_method"].startswith("VmHWM")
    assert set(res["models"]) == set(MODELS)
    for name, m in res["models"].items():
        assert name in table
        train = m["train"]
        for loop in ("ours", "reference"):
            t = train[loop]
            assert t["steps"] == epochs * math.ceil(n_train / batch), (name, loop)
            assert t["images"] == epochs * n_train, (name, loop)
            assert t["epochs"] == epochs == len(t["epoch_seconds"])
            assert all(_positive(t[f]) for f in ("seconds", "seconds_per_epoch", "images_per_s", "warmup_seconds"))
            assert math.isfinite(t["last_epoch_mean_step_loss"])
            assert _positive(t["memory"]["host_rss_peak_mib"]) and t["memory"]["cuda_max_allocated_mib"] is None
            e = m["test_elbo"][loop]
            assert math.isfinite(e["mean"]) and e["se"] > 0 and e["mean"] < 0   # nats/image
        assert train["reference"]["num_workers"] == 0 and train["reference"]["pin_memory"] is False
        assert train["throughput_ratio"] == pytest.approx(train["ours"]["images_per_s"]
                                                          / train["reference"]["images_per_s"])
        assert m["test_elbo"]["n_images"] == 64 and math.isfinite(m["test_elbo"]["relative_difference"])
        lk = m["lk_evaluation"]
        assert lk["k"] == 20 and lk["images"] == 4 and lk["full_test_images"] == 10_000
        assert lk["full_test_seconds_kind"] == "extrapolated"
        assert lk["full_test_seconds"] == pytest.approx(lk["seconds"] * 10_000 / 4)
        assert _positive(lk["images_x_samples_per_s"]) and math.isfinite(lk["L_k_mean_nats"])
        assert isinstance(m["target"]["met"], bool)
    # both loops started from the same weights and trained on the same images: after 3 steps the two models are
    # close (not equal: the reference's batches come through ToTensor and a DataLoader, and each loop draws its
    # own posterior noise)
    elbo = res["models"]["vae_bernoulli"]["test_elbo"]
    assert abs(elbo["relative_difference"]) < 0.05


def test_cli_exposes_every_bench_setting():
    from vaebench.dev.bench import BenchConfig
    from vaebench.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    dests = {a.dest for a in sub.choices["bench"]._actions} - {"help", "threads"}
    assert dests == set(BenchConfig.model_fields)
    assert BenchConfig().out == paths.BENCH_JSON == "reports/bench.json"


@pytest.mark.pipeline
def test_bench_runs_without_mlflow_snakemake_or_dvc(mirror, raw_dir, tmp_path):
    """The command in a fresh interpreter where importing any of BLOCKED fails as if it were not installed
    (a ``sys.meta_path`` finder); it must not even try them. Also the measured (whole test set) L_k branch and
    DataLoader workers in the reference loop."""
    wrapper = textwrap.dedent(f"""
        import sys
        BLOCKED = {BLOCKED!r}
        tried = []

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    tried.append(name)
                    raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
                return None

        sys.meta_path.insert(0, Block())
        from vaebench.cli import main
        rc = main(sys.argv[1:])
        assert not tried, f"tried to import {{tried}}"
        assert not [m for m in sys.modules if m.split(".")[0] in BLOCKED]
        raise SystemExit(rc)
    """)
    out = tmp_path / "bench.json"
    run([sys.executable, "-c", wrapper, "bench", "--mirror", str(mirror), "--raw-dir", str(raw_dir),
         "--out", str(out), "--models", "vae_bernoulli", "--epochs", "1", "--n-train", "128", "--n-test", "32",
         "--eval-images", "10000", "--k", "10", "--warmup-steps", "0", "--num-workers", "1", "--device", "cpu"],
        cwd=REPO)
    m = json.loads(out.read_text())["models"]["vae_bernoulli"]
    assert m["lk_evaluation"]["full_test_seconds_kind"] == "measured"
    assert m["lk_evaluation"]["full_test_seconds"] == m["lk_evaluation"]["seconds"]
    ref = m["train"]["reference"]
    assert ref["num_workers"] == 1 and ref["steps"] == 1 and ref["images"] == 128
    assert ref["warmup_seconds"] >= 0
