"""The concepts section's dataclasses: their defaults are the schema's (the workflow fills
the schema's defaults; code that builds settings from a partial dict gets the same)."""
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from stages_of_inference.concepts.settings import SAE_KINDS, ConceptSettings, SAESettings

REPO = Path(__file__).resolve().parents[2]
SCHEMA = yaml.safe_load((REPO / "config/schema.yaml").read_text())["properties"]["concepts"]


def schema_defaults(section: dict) -> dict:
    return {key: prop.get("default") for key, prop in section["properties"].items()}


def plain(value):
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("cls, section", [(ConceptSettings, SCHEMA), (SAESettings, SCHEMA["properties"]["sae"])],
                         ids=["concepts", "concepts.sae"])
def test_defaults_equal_the_schema(cls, section):
    defaults = schema_defaults(section)
    names = {f.name for f in fields(cls)}
    assert names == set(defaults) - cls.shared_keys  # every key is a field, or read elsewhere
    ours = cls()
    for name in names:
        assert plain(getattr(ours, name)) == defaults[name], name


def test_kinds_are_the_schemas():
    assert list(SAE_KINDS) == SCHEMA["properties"]["sae"]["properties"]["kind"]["enum"]


def test_the_whole_section_builds_both():
    section = {**schema_defaults(SCHEMA), "sae": {"k": 8}, "stimuli": "x", "top_k": 4}
    assert ConceptSettings.from_config(section).top_k == 4
    assert SAESettings.from_config(section["sae"]) == SAESettings(k=8)
    with pytest.raises(ValueError, match=r"concepts.sae: unknown key 'kk'; did you mean 'k'\?"):
        SAESettings.from_config({"kk": 8})
    with pytest.raises(ValueError, match=r"concepts.sae.kind is 'top'"):
        SAESettings.from_config({"kind": "top"})
    with pytest.raises(ValueError, match=r"concepts.n_splits is 1"):
        ConceptSettings.from_config({"n_splits": 1})
