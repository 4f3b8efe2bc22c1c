"""The committed generated files are current: dvc.yaml (from the stage declarations), the JSON schemas
(from the typed configs) and the README's generated sections (from the registry and reports/metrics.json);
the schemas also agree with the typed validation."""
from __future__ import annotations

import jsonschema
import pytest
import yaml

from conftest import BIN, REPO, run
from vaebench import dag, paths
from vaebench.config import load_study, schema_texts
from vaebench.report import readme


def test_dvc_yaml_is_generated_and_current():
    assert (REPO / paths.DVC_YAML).read_text() == dag.dvc_yaml_text(), \
        "dvc.yaml is out of date: run `python -m vaebench dvc-yaml`"


def test_schemas_are_generated_and_current():
    for path, text in schema_texts().items():
        assert (REPO / path).read_text() == text, f"{path} is out of date: run `python -m vaebench schema`"


@pytest.mark.pipeline
def test_generate_commands_write_and_check(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "workflow/schemas").mkdir(parents=True)
    check = run([str(BIN / "python"), "-m", "vaebench", "dvc-yaml", "--check"], tmp_path, check=False)
    assert check.returncode == 1 and "dvc.yaml is out of date" in check.stderr
    run([str(BIN / "python"), "-m", "vaebench", "dvc-yaml"], tmp_path)
    run([str(BIN / "python"), "-m", "vaebench", "schema"], tmp_path)
    assert (tmp_path / "dvc.yaml").read_text() == dag.dvc_yaml_text()
    assert run([str(BIN / "python"), "-m", "vaebench", "schema", "--check"], tmp_path).returncode == 0


def test_committed_schemas_agree_with_the_typed_validation():
    """Editors and other tools validate with the committed JSON schemas: they accept every study and the
    catalogue, and reject what the typed validation rejects."""
    study_schema = yaml.safe_load((REPO / paths.STUDY_SCHEMA).read_text())
    cat_schema = yaml.safe_load((REPO / paths.CATALOGUE_SCHEMA).read_text())
    for schema in (study_schema, cat_schema):
        jsonschema.Draft202012Validator.check_schema(schema)
    study_v, cat_v = jsonschema.Draft202012Validator(study_schema), jsonschema.Draft202012Validator(cat_schema)
    for f in [REPO / "params.yaml", *sorted((REPO / "studies").glob("*.yaml"))]:
        assert not list(study_v.iter_errors(yaml.safe_load(f.read_text()))), f
    catalogue = yaml.safe_load((REPO / paths.CATALOGUE).read_text())
    assert not list(cat_v.iter_errors(catalogue))
    good = yaml.safe_load((REPO / "params.yaml").read_text())
    for bad in ({**good, "device": "tpu"}, {**good, "train": {"epochz": 1}},
                {**good, "components": {"likelihood": {"gaussian_fixed": {"sigma": -1}}}}):
        assert list(study_v.iter_errors(bad))
    catalogue["models"]["vae_bernoulli"]["likelihood"] = {"name": "bernoulli", "sigma": 1.0}
    assert list(cat_v.iter_errors(catalogue))
    catalogue["models"]["vae_bernoulli"]["likelihood"] = {"name": "poisson"}
    assert list(cat_v.iter_errors(catalogue))


def test_readme_generated_sections_are_current():
    text = (REPO / "README.md").read_text()
    study = load_study(REPO / paths.DEFAULT_STUDY, catalogue=REPO / paths.CATALOGUE)
    generated = readme.sections(study, REPO / paths.REPORT_METRICS, REPO / paths.REPORT_CLAIMS)
    assert readme.render(text, generated) == text, "README is out of date: run `python -m vaebench readme`"
    # every model of the default study has its numbers in the committed report and the README
    for model in study.model_names:
        assert f"| mnist | {model} |" in generated["results"]
    metrics = yaml.safe_load((REPO / paths.REPORT_METRICS).read_text())
    assert set(metrics["models"]["mnist"]) == set(study.model_names)
