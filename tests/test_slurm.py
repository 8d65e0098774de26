"""Real SLURM: a one-node cluster (.ci/slurm-cluster.sh, no accounting) runs workflow jobs
submitted through `--profile profiles/slurm`; the outputs equal a local run's, byte for byte.

The cluster needs root (or passwordless sudo) and apt-get, or SLURM already installed.
Where it cannot be set up the test is skipped, unless SOI_REQUIRE_SLURM=1 (CI: .ci/run).
A cluster that was already running is used and left running; one started here is stopped.
"""
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / ".ci" / "slurm-cluster.sh"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# One tiny model of 2 layers and one intervention kind: prepare_model, tokenize, one
# intervene job (gpu partition, gpu: 1), aggregate, fig3 -> 5 SLURM jobs.
CONFIG = {
    "models": {"tiny-gpt2": {"source": "random", "arch": "gpt2", "tokenizer": "bpe:512",
                             "config": {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 64}}},
    "corpus": {"source": "embedded", "n_sequences": 4, "seq_len": 32, "seed": 0},
    "interventions": {"kinds": ["drop"], "layers_per_job": 2, "batch_size": 2},
    "runtime": {"device": "auto", "dtype": "float32", "threads": 1},
}
OUTPUTS = [
    "results/tiny-gpt2/corpus.json",
    "results/tiny-gpt2/interventions/drop/000-001.parquet",
    "results/tiny-gpt2/interventions.parquet",
    "results/tiny-gpt2/interventions_tokens.parquet",
    "figures/fig3.pdf",
]


@pytest.fixture(scope="module")
def slurm_cluster():
    if subprocess.run([SCRIPT, "status"], capture_output=True).returncode == 0:
        yield  # somebody's cluster: use it, leave it
        return
    proc = subprocess.run([SCRIPT, "start"], capture_output=True, text=True, timeout=900)
    if proc.returncode == 3 and os.environ.get("SOI_REQUIRE_SLURM") != "1":
        pytest.skip(f"no SLURM cluster here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    try:
        yield
    finally:
        subprocess.run([SCRIPT, "stop"], capture_output=True, timeout=120)


def run(workdir, *args, timeout=1200):
    proc = subprocess.run(
        [*SNAKEMAKE, "figures/fig3.pdf", "--directory", str(workdir), "--configfile",
         str(workdir.parent / "config.yaml"), *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, f"{args}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc.stdout + proc.stderr


def test_profile_runs_jobs_on_slurm_like_a_local_run(slurm_cluster, tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    start = time.monotonic()
    # the profile as documented; threads as locally so the numbers may be compared bitwise
    out = run(tmp_path / "cluster", "--profile", "profiles/slurm", "--set-threads", "interventions_chunk=1",
              "--retries", "0")
    took = time.monotonic() - start
    print(f"SLURM run: {took:.0f} s")
    jobs = [line for line in out.splitlines() if "has been submitted with SLURM jobid" in line]
    assert len(jobs) == 5, out[-3000:]
    # squeue (no accounting) still lists the finished jobs: all completed, the model job on the
    # gpu partition holding the GRES gpu (runtime.device auto on a cluster asks for one)
    ids = ",".join(line.split("SLURM jobid ")[1].split()[0] for line in jobs)
    table = subprocess.run(["squeue", "--states=all", "--noheader", "--jobs", ids, "--Format",
                            "JobID:|,Comment:|,Partition:|,State:|,tres-per-job:|"],
                           capture_output=True, text=True, check=True).stdout
    rows = [line.split("|") for line in table.split()]
    assert len(rows) == 5 and {r[3] for r in rows} == {"COMPLETED"}, table
    model_jobs = [r for r in rows if r[1].startswith("rule_interventions_chunk")]
    assert len(model_jobs) == 1 and model_jobs[0][2] == "gpu" and "gpu" in model_jobs[0][4], table
    others = [r for r in rows if not r[1].startswith("rule_interventions_chunk")]
    assert {r[2] for r in others} == {"cpu"} and not any("gpu" in r[4] for r in others), table

    run(tmp_path / "local", "--cores", "2")
    for name in OUTPUTS:
        cluster, local = tmp_path / "cluster" / name, tmp_path / "local" / name
        if name.endswith(".parquet"):
            pd.testing.assert_frame_equal(pd.read_parquet(cluster), pd.read_parquet(local), check_exact=True)
        else:
            assert cluster.read_bytes() == local.read_bytes(), name
    assert torch.equal(torch.load(tmp_path / "cluster/results/tiny-gpt2/corpus.pt", weights_only=True),
                       torch.load(tmp_path / "local/results/tiny-gpt2/corpus.pt", weights_only=True))
    summary = pd.read_parquet(tmp_path / "cluster/results/tiny-gpt2/interventions.parquet")
    assert len(summary) == 2 and (summary.kl_mean > 0).all()
