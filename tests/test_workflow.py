"""Real snakemake runs: the default config's dry run and DAG, the slurm profile's dry run,
and the whole DAG on a tiny config (random-weight models), checked against plain
transformers."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(*args, cwd=REPO, check=True, timeout=1500):
    proc = subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


@pytest.mark.slow  # snakemake -n
def test_default_dry_run_plans_every_layer():
    out = snakemake("-n", "--forceall", "--cores", "2", "all").stdout  # whatever results/ holds
    # embedded SmolLM2: 30 layers -> drop 0..29 and swap 0..28, one job each (layers_per_job: 30)
    for chunk in ("drop/000-029", "swap/000-028"):
        assert f"results/smollm2/interventions/{chunk}.parquet" in out
    assert "figures/fig3.pdf" in out


@pytest.mark.slow  # snakemake -n
def test_rulegraph_and_dag():
    dot = snakemake("--rulegraph", "--cores", "1", "all").stdout
    for rule in ("prepare_model", "corpus", "interventions_chunk", "interventions", "plot_fig3", "table_robustness"):
        assert rule in dot
    dag = snakemake("--dag", "mermaid-js", "--cores", "1", "figures/fig3.pdf").stdout
    assert "interventions_chunk" in dag


@pytest.mark.slow  # snakemake -n
def test_slurm_profile_dry_run_one_job_per_layer():
    out = snakemake(
        "all", "-n", "--profile", "profiles/slurm",
        "--configfile", "config/config.yaml", "config/cluster.yaml",
    ).stdout
    assert "results/smollm2/interventions/drop/029-029.parquet" in out
    assert "results/smollm2/interventions/swap/028-028.parquet" in out


@pytest.mark.slow  # snakemake -n
def test_bad_config_value_is_named():
    proc = snakemake("all", "-n", "--cores", "1", "--config", "runtime={device: tpu}", check=False)
    assert proc.returncode != 0
    assert "tpu" in (proc.stdout + proc.stderr)


def test_tiny_workflow_builds_figures(tiny_run):
    for n in range(3, 11):  # every figure of `all`, figures 3-10
        pdf = tiny_run / f"figures/fig{n}.pdf"
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 10_000, pdf
    assert "tiny-gpt2" in (tiny_run / "figures/table2.md").read_text()
    scores = pd.read_parquet(tiny_run / "results/tiny-llama/subjoiner_scores.parquet")
    assert len(scores) == 4 * 4  # every head of every layer scored
    table = pd.read_csv(tiny_run / "figures/table_robustness.csv")
    assert set(table.model) == {"tiny-llama", "tiny-gpt2", "tiny-neox"}
    assert set(table.intervention) == {"drop", "swap"}
    assert (tiny_run / "logs/interventions_chunk/tiny-llama/drop/000-001.log").exists()
    # nothing left to do: outputs complete and consistent
    again = snakemake("--configfile", "config/test.yaml", "-n", "--cores", "1", "all", cwd=tiny_run)
    assert "Nothing to be done" in again.stdout + again.stderr


def all_inputs(project, *config) -> list[str]:
    """The inputs of rule `all` (ALL_TARGETS of workflow/rules/common.smk: every per-model
    table users open and every figure and table) under ``config``, as the workflow itself
    lists them in a dry run's job for `all`; no document is read."""
    out = snakemake(*config, "-n", "--forceall", "--cores", "1", "all", cwd=project).stdout
    block = re.search(r"^(?:local)?rule all:\n\s+input: (.+)$", out, flags=re.M)
    assert block, out[-3000:]
    return block.group(1).split(", ")


def test_all_rebuilds_every_table_it_lists(tiny_run, tmp_path):
    """Every per-model table of `all` (MODEL_TABLES) comes back when it is deleted."""
    targets = all_inputs(tiny_run, "--configfile", "config/test.yaml")
    tables = sorted({t.split("/", 2)[2] for t in targets if t.startswith("results/tiny-llama/")})
    assert {"interventions.parquet", "interventions_tokens.parquet", "layer_stats_tokens.parquet",
            "subjoiner_scores.parquet", "ing_probes.parquet", "self_repair.parquet", "seqcont_circuits.parquet",
            "concept_probes.parquet", "layer_edits.parquet", "cka.parquet"} <= set(tables), tables
    moved = []
    try:
        for model in ("tiny-llama", "tiny-gpt2"):
            for name in tables:
                path = tiny_run / "results" / model / name
                moved.append((path, tmp_path / f"{model}-{name}"))
                path.rename(moved[-1][1])
        plan = snakemake("--configfile", "config/test.yaml", "-n", "--cores", "1", "all", cwd=tiny_run)
    finally:
        for path, away in moved:
            away.rename(path)
    out = plan.stdout + plan.stderr
    missing = [f"{m}/{n}" for m in ("tiny-llama", "tiny-gpt2") for n in tables if f"results/{m}/{n}" not in out]
    assert not missing, out[-3000:]


def test_report_holds_every_figure_and_table(tiny_run):
    snakemake("--configfile", "config/test.yaml", "--cores", "1", "--report", "report.html", cwd=tiny_run)
    html = (tiny_run / "report.html").read_text()
    # the report's results (embedded files), not file names elsewhere in the page
    results = json.loads(re.search(r"var results = (\{.*?\});\n", html, flags=re.S).group(1))
    # every figure and table `all` built (the Markdown tables too)
    targets = sorted(str(p.relative_to(tiny_run)) for p in (tiny_run / "figures").iterdir())
    expected = {"figures/fig3.pdf", "figures/fig10.pdf", "figures/table_robustness.csv", "figures/table_robustness.md",
                "figures/table2.csv", "figures/table2.md"}
    assert expected <= set(targets)
    missing = [t for t in targets if t not in results]
    assert not missing, missing
    assert all(results[t]["caption"].strip() for t in targets), "a figure or table without a caption"
    assert "How the results are made" in html  # the front page, workflow/report/workflow.rst


@pytest.mark.slow  # snakemake -n
def test_lint_is_clean():
    proc = snakemake("--lint", check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Congratulations" in proc.stdout + proc.stderr


def test_conda_env_lists_the_package_dependencies():
    """`--sdm conda` runs every rule in workflow/envs/stages.yaml: the same libraries as
    pyproject.toml (snakemake and its plugin run the workflow, not the jobs)."""
    import yaml

    block = (REPO / "pyproject.toml").read_text().split("\ndependencies = [")[1].split("]")[0]
    deps = re.findall(r'"([^"]+)"', block)
    assert "torch>=2.4" in deps
    env = yaml.safe_load((REPO / "workflow/envs/stages.yaml").read_text())
    listed = [d for d in env["dependencies"] if isinstance(d, str)]
    listed += [d for d in env["dependencies"] if isinstance(d, dict) for d in d["pip"]]
    names = {re.split(r"[ <>=]", d.strip())[0].replace("_", "-") for d in listed}
    conda_name = {"torch": "pytorch", "matplotlib": "matplotlib-base", "seaborn": "seaborn-base"}
    for dep in deps:
        name = re.split(r"[ <>=\[]", dep)[0]
        if not name.startswith("snakemake"):
            assert conda_name.get(name, name) in names, name


def test_tiny_workflow_numbers_match_plain_transformers(tiny_run):
    """Recompute base accuracy and the drop-1 KL with plain transformers on the
    workflow's own tokens and weights."""
    from transformers import AutoModelForCausalLM

    from stages_of_inference.core.metrics import kl_nats, log_probs

    summary = pd.read_parquet(tiny_run / "results/tiny-llama/interventions.parquet")
    assert len(summary) == 4 + 3  # drop 0..3, swap 0..2
    model = AutoModelForCausalLM.from_pretrained(tiny_run / "results/models/tiny-llama/weights",
                                                 attn_implementation="eager").eval()
    tokens = torch.load(tiny_run / "results/tiny-llama/corpus.pt", weights_only=True)
    with torch.no_grad():
        base = log_probs(model(input_ids=tokens).logits)
        acc = (base[:, 1:-1].argmax(-1) == tokens[:, 2:]).float().mean().item()
        model.model.layers = torch.nn.ModuleList([model.model.layers[i] for i in (0, 2, 3)])
        dropped = log_probs(model(input_ids=tokens).logits)
    kl = kl_nats(base, dropped)[:, 1:].mean().item()
    row = summary[(summary.kind == "drop") & (summary.layer == 1)].iloc[0]
    assert row.correct_base_mean == pytest.approx(acc, abs=1e-6)
    assert row.kl_mean == pytest.approx(kl, rel=1e-3, abs=1e-6)
    assert row.rel_depth == pytest.approx(1 / 3)


DOCUMENTS = ("README.md", "docs/*.md", "config/README.md")


def fenced_commands(text: str) -> list[str]:
    """The snakemake command lines of a Markdown text's ```bash / ```sh code blocks (code,
    not prose): a line `snakemake ...` or `.venv/bin/snakemake ...`, backslash
    continuations joined, a trailing `# comment` and a pipe after it dropped, spaces
    collapsed."""
    commands = []
    for block in re.findall(r"^```(?:bash|sh|shell|console)\n(.*?)^```", text, flags=re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            cmd = " ".join(re.sub(r"\s+#.*$", "", line).split(" | ")[0].split())
            if cmd.startswith((".venv/bin/snakemake ", "snakemake ")):
                commands.append(cmd)
    return commands


def documented_commands():
    """Every snakemake command line the documentation's code blocks tell a user to type,
    and the Makefile's `run` recipe (argument order matters: --resources, --configfile and
    --config take several values and swallow a target placed after them)."""
    lines = []
    for pattern in DOCUMENTS:
        for path in sorted(REPO.glob(pattern)):
            lines += [c for c in fenced_commands(path.read_text())
                      if not any(flag in c for flag in ("--report", "--lint"))]  # both tested above
    recipe = (REPO / "Makefile").read_text().split("\nrun:")[1].splitlines()[1]
    lines.append(recipe.strip().replace("$(VENV)", ".venv").replace("$(CORES)", "2"))
    return list(dict.fromkeys(lines))


def test_fenced_commands_reads_code_blocks_only():
    text = ("Run `snakemake all` (prose).\n\n```bash\n.venv/bin/snakemake figures/fig3.pdf --cores 2  # one\n"
            "make run\nsnakemake all --configfile a.yaml \\\n    b.yaml\nsnakemake all --dag | dot -Tpdf > d.pdf\n```\n"
            "\n```yaml\nsnakemake: x\n```\n")
    assert fenced_commands(text) == [".venv/bin/snakemake figures/fig3.pdf --cores 2",
                                     "snakemake all --configfile a.yaml b.yaml", "snakemake all --dag"]


@pytest.mark.slow  # snakemake -n
def test_documented_command_lines_parse_and_plan():
    commands = documented_commands()
    assert any("--resources gpu=1" in c for c in commands) and any("profiles/slurm" in c for c in commands)
    for cmd in commands:
        args = cmd.split()[1:]
        # -n/--forceall end any multi-valued option; a swallowed target would fail here
        proc = snakemake(*args, "-n", "--forceall", check=False)
        assert proc.returncode == 0, f"{cmd}\n{proc.stderr[-2000:]}"
        out = proc.stdout + proc.stderr
        targets = [a for a in args if a.startswith("figures/")]
        if targets:  # named targets: each one planned (study commands need not run intervene)
            assert all(t in out for t in targets), cmd
        else:
            assert "rule interventions_chunk" in out or "rulegraph" in cmd or "digraph" in out, cmd
