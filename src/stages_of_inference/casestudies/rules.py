"""Rule functions for the case studies (Figures 9 and 10): what the workflow scripts call.

Analysis rules load the model and write tidy parquet tables under ``results/{model}/``;
figure rules only read those tables. Every output is written atomically.
"""
from __future__ import annotations

import logging
from typing import Sequence

import pandas as pd

from ..core.io import write_parquet
from ..core.models import bridge_for_job, load_prepared_tokenizer

log = logging.getLogger("stages_of_inference")


def _documents(corpus_entry: dict) -> list[str]:
    from ..core.corpus import CorpusSpec, iter_documents

    return list(iter_documents(CorpusSpec.from_config(corpus_entry)))


# -- Figure 9 ---------------------------------------------------------------------------


def subjoiner(model: str, manifest: str, corpus: dict, params: dict, runtime: dict,
              out_prompts: str, out_scores: str, out_examples: str) -> None:
    from .subjoiner import SubjoinerSpec, analyse

    spec = SubjoinerSpec.from_config(params)
    log.info("%s: sub-joiner heads with %s", model, spec.to_dict())
    prompts, scores, examples = analyse(bridge_for_job(manifest, runtime), load_prepared_tokenizer(manifest), _documents(corpus),
                                        spec, model)
    write_parquet(prompts, out_prompts)
    write_parquet(scores, out_scores)
    write_parquet(examples, out_examples)


def figure9(models: Sequence[str], scores: Sequence[str], examples: Sequence[str], out_pdf: str) -> None:
    from .figures import plot_fig9

    plot_fig9(list(models), _concat(scores), _concat(examples), out_pdf)


# -- Figure 10 --------------------------------------------------------------------------


def ing_neurons(model: str, manifest: str, params: dict, runtime: dict, out_neurons: str, out_vocab: str,
                moments_path: str | None = None) -> None:
    """Weights only: ing separation of every neuron, the selected neurons, and the vocabulary
    cosines of the top prediction and suppression neuron. ``moments_path``: the ``neurons``
    rule's table (skew, kurtosis), so that they are not computed twice."""
    from ..core.neurons import folded_weights
    from .ing import NEURON_COLUMNS, VOCAB_COLUMNS, IngSpec, ing_mask, neuron_table, select_neurons, vocab_table

    spec = IngSpec.from_config(params)
    tokenizer = load_prepared_tokenizer(manifest)
    w_out, w_u = folded_weights(bridge_for_job(manifest, runtime))
    is_ing, is_real = ing_mask(tokenizer, w_u.shape[1])
    log.info("%s: %d of %d vocabulary tokens end in -ing", model, is_ing.sum(), is_real.sum())
    if not is_ing.any():
        log.warning("%s: no vocabulary token ends in -ing; Figure 10 will be empty for this model", model)
        write_parquet(pd.DataFrame(columns=NEURON_COLUMNS), out_neurons)
        write_parquet(pd.DataFrame(columns=VOCAB_COLUMNS), out_vocab)
        return
    moments = pd.read_parquet(moments_path) if moments_path else None
    table = select_neurons(neuron_table(w_out, w_u, is_ing, is_real, model, moments_table=moments),
                           spec.n_neurons, spec.require_type, model)
    for role in ("prediction", "suppression"):
        top = table[(table["role"] == role) & (table["role_rank"] == 1)]
        if len(top):
            r = top.iloc[0]
            log.info("%s: top %s neuron L%dN%d, ing separation %.2f (type %s)", model, role, r["layer"],
                     r["neuron"], r["ing_separation"], r["type"])
    write_parquet(table, out_neurons)
    write_parquet(vocab_table(w_out, w_u, table, tokenizer, is_ing, is_real, model), out_vocab)


def ing_activations(model: str, manifest: str, corpus: dict, params: dict, runtime: dict, neurons_path: str,
                    out_prompts: str, out_activations: str) -> None:
    """The ing prompt set, the model's own predictions on it, and the selected neurons'
    activations at the last position."""
    import numpy as np

    from .ing import ACTIVATION_COLUMNS, PREDICTION_COLUMNS, IngSpec, build_prompts, collect_activations, ing_mask
    from .words import display_token

    spec = IngSpec.from_config(params)
    tokenizer = load_prepared_tokenizer(manifest)
    prompts = build_prompts(_documents(corpus), tokenizer, spec, model)
    neurons = pd.read_parquet(neurons_path)
    selected = neurons[neurons["role"].notna()].sort_values("order")
    n_pos = int(prompts["label"].sum())
    if n_pos < spec.min_prompts or selected.empty:
        log.warning("%s: %d -ing prompts (casestudies.ing.min_prompts = %d) and %d selected neurons; "
                    "no probes for this model (a larger corpus gives more -ing words)", model, n_pos,
                    spec.min_prompts, len(selected))
        for col in PREDICTION_COLUMNS:
            prompts[col] = pd.Series(dtype=object)
        write_parquet(prompts, out_prompts)
        write_parquet(pd.DataFrame(columns=ACTIVATION_COLUMNS), out_activations)
        return
    bridge = bridge_for_job(manifest, runtime)
    is_ing, _ = ing_mask(tokenizer, bridge.cfg.d_vocab)
    pairs = [(int(r.layer), int(r.neuron)) for r in selected.itertuples()]
    acts, top1, p_ing = collect_activations(bridge, prompts["input_ids"].tolist(), pairs, is_ing, spec.batch_size)
    prompts["model_top1_id"] = top1
    prompts["model_top1"] = [display_token(tokenizer, t) for t in top1]
    prompts["model_says_ing"] = is_ing[top1]
    prompts["model_p_ing"] = p_ing
    prompts["model_top1_correct"] = top1 == prompts["next_token_id"].to_numpy()
    log.info("%s: model says -ing on %.1f%% of positives and %.1f%% of negatives", model,
             100 * prompts.loc[prompts["label"] == 1, "model_says_ing"].mean(),
             100 * prompts.loc[prompts["label"] == 0, "model_says_ing"].mean())
    long = pd.DataFrame(
        {
            "model": model,
            "prompt_id": np.repeat(prompts["prompt_id"].to_numpy(), len(pairs)),
            "layer": np.tile([p[0] for p in pairs], len(prompts)).astype(np.int32),
            "neuron": np.tile([p[1] for p in pairs], len(prompts)).astype(np.int32),
            "activation": acts.ravel(),
        }
    )
    write_parquet(prompts, out_prompts)
    write_parquet(long, out_activations)


def ing_probes(model: str, prompts_path: str, activations_path: str, neurons_path: str, params: dict,
               out: str) -> None:
    from .ing import PROBE_COLUMNS, IngSpec, fit_probes

    spec = IngSpec.from_config(params)
    prompts = pd.read_parquet(prompts_path)
    activations = pd.read_parquet(activations_path)
    try:
        if activations.empty:
            raise ValueError("no activations")
        probes = fit_probes(prompts, activations, pd.read_parquet(neurons_path), spec.seed, model)
    except ValueError as exc:
        log.warning("%s: no probes (%s)", model, exc)
        probes = pd.DataFrame(columns=PROBE_COLUMNS)
    else:
        single = probes[probes["probe"] == "single"]["test_accuracy"]
        ensemble = probes[probes["probe"] == "ensemble"]["test_accuracy"]
        own = probes.loc[probes["probe"] == "model_top1", "test_accuracy"].iloc[0]
        log.info("%s: held-out accuracy: single neurons %.3f-%.3f (best), full ensemble %.3f, model top-1 %.3f",
                 model, single.min(), single.max(), ensemble.iloc[-1], own)
    write_parquet(probes, out)


def figure10(models: Sequence[str], probes: Sequence[str], vocab: Sequence[str], out_pdf: str) -> None:
    from .figures import plot_fig10

    plot_fig10(list(models), _concat(probes), _concat(vocab), out_pdf)


def _concat(paths: Sequence[str]) -> pd.DataFrame:
    frames = [pd.read_parquet(p) for p in paths]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
