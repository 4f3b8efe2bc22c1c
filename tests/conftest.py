"""Shared fixtures: the offline MNIST mirror and tiny real-MNIST study workspaces."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get("VAEBENCH_DATA_MIRROR", REPO.parent / "shared" / "datasets")).resolve()
BIN = Path(sys.executable).parent

# The models of the tiny end-to-end study: one per posterior/decoder family exercised by the pipeline.
TINY_MODELS = ["vae_bernoulli", "sigma_vae_optimal"]


def tiny_params(models=TINY_MODELS, seeds=(0,), datasets=("mnist",)) -> dict:
    """The default study shrunk to seconds: a real-MNIST subset (and the other ``datasets`` of the default
    study, Frey Face being small already), one epoch, small k and N. ``models`` is a list of catalogue names (no
    overrides) or a mapping name -> override."""
    with open(REPO / "studies" / "smoke.yaml") as f:
        params = yaml.safe_load(f)
    params["study"] = "tiny"
    params["models"] = dict(models) if isinstance(models, dict) else {m: {} for m in models}
    params["seeds"] = list(seeds)
    params["datasets"] = {d: params["datasets"][d] for d in datasets}
    if "mnist" in datasets:
        params["datasets"]["mnist"].update({"max_train": 2000, "max_validation": 500, "max_test": 500})
    params["train"].update({"epochs": 1, "batch_size": 100, "per_dataset": {}})
    params["classifier"].update({"epochs": 1})
    params["evaluate"].update({"n_images": 50, "iwae_k": 20, "latent_n": 50, "fid_n": 200, "fid_seeds": 2,
                               "grid_n": 16, "batch_size": 100})
    return params


def write_random_prepared(root: Path, n_train: int = 64, n_val: int = 16, n_test: int = 16,
                          study: str = "tiny") -> Path:
    """A prepared 'mnist' of random uint8 28x28 'images' (label 0) under ``root`` at ``paths.PREPARED`` of
    ``study`` (default: :func:`tiny_params`' study), for tests of the training loop that need no real digits;
    returns its path."""
    import json

    import numpy as np

    from vaebench import paths

    rng = np.random.default_rng(0)
    arrays = {f"x_{s}": rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8)
              for s, n in (("train", n_train), ("val", n_val), ("test", n_test))}
    arrays.update({f"y_{s}": np.zeros(len(arrays[f"x_{s}"]), dtype=np.int64) for s in ("train", "val", "test")})
    out = root / paths.PREPARED.format(study=study, dataset="mnist")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, meta=np.array(json.dumps({"dataset": "mnist"})), **arrays)
    return out


def make_workspace(root: Path, params: dict, git: bool = False) -> Path:
    """A copy of the pipeline definition (Snakefile, catalogue, workflow/, profiles/, studies/, pipelines/, src/)
    with ``params`` and the dvc.yaml generated for them. Commands run in it import the package from the copy (see ``env``)."""
    root.mkdir(parents=True, exist_ok=True)
    shared = root.parent / "shared"        # ../shared beside the workspace, as beside a clone: the committed studies'
    if not shared.exists() and MIRROR.parent.is_dir():     # relative paths (studies/example_image_folder.yaml) resolve
        shared.symlink_to(MIRROR.parent)
    for name in ("Snakefile", "dvc.yaml", "catalogue.yaml", "claims.yaml", ".dvcignore"):
        shutil.copy2(REPO / name, root / name)
    for name in ("workflow", "profiles", "studies", "pipelines"):
        shutil.copytree(REPO / name, root / name)
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    from vaebench import dvc_pipeline
    from vaebench.config import ConfigError

    with contextlib.chdir(root):       # dvc.yaml for these params: its code deps follow the study's components
        try:
            (root / "dvc.yaml").write_text(dvc_pipeline.dvc_yaml_text())
        except ConfigError:            # params a test makes invalid on purpose: the committed one stays
            pass
    if git:
        run(["git", "init", "-q"], root)
        run(["git", "config", "user.email", "ci@example.invalid"], root)
        run(["git", "config", "user.name", "ci"], root)
        shutil.copy2(REPO / ".gitignore", root / ".gitignore")
        run([str(BIN / "dvc"), "init", "-q"], root)
        run([str(BIN / "dvc"), "config", "core.analytics", "false"], root)
        run(["git", "add", "-A"], root)
        run(["git", "commit", "-q", "-m", "workspace"], root)
    return root


def env(tmp: Path, workspace: Path | None = None, **extra) -> dict:
    """Environment of a pipeline command: the mirror, an MLflow sqlite store in ``tmp``, the venv's tools;
    with ``workspace``, the package is imported from the workspace's own src/ copy."""
    e = dict(os.environ)
    if workspace is not None:
        e["PYTHONPATH"] = str(workspace / "src")
    e.update({
        "VAEBENCH_DATA_MIRROR": str(MIRROR),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
        "DVC_NO_ANALYTICS": "1",
        "PATH": f"{BIN}{os.pathsep}{e.get('PATH', '')}",
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
    })
    e.update(extra)
    return e


def run(cmd, cwd, check=True, **kw) -> subprocess.CompletedProcess:
    """Run a command; on failure show its output in the assertion message."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\nSTDOUT:\n{proc.stdout[-5000:]}\nSTDERR:\n{proc.stderr[-5000:]}")
    return proc


REQUIRE_MIRROR = "VAEBENCH_REQUIRE_MIRROR"   # set by .ci/run: a missing mirror fails the tests instead of skipping


def check_mirror(*datasets: str) -> None:
    """Skip the running test when a folder ``<MIRROR>/<dataset>/`` it reads is missing, or fail it when
    ``$VAEBENCH_REQUIRE_MIRROR`` is set (CI: a missing mirror is a broken setup, not a reason to test less)."""
    missing = [d for d in datasets if not (MIRROR / d).is_dir()]
    if missing:
        msg = f"data mirror folder(s) {', '.join(missing)} not found under {MIRROR} (set VAEBENCH_DATA_MIRROR)"
        if os.environ.get(REQUIRE_MIRROR):
            pytest.fail(f"{msg}; ${REQUIRE_MIRROR} is set, so this fails instead of skipping", pytrace=False)
        pytest.skip(msg)


PIPELINE_TOOLS = {"snakemake", "dvc", "mlflow", "chromium", "chromium-browser"}


@pytest.fixture(autouse=True)
def _pipeline_tools_only_in_pipeline_tests(request, monkeypatch):
    """A test not marked ``pipeline`` (the ``make test-fast`` tier) that starts Snakemake, DVC, MLflow or a browser
    fails, so the fast tier stays free of them."""
    if request.node.get_closest_marker("pipeline") is not None:
        yield
        return
    real_init = subprocess.Popen.__init__

    def guarded(self, args, *a, **k):
        argv = [str(args)] if isinstance(args, (str, os.PathLike)) else [str(x) for x in args]
        words = argv[0].split() if len(argv) == 1 else argv
        tools = {Path(words[0]).name} | ({words[2]} if len(words) > 2 and words[1] == "-m" else set())
        if tools & PIPELINE_TOOLS:
            raise RuntimeError(f"{request.node.nodeid} starts {sorted(tools & PIPELINE_TOOLS)[0]}: mark it "
                               "@pytest.mark.pipeline (not run by make test-fast)")
        real_init(self, args, *a, **k)

    monkeypatch.setattr(subprocess.Popen, "__init__", guarded)
    yield


def pytest_runtest_setup(item):
    """Tests marked ``@pytest.mark.mirror("mnist", ...)`` need those mirror folders (:func:`check_mirror`)."""
    for mark in item.iter_markers("mirror"):
        check_mirror(*(mark.args or ("mnist",)))


@pytest.fixture(scope="session")
def mirror() -> Path:
    check_mirror("mnist")
    return MIRROR


@pytest.fixture(scope="session")
def inception_weights_file(tmp_path_factory) -> Path:
    """A loadable stand-in for weights-inception-2015-12-05-6726825d.pth (the real file cannot be downloaded
    here): torch-fidelity's ``FeatureExtractorInceptionV3`` built with its load step skipped (random init),
    convolutions re-drawn with He init so that pool3 features are O(1) rather than ~1e-8, saved as its
    state_dict. Its FIDs are meaningless; it exercises the whole loading and feature path."""
    import torch

    tfi = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    from vaebench.metrics.inception import WEIGHTS_FILE

    class RandomInit(tfi.FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):  # keep the random init instead of the loaded dict
            return None

    d = tmp_path_factory.mktemp("inception")
    torch.save({}, d / "empty.pth")
    torch.manual_seed(0)
    net = RandomInit("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(d / "empty.pth"))
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    torch.save(net.state_dict(), d / WEIGHTS_FILE)
    return d / WEIGHTS_FILE


@contextlib.contextmanager
def in_process_study(tmp: Path, params: dict):
    """Run stages in-process in ``tmp``: writes ``params`` as its params.yaml, validates it against the
    repository's catalogue, and yields the Study with ``tmp`` as working directory and MLflow off (both undone
    on exit)."""
    from vaebench.config import validate_study

    (tmp / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    study = validate_study(params, "params.yaml", REPO / "catalogue.yaml")
    mp = pytest.MonkeyPatch()
    mp.chdir(tmp)
    mp.setenv("VAEBENCH_MLFLOW", "0")
    try:
        yield study
    finally:
        mp.undo()


@pytest.fixture(scope="session")
def chromium() -> str:
    """The system browser's executable; skip (before building anything) when it is not installed."""
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("chromium not found on PATH: install Debian's browser with `apt-get install chromium` "
                    "to run the browser tests (.ci/run does this in CI)")
    return exe


@pytest.fixture(scope="session")
def sync_api(chromium):
    return pytest.importorskip(
        "playwright.sync_api",
        reason="playwright not installed: `uv pip install -r requirements.lock -e '.[test]'` (the browser itself "
               "is the system chromium; do not run `playwright install`)")


# ----------------------------------------------------------------------------- tiny VAEs trained in-process

@pytest.fixture
def one_thread():
    """Tiny networks: one intra-op thread is faster than several and than contended cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def binary_patterns(n: int, seed: int, shape: tuple[int, int, int]):
    """uint8 (n, *shape) in {0, 255}: one of 4 fixed binary prototypes per image, 5% of pixels flipped."""
    import torch

    g = torch.Generator().manual_seed(seed)
    protos = torch.rand((4, *shape), generator=torch.Generator().manual_seed(123)) < 0.5
    x = protos[torch.randint(0, 4, (n,), generator=g)]
    x = x ^ (torch.rand(x.shape, generator=g) < 0.05)
    return x.to(torch.uint8) * 255


TERMS_OBJECTIVES = {"elbo": {"name": "elbo"}, "iwae": {"name": "iwae", "k": 5}, "beta": {"name": "elbo", "beta": 0.5},
                    "geco": {"name": "geco", "constraint": "sse", "kappa": 1.5, "lambda_lr": 1e-3}}


def train_and_score(model, data, held, steps: int, batch: int = 32, lr: float = 3e-3):
    """``steps`` Adam steps on random batches of the data-space images ``data``, checking that every loss is finite
    and every batch's logged ELBO is -(recon + KL); returns ((recon, ELBO) on ``held`` before, the same after,
    the losses), each score the mean over ``held``'s images of one seeded single-sample estimate, in eval mode."""
    import math

    import torch

    def score():
        model.eval()
        with torch.no_grad():
            t = model.elbo_terms(held, generator=torch.Generator().manual_seed(15))
        model.train()
        return float(t["recon"].mean()), float(t["elbo"].mean())

    before = score()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g, losses = torch.Generator().manual_seed(16), []
    model.train()
    for _ in range(steps):
        loss, logs = model.training_loss(data[torch.randint(0, len(data), (batch,), generator=g)])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        assert math.isfinite(losses[-1]) and logs["elbo"] == pytest.approx(-(logs["recon"] + logs["kl"]))
    return before, score(), losses


# Catalogue models whose networks do not take MNIST's 28x28 images (the top-down HVAE's default groups are for 32x32):
# the override with which the tests that run every catalogue model on MNIST build them (tiny: width 8).
MNIST_OVERRIDES = {
    "hvae_sigma": {"latent_dim": 2 * 14 * 14 + 4 * 7 * 7,
                   "architecture": {"name": "topdown_conv", "width": 8,
                                    "groups": [{"channels": 2, "size": 14}, {"channels": 4, "size": 7}]}}}


# Catalogue models of videos (sequence architectures): the tests that run every catalogue model on MNIST images leave
# them out; tests/test_svg.py and tests/test_video_pipeline.py run them on videos.
SEQUENCE_MODELS = {"svg_beta", "svg_sigma_fixed", "svg_sigma_learned", "svg_sigma_optimal", "svg_sigma_per_image"}


def image_models(models) -> list[str]:
    """``models`` without :data:`SEQUENCE_MODELS`, sorted."""
    return sorted(set(models) - SEQUENCE_MODELS)


def at_mnist_size(models) -> dict:
    """{catalogue name: its study override on MNIST ({} unless in :data:`MNIST_OVERRIDES`)} for ``models``."""
    return {m: MNIST_OVERRIDES.get(m, {}) for m in models}


def assert_invalid_models(cases) -> None:
    """Each (model entry, message) of ``cases`` is refused by ``validate_model`` with a ConfigError naming the file
    'cat.yaml' and the message under the prefix 'models.x'."""
    from vaebench.config import ConfigError, validate_model

    for bad, message in cases:
        with pytest.raises(ConfigError, match=f"cat.yaml: invalid .*{message}".replace("(", r"\(").replace(")", r"\)")):
            validate_model(bad, source="cat.yaml", prefix="models.x")


def assert_state_dict_round_trip(model, fresh, x) -> None:
    """``model``'s state_dict loads into ``fresh`` (built alike, other initial weights) and both give the same log
    weights (k = 4, seeded) on the data-space images ``x``: what loading a checkpoint needs."""
    import torch

    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model.log_weights(x, 4, generator=torch.Generator().manual_seed(24)),
                                   fresh.log_weights(x, 4, generator=torch.Generator().manual_seed(24)))
