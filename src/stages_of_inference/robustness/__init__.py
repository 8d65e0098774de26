"""The robustness study (Figure 3, ``table_robustness``): drop and swap every layer.
``compute`` (the sweep, the table), ``figures`` (Figure 3), ``rules`` (what
``workflow/rules/robustness.smk`` calls)."""
