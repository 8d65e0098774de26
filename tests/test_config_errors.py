"""Bad input is caught when the DAG is built, before any job runs, in one line that names
the key (and the file that sets it) and the fix. Each case is a real `snakemake -n` on a
bad config file."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TINY = {"source": "random", "arch": "llama", "tokenizer": "bpe:512",
        "config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                   "num_attention_heads": 4, "max_position_embeddings": 128}}

pytestmark = pytest.mark.slow


def dry_run(tmp_path, overlay=None, whole=None, extra=()):
    """`snakemake -n all` with an overlay on config/config.yaml, or a whole config."""
    args = [sys.executable, "-m", "snakemake", "-n", "all", "--cores", "1"]
    if overlay is not None:
        path = tmp_path / "overlay.yaml"
        path.write_text(yaml.safe_dump(overlay))
        args += ["--configfile", str(path)]
    if whole is not None:
        path = tmp_path / "whole.yaml"
        path.write_text(yaml.safe_dump(whole))
        args += ["--configfile", str(path)]
    proc = subprocess.run([*args, *extra], cwd=REPO, capture_output=True, text=True, timeout=300)
    return proc, path if (overlay is not None or whole is not None) else None


def one_line_error(proc) -> str:
    """The run failed, and its error is one `Config error:` line (no traceback, no dump)."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    out = proc.stdout + proc.stderr
    lines = [line for line in out.splitlines() if line.startswith("Config error:")]
    assert len(lines) == 1, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    return lines[0]


def test_unknown_key_in_a_study_section_is_named_with_its_file(tmp_path):
    for section, key, nearest in (("self_repair", "figure_head", "figure_heads"),
                                  ("seqcont", "treshold", "threshold")):
        proc, path = dry_run(tmp_path, overlay={section: {key: 1}})
        line = one_line_error(proc)
        assert f"'{section}.{key}'" in line and f"did you mean '{nearest}'" in line and str(path) in line


def test_schema_error_is_one_line_naming_key_value_and_file(tmp_path):
    proc, path = dry_run(tmp_path, overlay={"runtime": {"device": "tpu"}})
    line = one_line_error(proc)
    assert "'runtime.device'" in line and "'tpu'" in line and str(path) in line
    proc, path = dry_run(tmp_path, overlay={"self_repair": {"ablation": "noise"}})
    line = one_line_error(proc)
    assert "'self_repair.ablation'" in line and str(path) in line
    assert re.search(r"use one of (\w+), (\w+), (\w+)\.", line) and all(v in line for v in ("mean", "resample", "zero"))


def test_concepts_layer_beyond_the_model(tmp_path):
    line = one_line_error(dry_run(tmp_path, overlay={"concepts": {"layer": 999}})[0])
    assert "concepts.layer is 999" in line and "'smollm2' has blocks 0..29" in line


def test_sae_k_larger_than_the_dictionary(tmp_path):
    line = one_line_error(dry_run(tmp_path, overlay={"concepts": {"sae": {"k": 5000}}})[0])
    assert "concepts.sae.k is 5000" in line and "2 x 576 = 1152" in line


def test_cuda_on_a_machine_without_one(tmp_path):
    from stages_of_inference.core.models import nvidia_driver_present

    if nvidia_driver_present():
        pytest.skip("this machine has an NVIDIA driver")
    line = one_line_error(dry_run(tmp_path, overlay={"runtime": {"device": "cuda"}})[0])
    assert "runtime.device is 'cuda'" in line and "no NVIDIA driver" in line


def test_case_study_context_longer_than_the_model_takes(tmp_path):
    whole = {"models": {"tiny": TINY}, "corpus": {"n_sequences": 2, "seq_len": 16},
             "casestudies": {"ing": {"context_tokens": 500}}}
    line = one_line_error(dry_run(tmp_path, whole=whole)[0])
    assert "casestudies.ing.context_tokens is 500" in line and "128 positions" in line


def test_model_without_layers(tmp_path):
    empty = {**TINY, "config": {**TINY["config"], "num_hidden_layers": 0}}
    line = one_line_error(dry_run(tmp_path, whole={"models": {"empty": empty}})[0])
    assert "'empty'" in line and "no transformer blocks" in line


def test_binary_txt_corpus(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(b"some text\n\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    line = one_line_error(dry_run(tmp_path, overlay={"corpus": {"source": str(corpus)}})[0])
    assert str(corpus) in line and "not UTF-8" in line


def test_malformed_jsonl_corpus(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"text": "fine"}) + "\n{\"text\": \"broken\n")
    line = one_line_error(dry_run(tmp_path, overlay={"corpus": {"source": str(corpus)}})[0])
    assert str(corpus) in line and "line 2" in line and "not JSON" in line


def test_warning_is_printed_once(tmp_path):
    proc, _ = dry_run(tmp_path, overlay={"self_repair": {"n_sequences": 99}})
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert out.count("Config warning: self_repair.n_sequences is 99") == 1, out[-2000:]
