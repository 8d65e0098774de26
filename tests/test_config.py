"""Configuration mistakes fail when the DAG is built, with one line; documented config
files mean what they say when run from the repository root (issue 13, items 1-4)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stages_of_inference.core import checks
from stages_of_inference.core.models import ModelSpec, job_gpus, max_positions

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "config/schema.yaml").read_text())
TEST_MODELS = set(yaml.safe_load((REPO / "config/test.yaml").read_text())["models"])


def dry_run(*args, cwd=REPO):
    """`snakemake -n` from the repository root, as a user types it."""
    return subprocess.run([sys.executable, "-m", "snakemake", "-n", "--forceall", "--cores", "1", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


def planned_models(out):
    return set(re.findall(r"results/models/([^/\s]+)/manifest\.json", out))


# -- item 1: whole config files replace config/config.yaml, overlays extend it ------------

@pytest.mark.slow  # snakemake -n
def test_tiny_config_from_the_repository_root_runs_only_its_models():
    proc = dry_run("all", "--configfile", "config/test.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert planned_models(out) == TEST_MODELS  # not SmolLM2 from config/config.yaml
    assert "smollm2" not in out  # (was: 87 jobs instead of 48)


@pytest.mark.slow  # snakemake -n
def test_an_overlay_extends_the_default_config():
    out = dry_run("all", "--configfile", "config/cluster.yaml")  # no models: an overlay
    assert out.returncode == 0, out.stderr[-3000:]
    default_models = set(yaml.safe_load((REPO / "config/config.yaml").read_text())["models"])
    assert planned_models(out.stdout) == default_models
    assert "results/smollm2/interventions/drop/029-029.parquet" in out.stdout  # layers_per_job: 1


def test_whole_config_detection(tmp_path):
    whole, overlay = tmp_path / "w.yaml", tmp_path / "o.json"
    whole.write_text("models: {a: {source: embedded}}\n")
    overlay.write_text('{"corpus": {"n_sequences": 2}}')
    assert checks.replaces_default_config([str(whole), str(overlay)])
    assert not checks.replaces_default_config([str(overlay)])
    assert not checks.replaces_default_config([])


# -- item 2: corpus.seq_len longer than a model's positions -------------------------------

@pytest.mark.slow  # snakemake -n
def test_seq_len_beyond_a_models_positions_fails_at_dag_build(tmp_path):
    cfg = tmp_path / "long.yaml"
    cfg.write_text(yaml.safe_dump({
        "models": {"short-gpt2": {"source": "random", "arch": "gpt2", "tokenizer": "bpe:512",
                                  "config": {"n_layer": 2, "n_embd": 32, "n_head": 2, "n_positions": 64}}},
        "corpus": {"seq_len": 65},
    }))
    proc = dry_run("all", "--configfile", str(cfg))
    assert proc.returncode != 0
    line = proc.stderr.strip().splitlines()[-1]
    assert "corpus.seq_len" in line and "short-gpt2" in line and "64" in line, proc.stderr[-2000:]
    assert "rule " not in proc.stdout  # nothing planned


@pytest.mark.slow  # snakemake -n
def test_a_study_subset_larger_than_the_corpus_is_said_at_dag_build(tmp_path):
    overlay = tmp_path / "more.yaml"  # the default corpus has 8 sequences
    overlay.write_text(yaml.safe_dump({"self_repair": {"n_sequences": 9}}))
    proc = dry_run("all", "--configfile", "config/config.yaml", str(overlay))
    assert proc.returncode == 0, proc.stderr[-2000:]  # it runs, on the 8 there are
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("Config warning:")]
    assert len(warnings) == 1 and "self_repair.n_sequences is 9" in warnings[0] and "is 8" in warnings[0]
    # the default and the documented full overlays say nothing
    for files in (["config/config.yaml"], ["config/config.yaml", "config/self_repair-full.yaml"]):
        ok = dry_run("all", "--configfile", *files)
        assert ok.returncode == 0 and "Config warning" not in ok.stderr, ok.stderr[-2000:]
    assert checks.subset_warnings({"n_sequences": 8, "seq_len": 128}, "self_repair", {"n_sequences": 2}) == []
    (line,) = checks.subset_warnings({"n_sequences": 8, "seq_len": 128}, "self_repair", {"seq_len": 129})
    assert line.startswith("self_repair.seq_len is 129 but corpus.seq_len is 128")


def test_max_positions_from_the_model_config():
    assert max_positions(ModelSpec.from_config("smollm2", {"source": "embedded"})) == 8192
    assert max_positions(ModelSpec.from_config("g", {"source": "embedded", "embedded": "gemma3"})) == 32768
    llama = {"source": "random", "arch": "llama", "config": {"max_position_embeddings": 96, "num_hidden_layers": 1}}
    assert max_positions(ModelSpec.from_config("l", llama)) == 96
    gpt2 = {"source": "random", "arch": "gpt2", "config": {"n_positions": 48}}
    assert max_positions(ModelSpec.from_config("g", gpt2)) == 48
    checks.check_seq_len(48, {"g": 48, "none": None})
    with pytest.raises(checks.ConfigError, match="'g' takes at most 48"):
        checks.check_seq_len(49, {"g": 48})


# -- item 3: missing or empty corpus file ----------------------------------------------

@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ("", "is empty (no text)"),
    ("\n   \n\n", "is empty (no text)"),
])
@pytest.mark.slow  # snakemake -n
def test_missing_or_empty_corpus_fails_at_dag_build(tmp_path, content, message):
    corpus = tmp_path / "corpus.txt"
    if content is not None:
        corpus.write_text(content)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"models": {"smollm2": {"source": "embedded"}}, "corpus": {"source": str(corpus)}}))
    proc = dry_run("all", "--configfile", str(cfg))
    assert proc.returncode != 0
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("Config error: corpus.source") and message in line, proc.stderr[-2000:]
    assert "n_sequences" not in line  # the old advice for an empty file


def test_corpus_file_checks(tmp_path):
    good = tmp_path / "a.jsonl"
    good.write_text('{"text": ""}\n{"text": "some words"}\n')
    checks.check_corpus_source({"source": str(good)})
    checks.check_corpus_source({"source": "embedded"})
    with pytest.raises(checks.ConfigError, match="corpus.text_field 'body'"):
        checks.check_corpus_source({"source": str(good), "text_field": "body"})
    (tmp_path / "a.csv").write_text("x")
    with pytest.raises(checks.ConfigError, match=r"\.txt or \.jsonl"):
        checks.check_corpus_source({"source": str(tmp_path / "a.csv")})


# -- item 4: a misspelled key -----------------------------------------------------------

@pytest.mark.slow  # snakemake -n
def test_misspelled_top_level_key_is_one_line():
    proc = dry_run("all", "--config", "corpsu={seq_len: 64}")
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "corpsu" in line]
    assert len(errors) == 1 and "did you mean 'corpus'" in errors[0], proc.stderr[-3000:]
    assert len(lines) <= 3, proc.stderr  # was 516 lines: the whole schema and config


def test_key_check_reads_the_schema():
    """Valid keys come from the schema's properties: a study's new top-level key is known
    once it is in the schema, and nested keys are checked too."""
    checks.check_keys({"models": {}, "corpus": {"seq_len": 3}}, SCHEMA)
    with pytest.raises(checks.ConfigError, match="'newstudy'"):
        checks.check_keys({"newstudy": {}}, SCHEMA)
    extended = {**SCHEMA, "properties": {**SCHEMA["properties"], "newstudy": {"type": "object"}}}
    checks.check_keys({"newstudy": {"anything": 1}}, extended)
    with pytest.raises(checks.ConfigError, match=r"'runtime.devcie'.*did you mean 'device'"):
        checks.check_keys({"runtime": {"devcie": "cpu"}}, SCHEMA)
    with pytest.raises(checks.ConfigError, match=r"'models.m.sorce'.*did you mean 'source'"):
        checks.check_keys({"models": {"m": {"sorce": "hf"}}}, SCHEMA)
    every_top_level_key = set(SCHEMA["properties"])
    assert {"models", "corpus", "interventions", "runtime"} <= every_top_level_key


# -- item 6 (the GPU part): GPUs per job from runtime.device, no path in the rules -------

def test_job_gpus_follow_runtime_device():
    assert job_gpus("cpu") == 0
    assert job_gpus("cuda") == 1 and job_gpus("cuda:1") == 1
    assert job_gpus("auto") in (0, 1)
    # jobs sent to a cluster land on its nodes: auto asks for a GPU there, cpu never does
    assert job_gpus("auto", cluster=True) == 1 and job_gpus("cpu", cluster=True) == 0


# -- defaults live in the schema alone (the settings classes: tests/core/test_settings.py)


def test_default_config_restates_no_default():
    """config/config.yaml holds what the schema cannot know (the models) and nothing the
    schema already says."""
    default = yaml.safe_load((REPO / "config/config.yaml").read_text())
    assert set(default) == {"models"}
