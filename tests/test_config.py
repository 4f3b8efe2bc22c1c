"""Studies and the catalogue: typed validation, layered model resolution, and errors that name the file,
the key, the bad value and the allowed values."""
from __future__ import annotations

import copy

import pytest
import yaml

from conftest import BIN, REPO, SEQUENCE_MODELS, env, make_workspace, run, tiny_params
from vaebench.config import ConfigError, deep_merge, load_catalogue, load_study, validate_study

CATALOGUE = REPO / "catalogue.yaml"


@pytest.fixture()
def raw():
    with open(REPO / "studies" / "smoke.yaml") as f:      # the tests' fast study (the old default)
        return yaml.safe_load(f)


def validate(raw, **kw):
    return validate_study(raw, source="bad.yaml", catalogue=CATALOGUE, **kw)


@pytest.fixture
def inception_weights(monkeypatch, inception_weights_file):
    """The paper study requires Inception weights: point the lookup at the random-init stand-in."""
    monkeypatch.setenv("VAEBENCH_FID_WEIGHTS", str(inception_weights_file))


def test_default_and_paper_studies_are_valid(inception_weights):
    study = load_study(REPO / "params.yaml", catalogue=CATALOGUE)
    assert len(study.cells()) == len(study.model_names) * len(study.seeds) * len(study.dataset_names)
    paper = load_study(REPO / "studies/paper.yaml", catalogue=CATALOGUE)
    assert set(study.model_names) <= set(paper.model_names)
    # the paper study runs every model whose networks take all its datasets (tests/test_paper_study.py)
    assert set(load_catalogue(CATALOGUE)) - set(paper.model_names) == {"hvae_sigma"} | SEQUENCE_MODELS
    assert paper.config.evaluate.inception == "required" and study.config.evaluate.inception == "if_available"


def test_layers_resolve_in_order(raw, inception_weights):
    """typed default < study components < catalogue entry < study override; train/evaluate overrides merge."""
    raw = copy.deepcopy(raw)
    raw["models"]["vae_categorical"] = {"train": {"epochs": 1}, "evaluate": {"iwae_k": 50}}
    study = validate(raw)
    cat = yaml.safe_load(CATALOGUE.read_text())["models"]
    beta = study.cell("mnist", "beta_vae", 0)
    assert beta.model_config.objective.beta == cat["beta_vae"]["objective"]["beta"]       # catalogue
    assert beta.model_config.likelihood.sigma == 1.0
    assert beta.model_config.architecture.hidden_dims == [384, 192]                     # study components
    assert beta.train.epochs == raw["train"]["epochs"]
    categorical = study.cell("mnist", "vae_categorical", 0)
    assert categorical.train.epochs == 1 and categorical.train.lr == raw["train"]["lr"]  # override merges
    assert (categorical.evaluate.iwae_k, categorical.evaluate.fid_n) == (50, raw["evaluate"]["fid_n"])
    # without components, the typed default applies
    paper = load_study(REPO / "studies/paper.yaml", catalogue=CATALOGUE)
    assert paper.cell("mnist", "beta_vae", 0).model_config.architecture.hidden_dims == [512, 256]
    # an override that names another component replaces it (conv has no hidden_dims)
    assert paper.cell("mnist", "vae_categorical", 0).model_config.architecture.name == "conv"
    # a model's own setting wins over the study's components
    raw = copy.deepcopy(raw)
    raw["models"]["vae_bernoulli"] = {"architecture": {"hidden_dims": [16]}, "latent_dim": 4}
    cell = validate(raw).cell("mnist", "vae_bernoulli", 0)
    assert cell.model_config.architecture.hidden_dims == [16] and cell.model_config.latent_dim == 4


def test_deep_merge():
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}
    assert deep_merge({"name": "mlp", "hidden_dims": [1]}, {"name": "conv28"}) == {"name": "conv28"}
    assert deep_merge({"hidden_dims": [1]}, {"name": "mlp"}) == {"hidden_dims": [1], "name": "mlp"}


@pytest.mark.parametrize("mutate, expected", [
    (lambda p: p["train"].update(epochz=3), "bad.yaml: unknown key 'train.epochz' (did you mean 'epochs'?) (allowed: epochs, batch_size, lr, test_curve, per_dataset)"),
    (lambda p: p["models"].update(no_such={}), "catalogue.yaml (defined: beta_vae, "),
    (lambda p: p["models"].update(sigma_vea={}), "catalogue.yaml (did you mean 'sigma_vae'?) (defined: beta_vae, "),
    (lambda p: p["datasets"].update(mnsit={}), "invalid key 'mnsit' at 'datasets' (did you mean 'mnist'?): "),
    (lambda p: p.update(trian=p.pop("train")), "unknown key 'trian' (did you mean 'train'?) (allowed: study, "),
    (lambda p: p["models"].update(vae_bernoulli={"posterior": {"name": "ar2"}}),
     "invalid value at 'models.vae_bernoulli.posterior.name': 'ar2' (did you mean 'ar1'?): Input tag 'ar2'"),
    (lambda p: p["datasets"].update(imagenet={}), "invalid key 'imagenet' at 'datasets': Input should be 'mnist'"),
    (lambda p: p["train"].update(lr=-1.0), "invalid value at 'train.lr': -1.0: Input should be greater than 0"),
    (lambda p: p["models"].update(beta_vae={"objective": {"beta": -0.5}}),
     "invalid value at 'models.beta_vae.objective.beta': -0.5: Input should be greater than or equal to 0"),
    (lambda p: p["models"].update(vae_bernoulli={"latent_dim": 0}), "'models.vae_bernoulli.latent_dim': 0"),
    (lambda p: p["models"].update(vae_gaussian={"likelihood": {"name": "gaussian_auto"}}),
     "invalid value at 'models.vae_gaussian.likelihood.name': 'gaussian_auto' (did you mean 'gaussian_fixed'?): "
     "Input tag 'gaussian_auto' "
     "found using 'name' does not match any of the expected tags: 'bernoulli', 'bitwise_categorical', "
     "'categorical', 'gaussian_fixed'"),
    (lambda p: p["models"].update(vae_bernoulli={"likelihood": {"sigma": 0.5}}),
     "unknown key 'models.vae_bernoulli.likelihood.sigma' (allowed: name)"),
    (lambda p: p["models"].update(iwae={"objective": {"beta": 2.0}}),
     "unknown key 'models.iwae.objective.beta' (allowed: name, k)"),
    (lambda p: p["components"]["architecture"]["mlp"].update(hidden_dims=[0]),
     "'components.architecture.mlp.hidden_dims.0': 0: Input should be greater than 0"),
    (lambda p: p["components"]["architecture"].update(resnet={}),
     "unknown key 'components.architecture.resnet' (allowed: conv, conv28, iwae_mlp2, mlp, svg_dcgan64, svg_vgg64, topdown_conv)"),
    (lambda p: p.update(device="tpu"), "'device': 'tpu' (did you mean 'cpu'?): Input should be 'auto', 'cpu' or 'cuda'"),
    (lambda p: p["evaluate"].update(iwae_k=0), "'evaluate.iwae_k': 0"),
    (lambda p: p["models"].update(vae_categorical={"train": {"epochs": 0}}), "'models.vae_categorical.train.epochs': 0"),
    (lambda p: p.update(seeds=[]), "'seeds': []: List should have at least 1 item"),
    (lambda p: p.pop("models"), "missing required key 'models'"),
    (lambda p: p.update(resources={"training": {"mem_mb": 4000}}), "invalid key 'training' at 'resources' (did you mean 'train'?): Input should be 'prepare', "),
    (lambda p: p.update(resources={"train": {"mem_mb": 0}}), "'resources.train.mem_mb': 0: Input should be greater than 0"),
])
def test_bad_study_names_file_key_value_and_allowed(raw, mutate, expected):
    bad = copy.deepcopy(raw)
    mutate(bad)
    with pytest.raises(ConfigError) as err:
        validate(bad)
    assert str(err.value).startswith("bad.yaml: ") and expected in str(err.value), str(err.value)


def test_nonsense_combination_is_rejected(raw):
    bad = copy.deepcopy(raw)
    bad["models"]["vae_categorical"] = {"objective": {"name": "geco", "constraint": "sse"}}
    with pytest.raises(ConfigError, match="bad.yaml: invalid combination at "
                                          "'models.vae_categorical.objective.constraint'.*categorical.*nll"):
        validate(bad)
    bad["models"]["vae_categorical"] = {"objective": {"name": "geco", "constraint": "nll", "kappa": 900.0}}
    assert validate(bad).cell("mnist", "vae_categorical", 0).model_config.objective.constraint == "nll"


def test_catalogue_errors_name_the_catalogue(tmp_path, raw):
    cat = yaml.safe_load(CATALOGUE.read_text())
    cat["models"]["beta_vae"]["objective"]["beta"] = -1.0
    (tmp_path / "catalogue.yaml").write_text(yaml.safe_dump(cat))
    with pytest.raises(ConfigError, match=f"{tmp_path / 'catalogue.yaml'}: invalid value at "
                                          "'models.beta_vae.objective.beta': -1.0"):
        validate_study(raw, catalogue=tmp_path / "catalogue.yaml")
    (tmp_path / "catalogue.yaml").write_text("vae: {}\n")
    with pytest.raises(ConfigError, match="one top-level key 'models'"):
        load_catalogue(tmp_path / "catalogue.yaml")


def test_yaml_syntax_error_names_file(tmp_path):
    f = tmp_path / "broken.yaml"
    f.write_text("study: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_study(f, catalogue=CATALOGUE)


def test_cells_outside_the_grid_are_refused(raw):
    study = validate(raw)
    with pytest.raises(ConfigError, match="seed 7 is not in the study's seeds"):
        study.cell("mnist", "vae_bernoulli", 7)
    with pytest.raises(ConfigError, match="model 'sigma_vae_conv' is not in the study's models"):
        study.cell("mnist", "sigma_vae_conv", 0)


@pytest.mark.pipeline
def test_bad_params_stop_both_engines_before_any_job(tmp_path, mirror):
    """A bad study stops the CLI (exit 2) and Snakemake before anything is written, naming the key."""
    p = tiny_params()
    p["models"]["vae_bernoulli"] = {"latent_dim": -3}
    ws = make_workspace(tmp_path / "ws", p)
    cli = run([str(BIN / "python"), "-m", "vaebench", "prepare", "--dataset", "mnist"], ws, check=False,
              env=env(tmp_path, ws))
    assert cli.returncode == 2
    assert "params.yaml: invalid value at 'models.vae_bernoulli.latent_dim': -3" in cli.stderr
    smk = run([str(BIN / "snakemake"), "--cores", "1"], ws, check=False, env=env(tmp_path, ws))
    assert smk.returncode != 0
    assert "models.vae_bernoulli.latent_dim" in smk.stdout + smk.stderr
    assert not (ws / "data").exists() or not any((ws / "data").rglob("*.*"))
    assert not (tmp_path / "mlflow.db").exists()


def test_optional_top_level_keys_take_their_defaults_and_are_not_tracked_when_left_out(tmp_path):
    """Only study, seeds, datasets and models are required; a left-out key is its typed default, and the study's
    generated DVC pipeline tracks only the keys the file holds (DVC fails on a params slice that is missing)."""
    from vaebench import dvc_pipeline
    from vaebench.config.stages import ClassifierConfig, EvaluateConfig

    raw = {k: v for k, v in tiny_params().items() if k in ("study", "seeds", "datasets", "models")}
    study = validate_study(raw, "s.yaml", REPO / "catalogue.yaml")
    assert study.config.device == "auto" and study.config.classifier == ClassifierConfig()
    assert study.config.evaluate == EvaluateConfig() and study.config.train.epochs == type(study.config.train)().epochs
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(raw))
    params = {name: s["params"] for name, s in dvc_pipeline.dvc_stages(str(f), str(REPO / "catalogue.yaml")).items()}
    tracked = {k for ps in params.values() for p in ps for k in (p if isinstance(p, str) else next(iter(p.values())))}
    assert {"models.${item.model}", "datasets.${item.dataset}"} <= tracked
    assert not {k for k in tracked if k.split(".")[0] in ("device", "components", "train", "classifier", "evaluate")}
