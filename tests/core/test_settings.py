"""A config section as an object: keys, defaults and allowed values come from
config/schema.yaml alone (core.settings.Settings); Python restates none of them."""
import inspect
from pathlib import Path

import pytest
import yaml

from stages_of_inference.casestudies.ing import IngSettings
from stages_of_inference.casestudies.subjoiner import SubjoinerSettings
from stages_of_inference.concepts.settings import SAE_KINDS, ConceptSettings, SAESettings
from stages_of_inference.core.corpus import CorpusSettings
from stages_of_inference.core.settings import Settings
from stages_of_inference.seqcont.prompts import SeqcontSettings

REPO = Path(__file__).resolve().parents[2]
SCHEMA = yaml.safe_load((REPO / "config/schema.yaml").read_text())
CLASSES = [CorpusSettings, SubjoinerSettings, IngSettings, SeqcontSettings, ConceptSettings, SAESettings]


def schema_node(section):
    node = SCHEMA
    for part in section.split("."):
        node = node["properties"][part]
    return node["properties"]


def test_every_study_section_has_a_settings_class():
    def subclasses(cls):
        return set(cls.__subclasses__()).union(*(subclasses(c) for c in cls.__subclasses__()))

    assert subclasses(Settings) >= set(CLASSES)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_no_key_or_default_is_restated_in_python(cls):
    """A default written in the class would be a second source: a class may hold only its
    section name and its checks."""
    props = schema_node(cls.section)
    own = {name for name, _ in inspect.getmembers(cls) if not name.startswith("_")} - set(dir(Settings))
    assert not own & set(props), own & set(props)
    assert not getattr(cls, "__annotations__", {}).keys() - {"section"}


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_defaults_are_the_schemas_and_round_trip(cls):
    props = schema_node(cls.section)
    made = cls()
    for key, prop in props.items():
        if "default" in prop:
            assert getattr(made, key) == prop["default"], key
    assert cls.from_config(made.to_dict()) == made
    assert cls.from_config(None) == made


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_unknown_key_is_named_with_the_nearest(cls):
    key = next(k for k in schema_node(cls.section) if k.startswith(("n_", "seed", "source")))
    with pytest.raises(ValueError, match=rf"{cls.section}: unknown key '{key}x'; did you mean '{key}'\?"):
        cls.from_config({key + "x": 1})


def test_bad_values_are_named_in_one_line():
    cases = [
        (IngSettings, {"test_fraction": 1.5}, r"casestudies.ing.test_fraction is 1.5; exclusiveMaximum is 1"),
        (SubjoinerSettings, {"max_subtokens": 1}, r"casestudies.subjoiner.max_subtokens is 1; minimum is 2"),
        (SubjoinerSettings, {"context_tokens": 3, "max_subtokens": 4},
         r"casestudies.subjoiner.context_tokens is 3; use at least max_subtokens \(4\)"),
        (ConceptSettings, {"n_splits": 1}, r"concepts.n_splits is 1; minimum is 2"),
        (SeqcontSettings, {"n_items": 1}, r"seqcont.n_items is 1; minimum is 2"),
        (SeqcontSettings, {"tasks": ["digits", "letters"]}, r"seqcont.tasks.1 is 'letters'; use one of digits"),
        (SAESettings, {"kind": "top"}, r"concepts.sae.kind is 'top'; use one of topk, relu"),
        (CorpusSettings, {"seq_len": 2}, r"corpus.seq_len is 2; minimum is 3"),
    ]
    for cls, entry, message in cases:
        with pytest.raises(ValueError, match=message):
            cls.from_config(entry)


def test_nested_sections_and_kinds():
    section = {"sae": {"k": 8}, "stimuli": "x", "top_k": 4}
    assert ConceptSettings.from_config(section).top_k == 4
    assert SAESettings.from_config(section["sae"]) == SAESettings(k=8)
    assert list(SAE_KINDS) == schema_node("concepts.sae")["kind"]["enum"]
