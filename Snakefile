# Stages of inference as a workflow: every paper figure is a target.
#   snakemake --cores 2 all            # everything, on the embedded default
#   snakemake --cores 8 --resources gpu=1 figures/fig3.pdf
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "config/schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/data.smk"
# one rules file per study (src/stages_of_inference/<study>/)
include: "workflow/rules/robustness.smk"
include: "workflow/rules/depth.smk"
include: "workflow/rules/casestudies.smk"
include: "workflow/rules/concepts.smk"


rule all:
    input:
        ALL_TARGETS,
    default_target: True
