"""Typed settings: a study with its model catalogue, and the settings of each stage."""
from vaebench.config.stages import ClassifierConfig, EvaluateConfig, TrainConfig
from vaebench.config.study import (Cell, ConfigError, ModelConfig, Study, deep_merge, json_schemas, load_catalogue,
                                   load_study, model_config_class, model_entry_class, resolve_model, schema_texts,
                                   validate_model, validate_study)

__all__ = ["Cell", "ClassifierConfig", "ConfigError", "EvaluateConfig", "ModelConfig", "Study", "TrainConfig",
           "deep_merge", "json_schemas", "load_catalogue", "load_study", "model_config_class", "model_entry_class",
           "resolve_model", "schema_texts", "validate_model", "validate_study"]
