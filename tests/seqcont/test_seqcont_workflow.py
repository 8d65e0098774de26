"""The study's targets on the tiny config (random-weight models, 512-token byte-level BPE:
only digits are single tokens, so the other tasks are empty but labelled)."""
import pandas as pd

TARGETS = ["figures/seqcont_tasks.pdf", "figures/seqcont_heads.pdf", "figures/seqcont_circuits.pdf"]


def test_tiny_workflow_builds_seqcont_targets(tiny_run):
    tmp_path = tiny_run  # the shared run of `all` on the tiny config (tests/conftest.py)
    for target in TARGETS:
        pdf = tmp_path / target
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 10_000, target
    n_solved = 0
    for model, n_layers in (("tiny-llama", 4), ("tiny-gpt2", 3), ("tiny-neox", 3)):
        res = tmp_path / "results" / model
        counts = pd.read_parquet(res / "seqcont_counts.parquet").set_index("task")
        assert counts.loc["digits", "n_kept"] == 3 and counts.loc["months", "n_kept"] == 0
        prompts = pd.read_parquet(res / "seqcont_prompts.parquet")
        assert set(prompts["task"]) == {"digits"}
        components = pd.read_parquet(res / "seqcont_components.parquet")
        assert len(components) == n_layers * (4 + 1)  # every head and MLP of every layer
        tasks = pd.read_parquet(res / "seqcont_tasks.parquet")
        assert tasks["task"].tolist() == ["digits"] and tasks["n_prompts"].tolist() == [3]
        circuits = pd.read_parquet(res / "seqcont_circuits.parquet")
        assert set(circuits["order"]) == {0, 1} and len(circuits) == 2 * n_layers * 5
        summary = pd.read_parquet(res / "seqcont_circuit_summary.parquet")
        solved = summary[summary["solved"]]
        n_solved += len(solved)
        assert ((solved["recheck_score_pct"] - solved["final_score_pct"]).abs() < 1e-3).all()
        assert (solved["final_score_pct"] > 80).all()  # strictly above the threshold, as the repository
        assert (solved["n_sweeps"] >= 1).all() and (summary.loc[~summary["solved"], "n_sweeps"] == 0).all()
        assert summary.loc[~summary["solved"], "final_score_pct"].isna().all()  # no circuit, no score
        successor = pd.read_parquet(res / "seqcont_successor.parquet")
        assert set(successor["family"]) == {"digits"} and len(successor) == 2 * n_layers * 4
        assert set(successor["score"]) == {"lan_torr_barez", "isolated"}
        assert successor["successor_score"].between(0, 1).all()
    assert n_solved >= 1  # some random model has a positive clean logit difference: the checks above ran
