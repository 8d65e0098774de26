"""The study config sections share one from_config (core.settings.Settings)."""
import pytest
import yaml
from pathlib import Path

from stages_of_inference.casestudies.ing import IngSettings as IngSpec
from stages_of_inference.casestudies.subjoiner import SubjoinerSettings as SubjoinerSpec
from stages_of_inference.concepts.settings import ConceptSettings as ConceptSpec
from stages_of_inference.concepts.settings import SAESettings
from stages_of_inference.seqcont.prompts import SeqcontSettings as SeqcontSpec

REPO = Path(__file__).resolve().parents[2]
SCHEMA = yaml.safe_load((REPO / "config/schema.yaml").read_text())


def schema_defaults(*path):
    node = SCHEMA
    for part in path:
        node = node["properties"][part]
    return {key: prop["default"] for key, prop in node["properties"].items() if "default" in prop}


SECTIONS = {
    SubjoinerSpec: schema_defaults("casestudies", "subjoiner"),
    IngSpec: schema_defaults("casestudies", "ing"),
    SeqcontSpec: schema_defaults("seqcont"),
    ConceptSpec: schema_defaults("concepts"),
    SAESettings: schema_defaults("concepts", "sae"),
}


@pytest.mark.parametrize("cls", list(SECTIONS), ids=lambda c: c.__name__)
def test_schema_defaults_round_trip(cls):
    spec = cls.from_config(SECTIONS[cls])
    for key, value in SECTIONS[cls].items():
        if key not in cls.shared_keys:
            assert getattr(spec, key) == (tuple(value) if isinstance(getattr(spec, key), tuple) else value)
    assert cls.from_config(spec.to_dict()) == spec
    assert cls.from_config(None) == cls()  # the dataclass defaults pass their own checks


@pytest.mark.parametrize("cls", list(SECTIONS), ids=lambda c: c.__name__)
def test_unknown_key_is_named_with_the_nearest(cls):
    key = next(iter(f for f in cls.__dataclass_fields__ if f.startswith("n_")), "seed")
    with pytest.raises(ValueError, match=rf"{cls.section}: unknown key '{key}x'; did you mean '{key}'\?"):
        cls.from_config({key + "x": 1})


def test_checks_name_the_bad_value():
    with pytest.raises(ValueError, match=r"casestudies.ing.test_fraction is 1.5"):
        IngSpec.from_config({"test_fraction": 1.5})
    with pytest.raises(ValueError, match=r"casestudies.subjoiner.max_subtokens is 1"):
        SubjoinerSpec.from_config({"max_subtokens": 1})
    with pytest.raises(ValueError, match=r"concepts.n_splits is 1"):
        ConceptSpec.from_config({"n_splits": 1, "sae": {"k": 8}})
    with pytest.raises(ValueError, match=r"seqcont.n_items is 1"):
        SeqcontSpec.from_config({"n_items": 1})
    # the concepts section's SAE block and stimuli folder are read elsewhere, not rejected
    assert ConceptSpec.from_config({"sae": {"k": 8}, "stimuli": "x", "top_k": 4}).top_k == 4
