"""The case studies (Figures 9 and 10). Compute: ``subjoiner`` (sub-joiner heads),
``ing`` (the "-ing" neurons and probes), ``words`` (word splitting both share);
``figures`` (Figures 9 and 10); ``rules`` (what ``workflow/rules/casestudies.smk`` calls)."""
