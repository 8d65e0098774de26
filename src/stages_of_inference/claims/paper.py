"""The paper's claims (Lad, Gurnee, Tegmark: v1 2024 and NeurIPS 2025), each tested per model
on the run's own tables, computed as the figures and tables compute them.

Intervals: a percentile bootstrap over documents (the corpus' sequences, ``seq``) wherever a
per-token table exists (``interventions_tokens``, ``layer_stats_tokens``): every statistic is
recomputed from per-document sums, so a resample weighs each document's tokens together.
Counts of neurons get a Clopper-Pearson interval, probe accuracies a binomial standard error,
sub-joiner scores the table's own standard error. Tables that hold no samples (``cka``, the
predictors' Spearman table) give a point verdict.

Not tested: the 2025 paper's stage 4 "residual calibration"; no table of the workflow measures
calibration.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .ledger import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    PAPER_2025,
    PAPER_V1,
    Finding,
    above,
    below,
    bootstrap_ci,
    claim,
    undecided,
    within,
)

# Thresholds and depth bands (the rules below name them).
BAND = (0.72, 0.95)  # retained top-1 accuracy (both versions of the paper)
EDGE = 0.10  # the first / last tenth of the layers (at least one layer each)
EARLY = 1 / 3  # "early": relative depth below one third
SUBJOINER_MIN = 0.2  # a sub-joiner head: attention on its word's earlier sub-tokens 0.2 above control
FAMILY_MIN_MODELS = 3  # trained models needed before a trend over depth can be read
FAMILY_RHO = 0.8  # Spearman rho between layer count and robustness for "more layers, more robust"
ALPHA = 0.05  # predictors' Spearman p value
Z95 = 1.959963984540054


# -- helpers -------------------------------------------------------------------------------


def interval(value: float, lo: float, hi: float) -> tuple[float, float]:
    """The interval, or the point where sampling gave none (a single document)."""
    return (value, value) if not (np.isfinite(lo) and np.isfinite(hi)) else (lo, hi)


def per_document(tokens: pd.DataFrame, column: str, weight: str | None = None, by_document: bool = False):
    """Per (document, layer) sums for a bootstrap over documents: ``(layers, S, N)`` with
    ``S``, ``N`` arrays ``[n_documents, n_layers]``; summed over any set of documents, ``S / N``
    is the per-layer statistic as the tables aggregate it.

    Pooled over tokens (``by_document=False``): ``S`` the sum of ``column`` (NaN skipped),
    ``N`` the count. The authors' aggregation (``by_document=True``): ``S`` the document's mean
    (weighted by ``weight`` if given), ``N`` 1 where it exists: ``S / N`` is the mean over
    documents of their means."""
    v = tokens[column].astype(float)
    w = tokens[weight].astype(float).where(v.notna(), 0.0) if weight else v.notna().astype(float)
    tmp = pd.DataFrame({"seq": tokens["seq"].to_numpy(), "layer": tokens["layer"].to_numpy(),
                        "wv": (v * w).fillna(0.0).to_numpy(), "w": w.to_numpy()})
    sums = tmp.groupby(["seq", "layer"], sort=True)[["wv", "w"]].sum()
    docs = np.sort(tmp["seq"].unique())
    layers = np.sort(tmp["layer"].unique())
    full = pd.MultiIndex.from_product([docs, layers], names=["seq", "layer"])
    sums = sums.reindex(full, fill_value=0.0)
    wv = sums["wv"].to_numpy().reshape(len(docs), len(layers))
    ws = sums["w"].to_numpy().reshape(len(docs), len(layers))
    if by_document:
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = wv / ws
        ok = ws > 0
        return layers, np.where(ok, mean, 0.0), ok.astype(float)
    return layers, wv, ws


def doc_bootstrap(arrays: dict[str, np.ndarray], statistic, n_boot: int = 1000, seed: int = 0):
    """:func:`~.ledger.bootstrap_ci` over documents: ``arrays[name]`` is ``[n_documents, ...]``;
    ``statistic(summed)`` gets each array summed over a resample of documents."""
    n = len(next(iter(arrays.values())))

    def stat(chosen):
        idx = np.asarray(chosen, dtype=int)
        return statistic({name: a[idx].sum(0) for name, a in arrays.items()})

    return bootstrap_ci(list(range(n)), stat, n_boot=n_boot, seed=seed)


def ratio(s: np.ndarray, n: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return s / n


def spearman(x, y) -> float:
    """Spearman rho of finite pairs (NaN when fewer than 3 or a constant side)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return math.nan
    return float(spearmanr(x[ok], y[ok]).statistic)


def edge_layers(n_layers: int) -> int:
    """How many layers the first (and the last) tenth holds: at least one."""
    return max(1, int(round(EDGE * n_layers)))


def n_layers_of(summary: pd.DataFrame) -> int:
    return int(summary["n_layers"].iloc[0]) if "n_layers" in summary else int(summary["layer"].max()) + 1


def fmt(x: float) -> str:
    return f"{x:.3g}"


# -- robustness: retained accuracy, edges, swaps, depth --------------------------------------


def _retained(tables, kind: str) -> Finding:
    from ..robustness.compute import interior, robustness

    statistic = f"top-1 accuracy retained by {kind}s, mean over the interior layers (table_robustness)"
    summary = tables["interventions.parquet"]
    summary = summary[summary["kind"].astype(str) == kind]
    if summary.empty:
        return undecided(statistic, f"no {kind} in interventions.parquet")
    table = robustness(summary)
    if table.empty:
        return undecided(statistic, "no interior layer (a model of fewer than 3-4 blocks)")
    value = float(table["retained_mean"].iloc[0])
    if not np.isfinite(value):
        return undecided(statistic, f"baseline accuracy {fmt(table['accuracy_base'].iloc[0])}: nothing to retain")
    keep = set(summary.loc[interior(summary), "layer"])
    tokens = tables["interventions_tokens.parquet"]
    tokens = tokens[(tokens["kind"].astype(str) == kind) & tokens["layer"].isin(keep)]
    _, c, n = per_document(tokens, "correct")
    _, cb, _ = per_document(tokens, "correct_base")
    _, lo, hi, se = doc_bootstrap({"c": c, "cb": cb}, lambda s: float(np.mean(ratio(s["c"], s["cb"]))))
    lo, hi = interval(value, lo, hi)
    span = f"{fmt(table['retained_min'].iloc[0])}-{fmt(table['retained_max'].iloc[0])}"
    detail = (f"{len(keep)} layers; per layer {span}; "
              f"base accuracy {fmt(table['accuracy_base'].iloc[0])}")
    return Finding(statistic, value, within(lo, hi, *BAND, closed_low=True, closed_high=True), lo, hi, se, detail)


@claim(id="retained_accuracy_drop",
       text="Deleting a single layer retains 72-95 % of the model's top-1 prediction accuracy, without fine-tuning.",
       source=PAPER_2025, study="robustness", tables=("interventions.parquet", "interventions_tokens.parquet"),
       rule=f"HOLDS when the 95 % bootstrap interval (over documents) of the mean accuracy retained by dropping an "
            f"interior layer (first and last excluded, as table_robustness) lies within {BAND[0]:.0%}-{BAND[1]:.0%}; "
            f"FAILS when it lies outside.")
def retained_accuracy_drop(tables):
    return _retained(tables, "drop")


@claim(id="retained_accuracy_swap",
       text="Swapping two adjacent layers retains 72-95 % of the model's top-1 prediction accuracy, without "
            "fine-tuning.",
       source=PAPER_2025, study="robustness", tables=("interventions.parquet", "interventions_tokens.parquet"),
       rule=f"HOLDS when the 95 % bootstrap interval (over documents) of the mean accuracy retained by swapping an "
            f"interior pair (neither block first or last, as table_robustness) lies within "
            f"{BAND[0]:.0%}-{BAND[1]:.0%}; FAILS when it lies outside.")
def retained_accuracy_swap(tables):
    return _retained(tables, "swap")


def _drop_kl(tables):
    tokens = tables["interventions_tokens.parquet"]
    tokens = tokens[tokens["kind"].astype(str) == "drop"]
    return per_document(tokens, "kl")


@claim(id="edges_degrade_most",
       text="Deleting early or final layers degrades the model most; the middle layers are robust.",
       source=PAPER_2025, study="robustness", tables=("interventions_tokens.parquet",),
       rule="Mean KL of dropping a layer in the first tenth, and in the last tenth (at least one layer each), each "
            "against the mean over the other (middle) layers; HOLDS when the 95 % bootstrap interval (over "
            "documents) of the smaller of the two excesses lies above 0, FAILS when below.")
def edges_degrade_most(tables):
    statistic = "min(mean KL first tenth, mean KL last tenth) - mean KL middle, drops (nats)"
    layers, s, n = _drop_kl(tables)
    if len(layers) == 0:
        return undecided(statistic, "no drop in interventions_tokens.parquet")
    total = int(layers.max()) + 1
    k = edge_layers(total)
    first, last = layers < k, layers >= total - k
    middle = ~(first | last)
    if not middle.any():
        return undecided(statistic, f"{total} layers: no middle layer beside {k} edge layer(s) each side")

    def stat(x):
        kl = ratio(x["s"], x["n"])
        return float(min(kl[first].mean(), kl[last].mean()) - kl[middle].mean())

    value, lo, hi, se = doc_bootstrap({"s": s, "n": n}, stat)
    kl = ratio(s.sum(0), n.sum(0))
    lo, hi = interval(value, lo, hi)
    detail = (f"first {k}: {fmt(kl[first].mean())}, last {k}: {fmt(kl[last].mean())}, "
              f"middle {int(middle.sum())}: {fmt(kl[middle].mean())} nats")
    return Finding(statistic, value, above(lo, hi, 0.0), lo, hi, se, detail)


@claim(id="swaps_gentler_than_drops",
       text="Swapping adjacent layers is gentler than deleting them: swaps give lower KL than drops.",
       source=PAPER_V1, study="robustness", tables=("interventions_tokens.parquet",),
       rule="Per layer L (0..N-2) the KL of swapping L and L+1 against that of dropping L, as Figure 3 sets them "
            "side by side; HOLDS when the 95 % bootstrap interval (over documents) of the fraction of layers "
            "where the swap's KL is lower lies above 0.5, FAILS when below.")
def swaps_gentler_than_drops(tables):
    statistic = "fraction of layers whose swap KL < drop KL"
    tokens = tables["interventions_tokens.parquet"]
    kinds = tokens["kind"].astype(str)
    if not {"drop", "swap"} <= set(kinds.unique()):
        return undecided(statistic, "the table lacks drops or swaps")
    ls, ss, ns = per_document(tokens[kinds == "swap"], "kl")
    ld, sd, nd = per_document(tokens[kinds == "drop"], "kl")
    common = np.intersect1d(ls, ld)
    ps, pd_ = np.searchsorted(ls, common), np.searchsorted(ld, common)
    arrays = {"ss": ss[:, ps], "ns": ns[:, ps], "sd": sd[:, pd_], "nd": nd[:, pd_]}

    def stat(x):
        return float(np.mean(ratio(x["ss"], x["ns"]) < ratio(x["sd"], x["nd"])))

    value, lo, hi, se = doc_bootstrap(arrays, stat)
    lo, hi = interval(value, lo, hi)
    swap, drop = ratio(ss.sum(0), ns.sum(0)), ratio(sd.sum(0), nd.sum(0))
    worse = [int(layer) for layer, a, b in zip(common, swap[ps], drop[pd_]) if not a < b]
    detail = f"{len(common)} layers; swap not gentler at {worse}; median KL swap {fmt(np.median(swap))}, " \
             f"drop {fmt(np.median(drop))}"
    return Finding(statistic, value, above(lo, hi, 0.5), lo, hi, se, detail)


def is_control(info: pd.DataFrame) -> bool:
    """A random-weight control, by its Table 2 row (model_info.json: family "... (random weights)")."""
    return "random weights" in str(info["family"].iloc[0]) if "family" in info else False


@claim(id="more_layers_more_robust",
       text="Models with more layers exhibit more robustness (to deleting and swapping layers).",
       source=PAPER_V1, study="robustness", tables=("interventions.parquet", "model_info.json"), scope="family",
       rule=f"Spearman rho between layer count and the accuracy retained by interior drops (table_robustness) over "
            f"the trained models (random-weight controls excluded, by model_info.json); HOLDS when rho >= "
            f"{FAMILY_RHO} over at least {FAMILY_MIN_MODELS} models of different depths, FAILS when rho <= 0 over "
            f"as many; with fewer trained models (the default run has two) INCONCLUSIVE. Dropped from the 2025 "
            f"version.")
def more_layers_more_robust(tables_by_model):
    from ..robustness.compute import robustness

    statistic = "Spearman rho(layers, drop accuracy retained) over the trained models"
    points = []
    for model, tables in tables_by_model.items():
        if is_control(tables["model_info.json"]):
            continue
        summary = tables["interventions.parquet"]
        table = robustness(summary[summary["kind"].astype(str) == "drop"])
        if len(table):
            points.append((model, n_layers_of(summary), float(table["retained_mean"].iloc[0])))
    detail = "; ".join(f"{m}: {n} layers, {fmt(r)}" for m, n, r in points) or "no trained model"
    if len(points) < 2:
        return undecided(statistic, detail)
    depths = [p[1] for p in points]
    rho = spearman(depths, [p[2] for p in points]) if len(points) >= 3 else \
        float(np.sign((points[1][1] - points[0][1]) * (points[1][2] - points[0][2])))
    enough = len(points) >= FAMILY_MIN_MODELS and len(set(depths)) >= 2
    if not enough or not np.isfinite(rho):
        verdict = INCONCLUSIVE
        detail += f" (fewer than {FAMILY_MIN_MODELS} trained models of different depths)"
    else:
        verdict = HOLDS if rho >= FAMILY_RHO else FAILS if rho <= 0 else INCONCLUSIVE
    return Finding(statistic, rho, verdict, detail=detail)


# -- depth: Figures 4-8 ----------------------------------------------------------------------


def _rel(layers: np.ndarray, n_layers: int) -> np.ndarray:
    return layers / max(n_layers - 1, 1)


@claim(id="prev5_attention_early",
       text="Attention to the previous five tokens is highest in the early layers (local context: detokenization).",
       source=PAPER_V1, study="depth", tables=("layer_stats.parquet", "layer_stats_tokens.parquet"),
       rule="Mean attention to the previous five tokens (Figure 4's first panel: the authors' per-document "
            "convention) over the layers of relative depth below 1/3 minus its mean over the other layers; HOLDS "
            "when the 95 % bootstrap interval (over documents) lies above 0, FAILS when below.")
def prev5_attention_early(tables):
    tokens = tables["layer_stats_tokens.parquet"]
    if "prev5_attn_authors" in tokens:
        column, weight, by_doc = "prev5_attn_authors", "prev5_keys", True
    else:  # an older run: the pooled definition only
        column, weight, by_doc = "prev5_attn", None, False
    statistic = f"mean {column} early (rel. depth < 1/3) - later"
    tokens = tokens[tokens["layer"] >= 0]
    if tokens.empty:
        return undecided(statistic, "no layer in layer_stats_tokens.parquet")
    layers, s, n = per_document(tokens, column, weight, by_doc)
    early = _rel(layers, n_layers_of(tables["layer_stats.parquet"])) < EARLY
    if early.all() or not early.any():
        return undecided(statistic, "no early or no later layer")

    def stat(x):
        v = ratio(x["s"], x["n"])
        return float(np.nanmean(v[early]) - np.nanmean(v[~early]))

    value, lo, hi, se = doc_bootstrap({"s": s, "n": n}, stat)
    lo, hi = interval(value, lo, hi)
    v = ratio(s.sum(0), n.sum(0))
    detail = f"early {fmt(np.nanmean(v[early]))}, later {fmt(np.nanmean(v[~early]))}; " \
             f"highest at layer {int(layers[np.nanargmax(v)])} of {len(layers)}"
    if not by_doc:
        detail += " (pooled prev5_attn: the table has no prev5_attn_authors)"
    return Finding(statistic, value, above(lo, hi, 0.0), lo, hi, se, detail)


def _trend(tables, column: str, statistic: str, by_doc: bool = False, points=None) -> Finding:
    """Spearman rho of a per-layer statistic against depth, bootstrapped over documents;
    HOLDS when it falls (interval below 0). ``points(layers, n_layers)``: the layers to use."""
    tokens = tables["layer_stats_tokens.parquet"]
    if column not in tokens:
        return undecided(statistic, f"layer_stats_tokens.parquet has no column {column} (an older run)")
    layers, s, n = per_document(tokens, column, by_document=by_doc)
    keep = points(layers, n_layers_of(tables["layer_stats.parquet"])) if points else np.ones(len(layers), bool)
    if keep.sum() < 3:
        return undecided(statistic, f"{int(keep.sum())} layers to correlate (3 needed)")
    x = layers[keep]
    value, lo, hi, se = doc_bootstrap({"s": s[:, keep], "n": n[:, keep]}, lambda d: spearman(x, ratio(d["s"], d["n"])))
    if not np.isfinite(value):
        return undecided(statistic, "constant over layers")
    lo, hi = interval(value, lo, hi)
    v = ratio(s[:, keep].sum(0), n[:, keep].sum(0))
    detail = f"layers {int(x[0])}..{int(x[-1])}: {fmt(v[0])} -> {fmt(v[len(v) // 2])} -> {fmt(v[-1])}"
    return Finding(statistic, value, below(lo, hi, 0.0), lo, hi, se, detail)


FALL_RULE = "HOLDS when the 95 % bootstrap interval (over documents) of Spearman's rho lies below 0, FAILS above."


@claim(id="attn_mlp_ratio_falls",
       text="Attention's output norm relative to the MLP's is high in the early layers and falls with depth.",
       source=PAPER_V1, study="depth", tables=("layer_stats.parquet", "layer_stats_tokens.parquet"),
       rule="Spearman rho between layer and the attention/MLP output-norm ratio (ratio of mean norms, Figure 5) "
            "over every block; " + FALL_RULE)
def attn_mlp_ratio_falls(tables):
    statistic = "Spearman rho(layer, mean ||attn_out|| / mean ||mlp_out||)"
    tokens = tables["layer_stats_tokens.parquet"]
    tokens = tokens[tokens["layer"] >= 0]
    if tokens.empty:
        return undecided(statistic, "no layer in layer_stats_tokens.parquet")
    layers, sa, na = per_document(tokens, "attn_norm")
    _, sm, nm = per_document(tokens, "mlp_norm")
    if len(layers) < 3:
        return undecided(statistic, f"{len(layers)} layers to correlate (3 needed)")

    def stat(x):
        return spearman(layers, ratio(x["sa"], x["na"]) / ratio(x["sm"], x["nm"]))

    value, lo, hi, se = doc_bootstrap({"sa": sa, "na": na, "sm": sm, "nm": nm}, stat)
    lo, hi = interval(value, lo, hi)
    r = ratio(sa.sum(0), na.sum(0)) / ratio(sm.sum(0), nm.sum(0))
    k = max(1, len(r) // 3)
    detail = f"ratio first third {fmt(r[:k].mean())}, last third {fmt(r[-k:].mean())}"
    return Finding(statistic, value, below(lo, hi, 0.0), lo, hi, se, detail)


@claim(id="lens_kl_falls_second_half",
       text="In the second half of the model the logit-lens prediction approaches the final one: the KL to the "
            "final output falls with depth.",
       source=PAPER_V1, study="depth", tables=("layer_stats.parquet", "layer_stats_tokens.parquet"),
       rule="Spearman rho between layer and the logit lens' KL(P_final || P_layer) (each point's own norm, Figures "
            "6 and 8) over the blocks of relative depth >= 0.5 except the last (its KL is 0 by definition); "
            + FALL_RULE)
def lens_kl_falls_second_half(tables):
    def second_half(layers, n):
        return (_rel(layers, n) >= 0.5) & (layers < n - 1)

    return _trend(tables, "lens_kl", "Spearman rho(layer, logit-lens KL to the final output), second half",
                  points=second_half)


def _blocks_and_embedding(layers, n):
    return layers >= -1


@claim(id="lens_entropy_falls",
       text="The entropy of the next-token distribution (logit lens) falls with depth, as the model grows confident "
            "(residual sharpening); with the logit lens of each point's own norm.",
       source=PAPER_V1, study="depth", tables=("layer_stats.parquet", "layer_stats_tokens.parquet"),
       rule="Spearman rho between point (the embedding and every block) and the logit-lens entropy with each "
            "point's own final norm (lens_entropy, tokens pooled: Figure 8's first panel); " + FALL_RULE)
def lens_entropy_falls(tables):
    return _trend(tables, "lens_entropy", "Spearman rho(point, lens entropy), own-norm lens",
                  points=_blocks_and_embedding)


@claim(id="lens_entropy_falls_authors",
       text="The entropy of the next-token distribution (logit lens) falls with depth, as the model grows confident "
            "(residual sharpening); with the authors' lens (every point scaled by the final layer's norm).",
       source=PAPER_V1, study="depth", tables=("layer_stats.parquet", "layer_stats_tokens.parquet"),
       rule="Spearman rho between point (the embedding and every block) and the logit-lens entropy of the "
            "authors' notebook (lens_entropy_authors: the final layer's norm scale, per document then over "
            "documents: Figure 8's second panel); " + FALL_RULE)
def lens_entropy_falls_authors(tables):
    return _trend(tables, "lens_entropy_authors", "Spearman rho(point, lens entropy), authors' lens", by_doc=True,
                  points=_blocks_and_embedding)


@claim(id="suppression_outnumber_prediction",
       text="In the last layers suppression neurons outnumber prediction neurons (residual sharpening).",
       source=PAPER_V1, study="depth", tables=("neurons.parquet",),
       rule="Among the prediction and suppression neurons of the last tenth of the layers (at least the last), the "
            "fraction that are suppression neurons; HOLDS when its 95 % Clopper-Pearson interval (neurons as "
            "draws) lies above 0.5, FAILS when below.")
def suppression_outnumber_prediction(tables):
    from scipy.stats import binomtest

    statistic = "suppression / (prediction + suppression) neurons, last tenth of the layers"
    neurons = tables["neurons.parquet"]
    if neurons.empty:
        return undecided(statistic, "no neuron in neurons.parquet")
    total = int(neurons["layer"].max()) + 1
    k = edge_layers(total)
    last = neurons[neurons["layer"] >= total - k]
    n_supp = int((last["type"] == "suppression").sum())
    n_pred = int((last["type"] == "prediction").sum())
    detail = f"layers {total - k}..{total - 1}: {n_supp} suppression, {n_pred} prediction"
    if n_supp + n_pred == 0:
        return undecided(statistic, detail)
    ci = binomtest(n_supp, n_supp + n_pred).proportion_ci(0.95, method="exact")
    value = n_supp / (n_supp + n_pred)
    return Finding(statistic, value, above(ci.low, ci.high, 0.5), float(ci.low), float(ci.high), detail=detail)


# -- case studies: Figures 9 and 10 ----------------------------------------------------------


@claim(id="subjoiner_head_early",
       text="A sub-joiner attention head exists in the early layers: from the last token of a multi-token word it "
            "attends to the word's earlier sub-tokens.",
       source=PAPER_V1, study="casestudies", tables=("subjoiner_scores.parquet",),
       rule=f"The best sub-joiner score (word attention minus single-token control, Figure 9) among the heads of "
            f"relative depth below 1/3; HOLDS when score - 1.96 SE > {SUBJOINER_MIN}, FAILS when score + 1.96 SE "
            f"< {SUBJOINER_MIN}.")
def subjoiner_head_early(tables):
    statistic = "best sub-joiner score among early heads (rel. depth < 1/3)"
    scores = tables["subjoiner_scores.parquet"]
    early = scores[scores["rel_depth"] < EARLY].dropna(subset=["score"])
    if early.empty:
        return undecided(statistic, "no early head scored")
    best = early.sort_values("score", ascending=False).iloc[0]
    value, se = float(best["score"]), float(best["score_se"])
    lo, hi = value - Z95 * se, value + Z95 * se
    top = scores.sort_values("score", ascending=False).iloc[0]
    detail = (f"L{int(best['layer'])}H{int(best['head'])} (rank {int(best['rank'])}); "
              f"top head overall L{int(top['layer'])}H{int(top['head'])} at rel. depth {fmt(top['rel_depth'])}")
    return Finding(statistic, value, above(lo, hi, SUBJOINER_MIN), lo, hi, se, detail)


@claim(id="ing_ensembles_beat_single_neurons",
       text="Probes on ensembles of prediction and suppression neurons predict the suffix \"-ing\" better than "
            "probes on single neurons (prediction ensembling).",
       source=PAPER_V1, study="casestudies", tables=("ing_probes.parquet",),
       rule="Held-out accuracy of the probe on the full ensemble minus that of the best single-neuron probe "
            "(Figure 10a; the best single neuron picked on the test split, which favours it); HOLDS when the "
            "difference minus 1.96 binomial SE (the two accuracies as independent) lies above 0, FAILS when "
            "plus 1.96 SE lies below.")
def ing_ensembles_beat_single_neurons(tables):
    statistic = "test accuracy: full ensemble - best single neuron"
    probes = tables["ing_probes.parquet"]
    single = probes[probes["probe"] == "single"]
    ensemble = probes[probes["probe"] == "ensemble"]
    if single.empty or ensemble.empty:
        return undecided(statistic, "no probes (too few -ing prompts)")
    best = single.sort_values("test_accuracy", ascending=False).iloc[0]
    full = ensemble.sort_values("n_neurons").iloc[-1]
    a, b = float(full["test_accuracy"]), float(best["test_accuracy"])
    se = math.sqrt(a * (1 - a) / full["n_test"] + b * (1 - b) / best["n_test"])
    value = a - b
    lo, hi = value - Z95 * se, value + Z95 * se
    own = probes.loc[probes["probe"] == "model_top1", "test_accuracy"]
    detail = (f"ensemble of {int(full['n_neurons'])}: {fmt(a)}; best single (L{int(best['layer'])} "
              f"N{int(best['neuron'])}): {fmt(b)}; n_test {int(full['n_test'])}"
              + (f"; model top-1 {fmt(float(own.iloc[0]))}" if len(own) else ""))
    return Finding(statistic, value, above(lo, hi, 0.0), lo, hi, se, detail)


# -- edits (2025) ----------------------------------------------------------------------------


@claim(id="cka_middle_block",
       text="Representations form blocks: adjacent layers are most similar (CKA) in the middle of the model.",
       source=PAPER_2025, study="edits", tables=("cka.parquet",),
       rule="Mean linear CKA between adjacent layers (l, l+1) of the middle minus that of pairs touching the first "
            "or last tenth of the layers; HOLDS when above 0, FAILS otherwise (a point verdict: cka.parquet holds "
            "only the document-averaged CKA).")
def cka_middle_block(tables):
    statistic = "mean adjacent-layer CKA, middle - edges"
    cka = tables["cka.parquet"]
    adjacent = cka[cka["layer_b"] == cka["layer_a"] + 1].sort_values("layer_a")
    if adjacent.empty:
        return undecided(statistic, "no adjacent pair in cka.parquet")
    total = n_layers_of(cka.rename(columns={"layer_a": "layer"}))
    k = edge_layers(total)
    a = adjacent["layer_a"].to_numpy()
    edge = (a < k) | (a + 1 >= total - k)
    if edge.all():
        return undecided(statistic, f"{total} layers: every adjacent pair touches an edge tenth")
    mid_mean, edge_mean = adjacent["cka"][~edge].mean(), adjacent["cka"][edge].mean()
    value = float(mid_mean - edge_mean)
    detail = f"middle {int((~edge).sum())} pairs: {fmt(mid_mean)}, edge {int(edge.sum())} pairs: {fmt(edge_mean)}"
    return Finding(statistic, value, HOLDS if value > 0 else FAILS, detail=detail)


@claim(id="predictors_pick_harmless_drops",
       text="Cheap similarity predictors (block influence, angular distance) from the unmodified model's residual "
            "stream identify which layers can be dropped with little harm.",
       source=PAPER_2025, study="edits", tables=("drop_predictors_spearman.parquet",),
       rule=f"Spearman rho between each predictor and the measured KL of dropping each window (every predictor and "
            f"width); value: the median rho; HOLDS when every rho > 0 and the median p value < {ALPHA}, FAILS when "
            f"the median rho <= 0, else INCONCLUSIVE (a point verdict: the windows are the samples).")
def predictors_pick_harmless_drops(tables):
    statistic = "median Spearman rho(predictor, drop KL) over predictors and widths"
    table = tables["drop_predictors_spearman.parquet"]
    table = table[(table["measure"] == "kl") & table["rho"].notna()]
    if table.empty:
        return undecided(statistic, "no Spearman rho (too few windows)")
    value = float(table["rho"].median())
    p = float(table["p_value"].median())
    ranks = table.groupby("width")["picked_rank"].median()
    if value <= 0:
        verdict = FAILS
    elif (table["rho"] > 0).all() and p < ALPHA:
        verdict = HOLDS
    else:
        verdict = INCONCLUSIVE
    detail = (f"{len(table)} rho in {fmt(table['rho'].min())}..{fmt(table['rho'].max())}, median p {fmt(p)}; "
              f"median KL rank of the picked window by width: "
              + ", ".join(f"{int(w)}: {fmt(r)}" for w, r in ranks.items()))
    return Finding(statistic, value, verdict, detail=detail)
