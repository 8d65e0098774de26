"""Rule functions for the case studies (Figures 9 and 10): what the workflow scripts call.

Each maps files to calls: read the inputs, call the compute modules (``subjoiner``,
``ing``, ``figures``), write the outputs. Analysis rules run the model through the core
engine and write tidy parquet tables under ``results/{model}/``; figure rules only read
those tables. Every output is written atomically.
"""
from __future__ import annotations

import logging
from typing import Sequence

from ..core.io import read_tables, write_parquet

log = logging.getLogger("stages_of_inference")


# -- Figure 9 ---------------------------------------------------------------------------


def subjoiner(model: str, manifest: str, corpus: dict, settings: dict, runtime: dict,
              out_prompts: str, out_scores: str, out_examples: str) -> None:
    """Sub-joiner prompts, every head's score and the top head's example rows."""
    from ..core.engine import engine_for_job
    from ..core.models import load_prepared_tokenizer
    from .subjoiner import SubjoinerSettings, analyse
    from .words import corpus_documents

    engine = engine_for_job(manifest, runtime, "eager")  # attention patterns are hooked
    prompts, scores, examples = analyse(engine, load_prepared_tokenizer(manifest), corpus_documents(corpus),
                                        SubjoinerSettings.from_config(settings), model)
    write_parquet(prompts, out_prompts)
    write_parquet(scores, out_scores)
    write_parquet(examples, out_examples)


def plot_fig9(models: Sequence[str], scores: Sequence[str], examples: Sequence[str], styles: dict,
              out_pdf: str) -> None:
    from .figures import plot_fig9 as draw

    draw(list(models), read_tables(scores), read_tables(examples), out_pdf, styles=styles)


# -- Figure 10 --------------------------------------------------------------------------


def ing_neurons(model: str, manifest: str, neurons: str, settings: dict, runtime: dict, out_ing_neurons: str,
                out_vocab: str) -> None:
    """Weights only: ing separation of every neuron, the selected neurons, and the vocabulary
    cosines of the top prediction and suppression neuron. ``neurons``: the ``neurons``
    rule's table (skew, kurtosis), so that they are not computed twice."""
    import pandas as pd

    from ..core.engine import engine_for_job
    from ..core.models import load_prepared_tokenizer
    from .ing import IngSettings, neuron_tables

    table, vocab = neuron_tables(engine_for_job(manifest, runtime), load_prepared_tokenizer(manifest),
                                 pd.read_parquet(neurons), IngSettings.from_config(settings), model)
    write_parquet(table, out_ing_neurons)
    write_parquet(vocab, out_vocab)


def ing_activations(model: str, manifest: str, ing_neurons: str, corpus: dict, settings: dict, runtime: dict,
                    out_prompts: str, out_activations: str) -> None:
    """The ing prompt set, the model's own predictions on it, and the selected neurons'
    activations at the last position."""
    import pandas as pd

    from ..core.engine import engine_for_job
    from ..core.models import load_prepared_tokenizer
    from .ing import IngSettings, prompt_activations
    from .words import corpus_documents

    prompts, activations = prompt_activations(engine_for_job(manifest, runtime), load_prepared_tokenizer(manifest),
                                              corpus_documents(corpus), pd.read_parquet(ing_neurons),
                                              IngSettings.from_config(settings), model)
    write_parquet(prompts, out_prompts)
    write_parquet(activations, out_activations)


def ing_probes(model: str, prompts: str, activations: str, ing_neurons: str, settings: dict, out: str) -> None:
    """Single-neuron and ensemble probes and the model's own accuracy (tables only)."""
    import pandas as pd

    from .ing import IngSettings, probe_table

    probes = probe_table(pd.read_parquet(prompts), pd.read_parquet(activations), pd.read_parquet(ing_neurons),
                         IngSettings.from_config(settings).seed, model)
    write_parquet(probes, out)


def plot_fig10(models: Sequence[str], probes: Sequence[str], vocab: Sequence[str], styles: dict, out_pdf: str) -> None:
    from .figures import plot_fig10 as draw

    draw(list(models), read_tables(probes), read_tables(vocab), out_pdf, styles=styles)
