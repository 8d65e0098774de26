"""Code hygiene, run with the tests: `ruff check` on the Python code (rules in
pyproject.toml [tool.ruff]), `snakefmt --check` on the Snakefile and the rules files
([tool.snakefmt]), and every report caption is reStructuredText that docutils renders
without an error. (`snakemake --lint`: tests/test_workflow.py.)"""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def tool(module):
    """``python -m <module>`` of the running interpreter; skip where it is not installed
    (`pip install -e ".[test]"` installs both)."""
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (it comes with the test extras: pip install -e '.[test]')")
    return [sys.executable, "-m", module]


def run(cmd):
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_ruff_check_is_clean():
    proc = run([*tool("ruff"), "check", "--no-cache", "src", "workflow", "tests", "benchmarks"])
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


def test_snakefmt_check_is_clean():
    proc = run([*tool("snakefmt"), "--check", "Snakefile", "workflow/"])
    assert proc.returncode == 0, "run `snakefmt Snakefile workflow/`:\n" + proc.stdout[-4000:] + proc.stderr[-4000:]


def rst_problems(text):
    """docutils' messages of warning level or worse for one reStructuredText text."""
    import io

    from docutils.core import publish_parts

    errors = io.StringIO()
    publish_parts(text, writer="html",
                  settings_overrides={"report_level": 2, "halt_level": 5, "warning_stream": errors})
    return errors.getvalue()


def test_rst_problems_are_found():
    """The check below can fail: the substitution error a caption once had."""
    assert "Undefined substitution" in rst_problems("a percentage of the clean |logit difference|")
    assert rst_problems("a percentage of the absolute clean logit difference") == ""


def test_report_captions_render_without_errors(tmp_path, monkeypatch):
    """Each caption as `snakemake --report` renders it: Jinja2 first (with the run's config
    and the job's outputs: a table caption shows its CSV file), then docutils."""
    import jinja2
    import yaml
    from snakemake.utils import validate

    monkeypatch.chdir(tmp_path)  # the run's directory: outputs are relative to it
    (tmp_path / "table.csv").write_text("model,value\nsmollm2,1.5\n")

    class Output:
        def __getattr__(self, name):
            return "table.csv"

    class Snakemake:
        config = yaml.safe_load((REPO / "config/config.yaml").read_text())
        output = Output()

    validate(Snakemake.config, str(REPO / "config/schema.yaml"))  # the schema's defaults, as the Snakefile

    captions = sorted((REPO / "workflow/report").glob("*.rst"))
    assert (REPO / "workflow/report/workflow.rst") in captions
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)  # as snakemake
    problems = {}
    for path in captions:
        text = env.from_string(path.read_text()).render(snakemake=Snakemake, categories={}, files=[])
        if found := rst_problems(text):
            problems[path.name] = found
    assert not problems, problems

