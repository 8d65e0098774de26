# Stages of inference as a workflow: every paper figure is a target.
#   snakemake --cores 2 all            # everything, on the embedded default
#   snakemake --cores 8 --resources gpu=1 figures/fig3.pdf
#   snakemake all --cores 2 --configfile config/test.yaml   # only the tiny test models
import copy
import os
import sys

import yaml
from snakemake.logging import logger
from snakemake.utils import min_version, validate

min_version("9.0")

# The library lives in src/; jobs (local or on a cluster) find it through PYTHONPATH
# even when the package was not pip-installed.
SRC = os.path.join(workflow.basedir, "src")
sys.path.insert(0, SRC)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)


envvars:
    "PYTHONPATH",


from stages_of_inference.core import checks  # noqa: E402
from stages_of_inference.core.checks import config_check  # noqa: E402


configfile: "config/config.yaml"


# `snakemake --report report.html`: this page first, then every figure and table
report: "workflow/report/workflow.rst"


# Config files: an overlay without `models:` (config/cluster.yaml) extends
# config/config.yaml key by key; a file with `models:` (config/test.yaml, paper.yaml) is
# a whole configuration and replaces it, as --replace-workflow-config would.
if checks.replaces_default_config(workflow.overwrite_configfiles):
    config.clear()
    config.update(copy.deepcopy(workflow.config_settings.overwrite_config))
    if workflow.configfiles:
        logger.info("config/config.yaml is replaced, not extended: a --configfile lists models.")

# Mistakes end the run here, in one line naming the key and the file that sets it.
SCHEMA = os.path.join(workflow.basedir, "config/schema.yaml")
with open(SCHEMA) as _schema:
    _SCHEMA = yaml.safe_load(_schema)
_SOURCES = checks.config_sources(workflow)
config_check(checks.check_keys, config, _SCHEMA, _SOURCES)
config_check(checks.check_schema, config, _SCHEMA, _SOURCES)


validate(config, SCHEMA)  # fills in the schema's defaults
config_check(checks.check_corpus_source, config["corpus"])  # more checks in common.smk


include: "workflow/rules/common.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/data.smk"
# one rules file per study (src/stages_of_inference/<study>/)
include: "workflow/rules/robustness.smk"
include: "workflow/rules/depth.smk"
include: "workflow/rules/casestudies.smk"
include: "workflow/rules/self_repair.smk"
include: "workflow/rules/seqcont.smk"
include: "workflow/rules/concepts.smk"
include: "workflow/rules/edits.smk"
include: "workflow/rules/claims.smk"


rule all:
    default_target: True
    input:
        ALL_TARGETS,
