"""Views of a study's results outside the report: the training curves as DVC plots (`dvc plots show`, rendered
offline with the inlined vega page), the study's metrics (`dvc metrics show`) and `snakemake --report` with
the captions of the marked outputs. Rendering is checked in headless Chromium when it is installed."""
from __future__ import annotations

import base64
import configparser
import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import BIN, REPO, env, make_workspace, run, tiny_params
from vaebench import dag, paths
from vaebench.dev import dvc_template
from vaebench.report.dvc_plots import quantities, write_plot_data

pytestmark = pytest.mark.pipeline     # spawns Snakemake, DVC, MLflow or a browser: not in make test-fast

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
DVC = str(BIN / "dvc")


def synthetic_logs(datasets, models, seeds, epochs=4) -> dict:
    """Training logs of a small study: every model logs the ELBO terms; sigma_vae adds log_sigma and
    effective_beta, geco adds lambda, constraint and effective_beta. Values encode their cell and epoch."""
    logs = {}
    for i, d in enumerate(datasets):
        for j, m in enumerate(models):
            for s in seeds:
                e = np.arange(1, epochs + 1)
                base = 100.0 * (i + 1) + 10.0 * j + s + 1.0 / e
                log = pd.DataFrame({"epoch": e, "seconds": 1.5 * e, "train_loss": base + 1, "train_elbo": -base - 1,
                                    "train_recon": 0.8 * base, "train_kl": 0.2 * base + 1, "val_loss": base,
                                    "val_elbo": -base, "val_recon": 0.75 * base, "val_kl": 0.25 * base})
                if m == "sigma_vae":
                    log["log_sigma"] = -0.1 * e - 0.01 * s
                    log["effective_beta"] = np.exp(2 * log["log_sigma"])
                if m == "geco":
                    log["lambda"] = 1.0 + 0.5 * e + s
                    log["constraint"] = 2.0 / e - s
                    log["effective_beta"] = 1.0 / log["lambda"]
                logs[(d, m, s)] = log
    return logs


MODELS, SEEDS = ["vae_bernoulli", "sigma_vae", "geco"], [0, 3]
STUDY = tiny_params()["study"]               # the workspaces' study: its outputs live under its name
DEFAULT_STUDY = yaml.safe_load((REPO / paths.DEFAULT_STUDY).read_text())["study"]
COMMITTED_METRICS = REPO / paths.REPORT_METRICS.format(study=DEFAULT_STUDY)   # the default study's committed report
REPORT_METRICS, REPORT_HEADLINE, REPORT_PLOTS, REPORT_HTML, REPORT_FIGURES = (t.format(study=STUDY) for t in (
    paths.REPORT_METRICS, paths.REPORT_HEADLINE, paths.REPORT_PLOTS, paths.REPORT_HTML, paths.REPORT_FIGURES))
# The DVC views are asked for this study's files: without targets they cover every pipeline of the repository,
# and the other studies' pipelines (pipelines/*/dvc.yaml, copied into the workspace) have no results here.


# ------------------------------------------------------------------------------------------------
# Plot data

def test_write_plot_data_matches_the_logs(tmp_path):
    datasets = ["mnist", "toy"]
    logs = synthetic_logs(datasets, MODELS, SEEDS)
    logs[("toy", "geco", 3)].loc[1, "lambda"] = np.nan         # a missing value: that row is left out
    out = tmp_path / "plots"
    (out / "mnist").mkdir(parents=True)
    (out / "mnist" / "stale.csv").write_text("epoch,model,seed,stale\n")  # from an earlier study
    (out / "notes.txt").write_text("kept")

    written = write_plot_data(out, datasets, MODELS, SEEDS, logs)

    assert written == sorted(out / d / f"{q}.csv" for d in datasets for q in quantities())
    assert not (out / "mnist" / "stale.csv").exists() and (out / "notes.txt").exists()
    assert sorted(p.name for p in out.rglob(".*")) == []                         # no temporary files left
    has = {"log_sigma": ["sigma_vae"], "lambda": ["geco"], "constraint": ["geco"],
           "effective_beta": ["sigma_vae", "geco"]}
    for d in datasets:
        for q, (column, factor) in quantities().items():
            frame = pd.read_csv(out / d / f"{q}.csv")
            assert list(frame.columns) == ["epoch", "model", "seed", q]
            models = has.get(q, MODELS)
            assert list(dict.fromkeys(frame["model"])) == models                 # the study's model order
            for m in models:
                for s in SEEDS:
                    log = logs[(d, m, s)].dropna(subset=[column])
                    rows = frame[(frame["model"] == m) & (frame["seed"] == s)]
                    assert rows["epoch"].tolist() == log["epoch"].tolist()
                    np.testing.assert_array_equal(rows[q].to_numpy(), factor * log[column].to_numpy())
    assert len(pd.read_csv(out / "toy" / "lambda.csv")) == 2 * 4 - 1
    # -ELBO is the negated logged ELBO
    neg = pd.read_csv(out / "mnist" / "val_neg_elbo.csv")
    assert neg.iloc[0]["val_neg_elbo"] == -logs[("mnist", "vae_bernoulli", 0)].iloc[0]["val_elbo"] > 0


# ------------------------------------------------------------------------------------------------
# The offline page template

def _tarball(member: str, text: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = text.encode()
        info = tarfile.TarInfo(member)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def test_dvc_template_pins_what_dvc_loads_from_its_cdn():
    """The inlined libraries are the versions DVC's own page loads, so the plots render the same."""
    from dvc_render.vega import VegaRenderer

    cdn = dict(re.findall(r"npm/([\w-]+)@([\d.]+)", VegaRenderer.SCRIPTS))
    assert cdn == {p.name: p.version for p in dvc_template.PACKAGES}


def test_dvc_template_build_checks_hashes_and_keeps_a_current_page(tmp_path):
    """Built from tarballs whose SHA-512 matches the pins (a fake registry here); a current page is not
    downloaded again; a tarball with another hash is rejected and nothing is written."""
    scripts = {"vega": "var vega = 1; s = '</script>';", "vega-lite": "var vegaLite = {a: 1};",
               "vega-embed": "function vegaEmbed(el, spec) { return 2; }"}
    tarballs, packages = {}, []
    for name, js in scripts.items():
        tb = _tarball(f"package/build/{name}.min.js", js)
        p = dvc_template.NpmPackage(name, "1.2.3", f"package/build/{name}.min.js", _integrity(tb))
        tarballs[p.tarball_url("https://registry.example")] = tb
        packages.append(p)
    packages = tuple(packages)
    fetched = []

    def fetch(url):
        fetched.append(url)
        return tarballs[url]

    page = tmp_path / ".dvc" / "plots" / "offline.html"
    assert dvc_template.build(page, registry="https://registry.example", fetch=fetch, packages=packages)
    assert fetched == list(tarballs)
    text = page.read_text()
    assert text.startswith(dvc_template.stamp(packages)) and dvc_template.is_current(page, packages)
    assert "{plot_divs}" in text and "{refresh_tag}" in text and "{scripts}" not in text  # no CDN tags
    assert "var vegaLite = {a: 1};" in text and "function vegaEmbed(el, spec)" in text
    assert "'<\\/script>'" in text and text.count("</script>") == 3                     # escaped inside JS
    assert not dvc_template.build(page, fetch=lambda url: pytest.fail("downloaded again"), packages=packages)
    # the real pins are not this page's: it is out of date for them
    assert not dvc_template.is_current(page)

    def offline(url):
        raise urllib.error.URLError("no route to host")

    with pytest.raises(OSError, match="cannot download https://registry.example/vega/-/vega-1.2.3.tgz"):
        dvc_template.build(page, registry="https://registry.example", fetch=offline, packages=packages, force=True)
    tarballs[packages[1].tarball_url("https://registry.example")] = _tarball(packages[1].script, "evil()")
    with pytest.raises(ValueError, match="vega-lite@1.2.3: SHA-512 mismatch"):
        dvc_template.build(page, registry="https://registry.example", fetch=fetch, packages=packages, force=True)
    assert page.read_text() == text


def test_dvc_template_check_says_how_to_build_it(tmp_path):
    proc = run([str(BIN / "python"), "-m", "vaebench", "dvc-template", "--check"], tmp_path, check=False)
    assert proc.returncode == 1
    assert ".dvc/plots/offline.html is missing" in proc.stderr and "make install" in proc.stderr


def test_the_offline_template_is_built_and_configured():
    """`make install` built the page; .dvc/config points DVC at it (relative to .dvc/)."""
    assert dvc_template.is_current(REPO / dvc_template.TEMPLATE), dvc_template.missing_message()
    config = configparser.ConfigParser()
    config.read(REPO / ".dvc" / "config")
    assert (REPO / ".dvc" / config["plots"]["html_template"]).resolve() == (REPO / dvc_template.TEMPLATE).resolve()
    for p in dvc_template.PACKAGES:
        assert f"{p.name}@{p.version}" in (REPO / dvc_template.TEMPLATE).read_text(encoding="utf-8")[:1000]


# ------------------------------------------------------------------------------------------------
# dvc plots show / dvc metrics show, in a fresh git + DVC repository of the pipeline

def dump_dom(html: Path) -> str:
    """The DOM of ``html`` after its scripts ran (headless Chromium)."""
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                           "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory):
    """The pipeline in a fresh git + DVC repository with this repo's DVC settings and templates, the plot
    data of a small synthetic study and a copy of the default study's committed reports/<study>/metrics.json
    (when it is there)."""
    assert dvc_template.is_current(REPO / dvc_template.TEMPLATE), dvc_template.missing_message()
    tmp = tmp_path_factory.mktemp("views")
    ws = make_workspace(tmp / "ws", tiny_params(models=MODELS, seeds=SEEDS), git=True)
    shutil.copy2(REPO / ".dvc" / "config", ws / ".dvc" / "config")
    (ws / ".dvc" / "plots").mkdir(exist_ok=True)
    for f in (REPO / ".dvc" / "plots").iterdir():
        shutil.copy2(f, ws / ".dvc" / "plots" / f.name)
    files = write_plot_data(ws / REPORT_PLOTS, ["mnist"], MODELS, SEEDS, synthetic_logs(["mnist"], MODELS, SEEDS))
    if COMMITTED_METRICS.is_file():
        (ws / REPORT_METRICS).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(COMMITTED_METRICS, ws / REPORT_METRICS)
    return ws, tmp, files


def test_dvc_plots_show_renders_offline(dvc_repo):
    ws, tmp, files = dvc_repo
    proc = run([DVC, "plots", "show", "--out", str(tmp / "plots_out"), REPORT_PLOTS], ws, env=env(tmp, ws))
    assert "failed" not in proc.stderr.lower(), proc.stderr
    html = (tmp / "plots_out" / "index.html").read_text(encoding="utf-8")
    # the offline page: every library inline, nothing loaded from a CDN
    assert html.startswith(dvc_template.stamp())
    assert not re.search(r"<script[^>]*\bsrc=", html) and "cdn.jsdelivr" not in html
    # one plot per file, drawn with the custom template (colour = model, one line per seed)
    assert html.count("vegaEmbed('#") == len(files) == len(quantities())
    assert html.count('"field": "model"') >= len(files) and '"detail": {"field": "seed"' in html
    for f in files:
        assert f.relative_to(ws).as_posix() in html
    if CHROMIUM is None:
        pytest.skip("chromium not installed: the page was checked, not rendered (apt-get install chromium)")
    dom = dump_dom(tmp / "plots_out" / "index.html")
    assert dom.count('class="marks"') == len(files), "vega-embed did not draw every plot"  # the SVG renderer
    legend = set(re.findall(r"<text[^>]*>([\w-]+)</text>", dom))
    assert set(MODELS) <= legend and "val_neg_elbo" in legend


def test_dvc_plots_ignore_snakemakes_folder_timestamp(dvc_repo):
    ws, tmp, files = dvc_repo
    stamp = ws / REPORT_PLOTS / ".snakemake_timestamp"
    stamp.touch()
    try:
        out = json.loads(run([DVC, "plots", "show", "--json", REPORT_PLOTS], ws, env=env(tmp, ws)).stdout)
    finally:
        stamp.unlink()
    assert not out.get("errors") and len(out["data"]) == len(files)


def test_dvc_metrics_show_lists_the_study_headline(dvc_repo):
    """`dvc metrics show` prints reports/<study>/headline.json: the mean over seeds of each compared metric per
    dataset and model (a few columns per model, not the hundreds of metrics.json), equal to metrics.json."""
    from vaebench.report.collect import headline

    ws, tmp, _ = dvc_repo
    if not COMMITTED_METRICS.is_file():
        pytest.skip(f"the default study's committed {COMMITTED_METRICS.relative_to(REPO)} is not there yet "
                    "(regenerated by running the default study)")
    metrics = json.loads((ws / REPORT_METRICS).read_text())
    (ws / REPORT_HEADLINE).write_text(json.dumps(headline(metrics["models"])))
    shown = json.loads(run([DVC, "metrics", "show", "--json", REPORT_HEADLINE], ws, env=env(tmp, ws)).stdout)
    head = shown[""]["data"][REPORT_HEADLINE]["data"]
    for dataset in metrics["models"]:
        for model, results in metrics["models"][dataset].items():
            assert head[dataset][model]["elbo"] == round(results["test_elbo_nats"]["mean"], 4)
            assert head[dataset][model]["nll"] == round(results["test_nll_iwae_nats"]["mean"], 4)
            assert set(head[dataset][model]) <= {"nll", "elbo", "recon", "kl", "nll_discretised", "sse", "fid"}
    table = run([DVC, "metrics", "show", REPORT_HEADLINE], ws, env=env(tmp, ws)).stdout
    header = table.splitlines()[0].split()
    n_models = sum(len(v) for v in metrics["models"].values())
    assert header[0] == "Path" and len(header) <= 1 + 7 * n_models       # one short row
    assert "mnist.rho_vae.elbo" in header


# ------------------------------------------------------------------------------------------------
# snakemake --report on a tiny real study

@pytest.fixture(scope="module")
def snakemake_study(tmp_path_factory, mirror):
    """The tiny real-MNIST study run by Snakemake: one model that logs log sigma, one seed."""
    tmp = tmp_path_factory.mktemp("smk_report")
    ws = make_workspace(tmp / "ws", tiny_params(models=["sigma_vae_optimal"]))
    for dep in dag.STAGES["report"].deps.values():      # config files the report reads (claims.yaml)
        if not (ws / dep).exists():
            shutil.copy2(REPO / dep, ws / dep)
    run([str(BIN / "snakemake"), "--cores", "2"], ws, env=env(tmp, ws), timeout=900)
    return ws, tmp


def test_snakemake_writes_the_plot_data(snakemake_study):
    ws, _ = snakemake_study
    for name in ("val_neg_elbo", "val_recon", "val_kl", "log_sigma"):
        frame = pd.read_csv(ws / REPORT_PLOTS / "mnist" / f"{name}.csv")
        assert list(frame.columns) == ["epoch", "model", "seed", name]
        assert set(frame["model"]) == {"sigma_vae_optimal"} and len(frame) == 1   # one epoch


def test_snakemake_report_is_self_contained_with_captions(snakemake_study):
    ws, tmp = snakemake_study
    out = tmp / "snakemake.html"
    run([str(BIN / "snakemake"), "--report", str(out)], ws, env=env(tmp, ws), timeout=300)
    html = out.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]*\bsrc=\"?https?:", html) and not re.search(r"<link[^>]*href=\"?https?:", html)
    # the workflow description and one caption per kind of result, rendered with the job's wildcards
    assert "a benchmark of variational autoencoders" in html
    assert "Samples of model <strong>sigma_vae_optimal</strong> (training seed 0)" in html
    assert "Reconstructions by model <strong>sigma_vae_optimal</strong>" in html
    assert "Validation curves on mnist" in html and "Learned scalars per epoch on mnist" in html
    assert "The study's report" in html
    # the results, by category and subcategory
    categories, _ = json.JSONDecoder().raw_decode(html[html.index("categories = ") + len("categories = "):])
    cell = paths.cell_paths(STUDY, "mnist", "sigma_vae_optimal", 0)["metrics"].parent.as_posix()
    assert categories["Samples"] == {"mnist": [f"{cell}/samples.png"]}
    assert categories["Reconstructions"] == {"mnist": [f"{cell}/recon.png"]}
    assert categories["Report"] == {"Other": [REPORT_HTML]}
    curves = categories["Training curves"]["mnist"]
    assert {f"{REPORT_FIGURES}/mnist_{f}.png" for f in ("validation_curves", "log_sigma_lambda")} <= set(curves)
    assert all(re.fullmatch(re.escape(REPORT_FIGURES) + r"/mnist_(validation_curves|training_curves|log_sigma_lambda)\.png", f)
               for f in curves), curves


# ------------------------------------------------------------------------------------------------
# MLflow as a person opens it: `mlflow server` on the study's store, the page rendered in headless Chromium

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(snakemake_study):
    import time
    import urllib.request

    ws, tmp = snakemake_study
    port = _free_port()
    proc = subprocess.Popen([str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}",
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"], cwd=ws,
                            env=env(tmp, ws), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not answer /health within 60 s")
        yield url, tmp
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_mlflow_opens_on_the_studys_training_runs_with_readable_grids(mlflow_server, chromium, sync_api):
    """The link every run prints (``vaebench mlflow-init``) opens the study's experiment in "Model training" mode
    on its Runs table, one row per cell named dataset/model/seed; the run's evaluation settings are tags, its
    metrics only quantities; its sample grid is served from step 0 (where the UI's image slider starts), enlarged
    to at least 512 pixels wide. In Chromium, the run's "Model metrics" tab shows its sections in the order
    curves, grids, results, and the samples card shows the step-0 grid as a decoded image."""
    import urllib.parse
    import urllib.request

    from mlflow.tracking import MlflowClient
    from PIL import Image

    from vaebench.tracking import CURVES, GRID_MIN_WIDTH, GRIDS, RESULTS

    url, tmp = mlflow_server
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    exp = client.get_experiment_by_name(STUDY)
    (r,) = client.search_runs([exp.experiment_id])
    assert r.info.run_name == "mnist/sigma_vae_optimal/seed0"
    assert "eval.iwae_k" in r.data.tags and not {"iwae_k", "fid_n", "n_images"} & {k.split("/")[-1] for k in r.data.metrics}

    steps = {}
    for f in client.list_artifacts(r.info.run_id, "images"):
        m = re.match(r"images/grids~samples\+step\+(\d+)\+", f.path)
        if m and f.path.endswith(".png"):
            steps[int(m[1])] = f.path
    assert min(steps) == 0, steps
    query = urllib.parse.urlencode({"run_id": r.info.run_id, "path": steps[0]})
    with urllib.request.urlopen(f"{url}/get-artifact?{query}", timeout=30) as resp:
        img = Image.open(io.BytesIO(resp.read()))
    assert img.format == "PNG" and img.width >= GRID_MIN_WIDTH

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True)
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.goto(f"{url}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning")
            page.get_by_text("mnist/sigma_vae_optimal/seed0").first.wait_for(timeout=60_000)
            landing = page.evaluate("() => document.body.innerText")
            assert "Model training" in landing and "matching run" in landing   # the Runs table

            page.goto(f"{url}/#/experiments/{exp.experiment_id}/runs/{r.info.run_id}/model-metrics"
                      "?workflowType=machine_learning")
            headers = [CURVES, GRIDS, RESULTS]   # sections appear as their data loads: wait for all three
            page.wait_for_function("hs => hs.every(h => document.body.innerText.includes('\\n' + h + '\\n'))",
                                   arg=headers, timeout=60_000)
            text = page.evaluate("() => document.body.innerText")
            order = [text.find(f"\n{s}\n") for s in headers]
            assert -1 not in order and order == sorted(order), (order, text[:2000])
            page.get_by_text(GRIDS, exact=True).first.scroll_into_view_if_needed()   # cards render when in view
            shown = "imgs => imgs.filter(i => i.currentSrc.includes('grids~samples%2Bstep%2B0%2B') && i.complete " \
                    "&& i.naturalWidth > 0).length"
            page.wait_for_function(f"() => ({shown})(Array.from(document.images)) > 0", timeout=60_000)
        finally:
            browser.close()
