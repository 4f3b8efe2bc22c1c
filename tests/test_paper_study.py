"""The paper-scale study (studies/paper.yaml): every catalogue model on every dataset of the seed papers, 3 seeds.
It cannot run here (days of CPU, and five of its datasets are not in the offline mirror), so this checks what
can be checked without running it: it validates (every model fits every dataset's image size), and the two
engines' dry runs, as the README runs them, plan every cell."""
from __future__ import annotations

import re
import shutil

import pytest

import yaml

from conftest import BIN, REPO, SEQUENCE_MODELS, env, make_workspace, run
from vaebench import paths
from vaebench.config import load_study
from vaebench.vae import build_model

PAPER = REPO / "studies" / "paper.yaml"
PAPER_DATASETS = ["mnist", "fashion_mnist", "cifar10", "svhn", "celeba", "frey_face"]


def test_paper_study_covers_every_model_dataset_and_seed(inception_weights_file, monkeypatch):
    monkeypatch.setenv("VAEBENCH_FID_WEIGHTS", str(inception_weights_file))
    study = load_study(PAPER, catalogue=REPO / "catalogue.yaml")
    catalogue = yaml.safe_load((REPO / "catalogue.yaml").read_text())["models"]
    assert study.dataset_names == PAPER_DATASETS
    # every catalogue model of images, but those whose networks cannot take some paper dataset's images (the top-down
    # HVAE: square images of its groups' sizes; it has its own study, sigma_vae_table2_hvae); the video models have
    # their own studies
    left_out = set(catalogue) - set(study.model_names) - SEQUENCE_MODELS
    assert set(study.model_names) <= set(catalogue) and left_out == {"hvae_sigma"} and study.seeds == [0, 1, 2]
    assert SEQUENCE_MODELS <= set(catalogue) and not SEQUENCE_MODELS & set(study.model_names)
    for name in left_out:
        entry = {k: v for k, v in catalogue[name].items() if k not in ("train", "evaluate", "description")}
        with pytest.raises(ValueError, match="images must be square"):
            build_model(entry, (1, 28, 28))
    assert study.config.evaluate.iwae_k == 5000 and study.config.evaluate.n_images is None   # L_5000, full test sets
    assert study.config.datasets["celeba"].image_size == 64
    assert len(study.cells()) == len(study.model_names) * len(PAPER_DATASETS) * 3


@pytest.mark.pipeline
def test_both_engines_dry_runs_list_every_cell(tmp_path, inception_weights_file):
    """``snakemake -n --configfile studies/paper.yaml`` and ``dvc repro --dry --force pipelines/paper/dvc.yaml``
    (the study's generated DVC pipeline; as the README says, without --force DVC's dry run stops at the first
    stage whose input file does not exist yet) list the train and evaluate job of every cell."""
    study = yaml.safe_load(PAPER.read_text())
    ws = make_workspace(tmp_path / "ws", yaml.safe_load((REPO / "params.yaml").read_text()), git=True)
    (ws / "studies").mkdir(exist_ok=True)
    shutil.copy2(PAPER, ws / "studies" / "paper.yaml")
    e = env(tmp_path, ws, VAEBENCH_FID_WEIGHTS=str(inception_weights_file))
    cells = [(d, m, s) for d in study["datasets"] for m in study["models"] for s in study["seeds"]]

    out = run([str(BIN / "snakemake"), "--cores", "2", "-n", "--configfile", "studies/paper.yaml"], ws, env=e).stdout
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", out, re.M))
    assert int(stats["train"]) == int(stats["evaluate"]) == len(cells)
    assert int(stats["prepare"]) == len(study["datasets"])
    for d, m, s in cells:
        assert paths.CHECKPOINT.format(study=study["study"], dataset=d, model=m, seed=s) in out, (d, m, s)
        assert paths.METRICS.format(study=study["study"], dataset=d, model=m, seed=s) in out, (d, m, s)

    pipeline = paths.pipeline_file(PAPER.stem)                          # pipelines/paper/dvc.yaml
    out = run([str(BIN / "dvc"), "repro", "--dry", "--force", pipeline], ws, env=e).stdout
    stages = {name.removeprefix(f"{pipeline}:") for name in re.findall(r"Running stage '([^']+)'", out)}
    for d, m, s in cells:
        assert f"train@{d}-{m}-{s}" in stages and f"evaluate@{d}-{m}-{s}" in stages, (d, m, s)
    assert {f"prepare@{d}" for d in study["datasets"]} <= stages and "report" in stages


@pytest.mark.pipeline
@pytest.mark.parametrize("name", ["sigma_vae_table2", "iwae_table1", "sigma_vae_table2_hvae", "sigma_vae_bair"])
def test_the_decoder_and_hierarchical_studies_dry_run_every_cell(tmp_path, name):
    """The sigma-VAE Table 2 studies (all eleven decoders on SVHN; the CelebA and CIFAR-10 columns on the top-down
    HVAE) and IWAE Table 1 (with its two-stochastic-layer rows) cannot run here (SVHN, CIFAR-10 and CelebA are not in
    the mirror; the HVAE grid and IWAE's 3,280 epochs need a GPU), nor can the BAIR video study (a GPU and the 30 GB
    archive); Snakemake's dry run plans a train and an evaluate job for every cell."""
    src = REPO / "studies" / f"{name}.yaml"
    study = load_study(src, catalogue=REPO / "catalogue.yaml")
    ws = make_workspace(tmp_path / "ws", yaml.safe_load((REPO / "params.yaml").read_text()), git=True)
    (ws / "studies").mkdir(exist_ok=True)
    shutil.copy2(src, ws / "studies" / src.name)
    out = run([str(BIN / "snakemake"), "--cores", "2", "-n", "--configfile", f"studies/{src.name}"], ws,
              env=env(tmp_path, ws)).stdout
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", out, re.M))
    assert int(stats["train"]) == int(stats["evaluate"]) == len(study.cells())
    for d, m, s in study.cells():
        assert paths.CHECKPOINT.format(study=name, dataset=d, model=m, seed=s) in out, (d, m, s)
    models = set(study.model_names)
    expected = {"sigma_vae_table2": {"vae_student_t", "vae_logistic_mixture", "vae_bitwise"},
                "iwae_table1": {"iwae_2layer_vae", "iwae_2layer_iwae_k50"},
                "sigma_vae_table2_hvae": {"vae_gaussian", "sigma_vae_optimal", "vae_categorical"},
                "sigma_vae_bair": {"svg_beta", "svg_sigma_fixed", "svg_sigma_learned", "svg_sigma_optimal",
                                   "svg_sigma_per_image"}}[name]
    assert expected <= models
    if name == "sigma_vae_bair":
        assert study.dataset_names == ["bair"] and study.config.datasets["bair"].sequence_length == 12
        assert {study.models[m].latent_dim for m in models} == {64}
        assert {study.models[m].architecture.name for m in models} == {"svg_vgg64"}
        assert study.models["svg_beta"].objective.beta == pytest.approx(12288 * 1e-4 / 2)
    if name == "sigma_vae_table2_hvae":
        assert {study.models[m].architecture.name for m in models} == {"topdown_conv"}
        assert study.dataset_names == ["celeba", "cifar10"]
