"""The seed studies' claims, tested per model on the run's own tables (:mod:`.ledger`).

* Self-repair (Rushing & Nanda, "Explorations of Self-Repair in Language Models"; the study's
  abstract, /work/shared/seeds/self-repair-README.txt): self-repair is *imperfect*, *noisy*,
  the final LayerNorm "can repair up to 30 % of the direct effect", and *sparse* sets of
  neurons implement anti-erasure. Read from ``self_repair.parquet`` (one row per head: means
  over the head's top tokens by direct effect, :func:`..self_repair.compute.summarise_heads`)
  and ``self_repair_neurons.parquet`` (each head's top anti-erasure neurons). Every
  self-repair claim looks at the same heads, the *top heads*: the :data:`TOP_HEAD_FRACTION`
  of heads with the largest mean direct effect (at least :data:`MIN_TOP_HEADS`, DE > 0), where
  the ratios to DE are not dominated by noise; intervals are percentile bootstraps over those
  heads.
* Sequence continuation (Lan, Torr & Barez; apartresearch/seqcont_circuits): every task has
  a circuit at the pruning threshold, and the tasks' circuits share components (more than
  random circuits of the same sizes would). Read from ``seqcont_circuit_summary.parquet`` and
  ``seqcont_circuits.parquet``, the lowest removal order (the circuit the overlap table and
  the figure's dots show).
* Concept features (the seed README's tl;dr, /work/shared/seeds/sae-rsa-concept-features-
  README.txt): RSA > max activation, SAE > raw activations, discriminative >= categorical.
  Read from ``concept_findings.parquet`` (:func:`..concepts.compute.findings`): the pooled
  row (concepts averaged per split) of scope ``all``, its mean paired difference of held-out
  accuracy and its corrected resampled-t 95 % interval over the seeded splits; nothing is
  recomputed from activations.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from .ledger import (
    CONCEPTS,
    FAILS,
    HOLDS,
    SELF_REPAIR,
    SEQCONT,
    Finding,
    above,
    bootstrap_ci,
    claim,
    undecided,
    within,
)

# -- self-repair ---------------------------------------------------------------------------
TOP_HEAD_FRACTION = 0.1   # the top heads: this share of all heads, by mean direct effect ...
MIN_TOP_HEADS = 8         # ... but at least this many (the self-repair figure's figure_heads default)
NOISE_SPREAD = 0.5        # interdecile range of the per-token SR/DE above which repair is "noisy"
NORM_SHARE_MIN = 0.05     # the final norm's share of DE: a real part of the repair ...
NORM_SHARE_MAX = 0.5      # ... but not the bulk of it ("up to 30 %")
SPARSE_SHARE = 0.25       # share of a head's MLP repair its top-k anti-erasure neurons must carry
N_BOOT = 1000
SEED = 0

# -- sequence continuation -----------------------------------------------------------------
SEQCONT_THRESHOLD = 0.8      # the pruning threshold (config seqcont.threshold's default; the table does not record it)
CIRCUIT_MAX_FRACTION = 0.5   # a circuit keeps at most this share of the model's components
N_PERMUTATIONS = 2000

# -- concept features ----------------------------------------------------------------------
NONINFERIORITY_MARGIN = 0.02  # "discriminative >= categorical": held-out accuracy may fall short by at most this


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else math.nan


def _head_label(layer, head) -> str:
    return f"L{int(layer)}H{int(head)}"


def top_heads(heads: pd.DataFrame) -> pd.DataFrame:
    """The self-repair claims' heads: the ``TOP_HEAD_FRACTION`` of heads with the largest mean
    direct effect ``de`` (at least ``MIN_TOP_HEADS``; all heads if there are fewer), those
    with DE > 0, largest first."""
    k = max(MIN_TOP_HEADS, int(TOP_HEAD_FRACTION * len(heads)))
    top = heads.nlargest(k, "de")
    return top[top["de"] > 0]


def _median_ci(values: np.ndarray):
    """Median with a percentile bootstrap over the values (heads)."""
    values = np.asarray(values, dtype=float)
    return bootstrap_ci(list(values), lambda g: float(np.median(g)), n_boot=N_BOOT, seed=SEED)


# -- self-repair claims ------------------------------------------------------------------------


@claim(id="self_repair_imperfect",
       text="On the full training distribution self-repair is imperfect: the original direct effect of "
            "the head is not fully restored.",
       source=SELF_REPAIR, study="self_repair", tables=("self_repair.parquet",),
       rule=f"Holds if the 95 % bootstrap interval (over the top {TOP_HEAD_FRACTION:.0%} heads by direct "
            f"effect, at least {MIN_TOP_HEADS}) of the median repaired fraction SR/DE lies strictly between "
            f"0 (no repair) and 1 (full repair), fails if it lies wholly at or beyond either end.")
def self_repair_imperfect(tables) -> Finding:
    stat = "median over the top heads of SR/DE (means over each head's top tokens)"
    top = top_heads(tables["self_repair.parquet"])
    frac = top["self_repair"] / top["de"]
    if len(top) == 0:
        return undecided(stat, "no head with a positive direct effect")
    value, lo, hi, se = _median_ci(frac.to_numpy())
    te_de = 1 - value
    detail = (f"{len(top)} heads; median SR/DE {value:.2f} (TE/DE {te_de:.2f}); "
              f"SR/DE >= 1 (full repair or more) in {int((frac >= 1).sum())}, <= 0 (none) in {int((frac <= 0).sum())}")
    return Finding(stat, value, within(lo, hi, 0.0, 1.0), lo=lo, hi=hi, se=se, detail=detail)


@claim(id="self_repair_noisy",
       text="Self-repair is noisy: the degree of self-repair varies significantly across prompts "
            "(sometimes overcorrecting beyond the original effect).",
       source=SELF_REPAIR, study="self_repair", tables=("self_repair.parquet",),
       rule=f"Holds if the 95 % bootstrap interval (over the top heads) of the median interdecile range "
            f"(90th minus 10th percentile over the head's top tokens) of the per-token SR/DE lies above "
            f"{NOISE_SPREAD}, fails if it lies below.")
def self_repair_noisy(tables) -> Finding:
    stat = "median over the top heads of the per-token SR/DE's interdecile range (q90 - q10)"
    top = top_heads(tables["self_repair.parquet"])
    if len(top) == 0:
        return undecided(stat, "no head with a positive direct effect")
    spread = (top["ratio_q90"] - top["ratio_q10"]).to_numpy(dtype=float)
    spread = spread[np.isfinite(spread)]
    if len(spread) == 0:
        return undecided(stat, "no finite per-token ratio")
    value, lo, hi, se = _median_ci(spread)
    weights = top["n_top"].to_numpy(dtype=float)
    over = float(np.average(top["frac_overcorrect"], weights=weights))
    neg = float(np.average(top["frac_negative"], weights=weights))
    detail = (f"{len(spread)} heads; of their top tokens {over:.0%} over-correct (SR > DE), "
              f"{neg:.0%} anti-repair (SR < 0)")
    return Finding(stat, value, above(lo, hi, NOISE_SPREAD), lo=lo, hi=hi, se=se, detail=detail)


@claim(id="self_repair_final_norm_share",
       text="Changes in the final LayerNorm scaling factor can repair up to 30% of the direct effect.",
       source=SELF_REPAIR, study="self_repair", tables=("self_repair.parquet",),
       rule=f"Holds if the 95 % bootstrap interval (over the top heads) of the median share of the direct "
            f"effect the final norm repairs (the study's clipped per-token percent_LN_of_DE, norm_pct_de) "
            f"lies within ({NORM_SHARE_MIN}, {NORM_SHARE_MAX}], fails if it lies wholly outside.")
def self_repair_final_norm_share(tables) -> Finding:
    stat = "median over the top heads of the final norm's clipped share of DE (norm_pct_de)"
    top = top_heads(tables["self_repair.parquet"])
    share = top["norm_pct_de"].to_numpy(dtype=float)
    ok = np.isfinite(share)
    if not ok.any():
        return undecided(stat, "no top head with a finite final-norm share")
    value, lo, hi, se = _median_ci(share[ok])
    best = top[ok].iloc[int(np.argmax(share[ok]))]
    summed = top[["sr_norm", "self_repair", "de"]].sum()
    detail = (f"{int(ok.sum())} heads; largest {best['norm_pct_de']:.0%} ({_head_label(best['layer'], best['head'])}); "
              f"summed over them the final-norm part is {summed['sr_norm'] / summed['de']:.0%} of DE and "
              f"{_ratio(summed['sr_norm'], summed['self_repair']):.0%} of SR")
    return Finding(stat, value, within(lo, hi, NORM_SHARE_MIN, NORM_SHARE_MAX, closed_high=True), lo=lo, hi=hi,
                   se=se, detail=detail)


@claim(id="self_repair_sparse_anti_erasure",
       text="Sparse sets of neurons implement Anti-Erasure.",
       source=SELF_REPAIR, study="self_repair", tables=("self_repair.parquet", "self_repair_neurons.parquet"),
       rule=f"Holds if the 95 % bootstrap interval (over the top heads whose MLPs repair, SR_mlp > 0) of the "
            f"median share of a head's MLP self-repair carried by its top-k anti-erasure neurons (k = the "
            f"table's neurons per head, well under 1 % of the later layers' neurons) lies above {SPARSE_SHARE}, "
            f"fails if it lies below.")
def self_repair_sparse_anti_erasure(tables) -> Finding:
    stat = "median over the top heads (SR_mlp > 0) of the top-k anti-erasure neurons' share of SR_mlp"
    heads = tables["self_repair.parquet"]
    neurons = tables["self_repair_neurons.parquet"]
    top = top_heads(heads)
    top = top[top["sr_mlp"] > 0]
    if len(top) == 0 or len(neurons) == 0:
        return undecided(stat, "no top head with MLP repair, or no neuron table")
    carried = neurons.groupby(["layer", "head"])["repair"].sum()
    k = int(neurons.groupby(["layer", "head"]).size().max())
    idx = pd.MultiIndex.from_frame(top[["layer", "head"]].astype(int))
    share = (carried.reindex(idx).to_numpy(dtype=float) / top["sr_mlp"].to_numpy(dtype=float))
    ok = np.isfinite(share)
    if not ok.any():
        return undecided(stat, "the top heads have no anti-erasure neurons in the table")
    value, lo, hi, se = _median_ci(share[ok])
    # the neurons' share of the later layers' neurons; d_mlp is at least the largest index + 1
    d_mlp = int(neurons["neuron"].max()) + 1
    n_layers = int(heads["n_layers"].iloc[0]) if "n_layers" in heads else int(heads["layer"].max()) + 1
    later = d_mlp * (n_layers - top["layer"].to_numpy()[ok])
    n_top = len(top_heads(heads))
    detail = (f"{int(ok.sum())} of {n_top} top heads (the others' MLPs give no net repair); "
              f"top {k} neurons = at most {float(np.max(k / later)):.2%} of the later layers' neurons")
    return Finding(stat, value, above(lo, hi, SPARSE_SHARE), lo=lo, hi=hi, se=se, detail=detail)


# -- sequence-continuation claims -----------------------------------------------------------------


def first_order(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of the lowest removal order (the circuit the overlap table and figure show)."""
    return df[df["order"] == df["order"].min()] if len(df) else df


@claim(id="seqcont_task_circuits",
       text="Each sequence-continuation task has a circuit: iterative mean-ablation pruning leaves a "
            "subgraph that keeps the task's logit difference above the threshold (80 %) of the full model's.",
       source=SEQCONT, study="seqcont", tables=("seqcont_circuit_summary.parquet",),
       rule=f"Holds if every circuit task (its lowest removal order) has a positive clean logit difference, "
            f"a re-checked circuit score above {SEQCONT_THRESHOLD:.0%} of it and at most "
            f"{CIRCUIT_MAX_FRACTION:.0%} of the model's components; fails otherwise.")
def seqcont_task_circuits(tables) -> Finding:
    stat = "fraction of circuit tasks with a circuit at the threshold"
    summary = first_order(tables["seqcont_circuit_summary.parquet"])
    if len(summary) == 0:
        return undecided(stat, "no circuit task")
    rows = summary.drop_duplicates("task")
    score = rows["recheck_score_pct"].astype(float)
    has = (rows["solved"].astype(bool) & (score > 100 * SEQCONT_THRESHOLD)
           & (rows["n_components"] <= CIRCUIT_MAX_FRACTION * rows["n_total"]))
    value = float(has.mean())
    detail = "; ".join(
        f"{r.task} {'ok' if ok else 'NO'} ({f'{s:.1f}%' if np.isfinite(s) else 'unsolved'}, "
        f"{int(r.n_components)}/{int(r.n_total)})"
        for r, s, ok in zip(rows.itertuples(), score, has))
    return Finding(stat, value, HOLDS if has.all() else FAILS, detail=detail)


def mean_pairwise_jaccard(sets: np.ndarray) -> np.ndarray:
    """Mean Jaccard index over all pairs of rows of boolean membership ``sets [..., T, C]``
    (pairs whose union is empty are skipped): ``[...]``."""
    x = np.asarray(sets, dtype=float)
    inter = np.einsum("...tc,...qc->...tq", x, x)
    size = x.sum(-1)
    union = size[..., :, None] + size[..., None, :] - inter
    t = x.shape[-2]
    iu = np.triu_indices(t, 1)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # every union empty: NaN
        return np.nanmean((inter / union)[..., iu[0], iu[1]], axis=-1)


def random_circuits(kinds: np.ndarray, sizes: dict[str, np.ndarray], n: int, seed: int) -> np.ndarray:
    """``n`` draws of random circuits ``[n, T, C]``: for task t, ``sizes[kind][t]`` components
    of each kind, drawn uniformly without replacement among the components of that kind."""
    rng = np.random.default_rng(seed)
    n_tasks = len(next(iter(sizes.values())))
    out = np.zeros((n, n_tasks, len(kinds)), dtype=bool)
    for kind, size in sizes.items():
        cols = np.flatnonzero(kinds == kind)
        keys = rng.random((n, n_tasks, len(cols)))
        rank = keys.argsort(-1).argsort(-1)
        out[..., cols] = rank < np.asarray(size)[None, :, None]
    return out


@claim(id="seqcont_shared_components",
       text="The circuits of different sequence-continuation tasks share components (shared sub-circuits, "
            "e.g. successor heads used by several tasks).",
       source=SEQCONT, study="seqcont", tables=("seqcont_circuits.parquet",),
       rule=f"Holds if the tasks' circuits (lowest order) have a mean pairwise Jaccard index above the "
            f"97.5th percentile of {N_PERMUTATIONS} random circuits with each task's numbers of heads and "
            f"of MLPs (the excess's 95 % permutation interval lies above 0), fails if below the 2.5th.")
def seqcont_shared_components(tables) -> Finding:
    stat = "mean pairwise Jaccard of the task circuits minus that of random circuits of the same sizes"
    circuits = first_order(tables["seqcont_circuits.parquet"])
    if len(circuits) == 0:
        return undecided(stat, "no circuit")
    member = (circuits.pivot_table(index="task", columns=["layer", "head"], values="in_circuit", aggfunc="any")
              .fillna(False).astype(bool))
    member = member[member.any(axis=1)]  # tasks with a circuit (solved)
    if len(member) < 2:
        return undecided(stat, f"{len(member)} task(s) with a circuit: nothing to share")
    kind_of = circuits.drop_duplicates(["layer", "head"]).set_index(["layer", "head"])["kind"]
    kinds = kind_of.reindex(member.columns).to_numpy().astype(str)
    sets = member.to_numpy()
    observed = float(mean_pairwise_jaccard(sets))
    sizes = {k: sets[:, kinds == k].sum(1) for k in np.unique(kinds)}
    draws = random_circuits(kinds, sizes, N_PERMUTATIONS, SEED)
    null = mean_pairwise_jaccard(draws)
    q_lo, q_hi = np.quantile(null, [0.025, 0.975])
    value = observed - float(null.mean())
    lo, hi = observed - float(q_hi), observed - float(q_lo)
    p = float((1 + (null >= observed).sum()) / (1 + len(null)))
    heads = kinds == "head"
    shared = int((sets.sum(0) >= 2).sum())
    detail = (f"{len(member)} tasks; Jaccard {observed:.3f} vs random {null.mean():.3f} (p = {p:.3g}); "
              f"heads only {float(mean_pairwise_jaccard(sets[:, heads])):.3f} vs random "
              f"{float(np.nanmean(mean_pairwise_jaccard(draws[..., heads]))):.3f}; "
              f"{shared} components in >= 2 circuits")
    return Finding(stat, value, above(lo, hi, 0.0), lo=lo, hi=hi, se=float(null.std(ddof=1)), detail=detail)


# -- concept-feature claims ------------------------------------------------------------------


def pooled_finding(findings: pd.DataFrame, key: str) -> pd.Series | None:
    """The finding's pooled row of scope ``all`` (None if the table has none)."""
    row = findings[(findings["finding"] == key) & (findings["concept"] == "pooled") & (findings["scope"] == "all")]
    return None if row.empty else row.iloc[0]


def _concept_finding(findings: pd.DataFrame, key: str, threshold: float, stat: str) -> Finding:
    row = pooled_finding(findings, key)
    if row is None:
        return undecided(stat, f"no pooled row for {key}")
    lo, hi = float(row["ci_low"]), float(row["ci_high"])
    per = findings[(findings["finding"] == key) & (findings["scope"] != "all") & (findings["concept"] == "pooled")]
    per_concept = findings[(findings["finding"] == key) & (findings["scope"] == "all")
                           & (findings["concept"] != "pooled")]
    detail = (f"{int(row['n_splits'])} splits; per concept "
              + ", ".join(f"{r.concept} {r.difference:+.3f}" for r in per_concept.itertuples())
              + "; by scope " + ", ".join(f"{r.scope} {r.difference:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
                                          for r in per.itertuples()))
    return Finding(stat, float(row["difference"]), above(lo, hi, threshold), lo=lo, hi=hi, detail=detail)


def _concept_rule(a: str, b: str, threshold: float, note: str = "") -> str:
    return (f"Holds if the 95 % corrected resampled-t interval over the seeded splits of the pooled "
            f"(concepts averaged per split, scope all) held-out accuracy difference {a} - {b} lies above "
            f"{threshold:g}{note}, fails if it lies below.")


@claim(id="concepts_rsa_beats_maxact",
       text="Feature selection by RSA (representational similarity approaches) > maximum activation approaches.",
       source=CONCEPTS, study="concepts", tables=("concept_findings.parquet",),
       rule=_concept_rule("RSA (both RSA methods)", "max activation (both spaces)", 0.0))
def concepts_rsa_beats_maxact(tables) -> Finding:
    return _concept_finding(tables["concept_findings.parquet"], "rsa_vs_maxact", 0.0,
                            "held-out accuracy, RSA - max activation (pooled, both spaces)")


@claim(id="concepts_sae_beats_raw",
       text="SAE (features) > raw layer activations.",
       source=CONCEPTS, study="concepts", tables=("concept_findings.parquet",),
       rule=_concept_rule("SAE", "raw (all selection methods)", 0.0))
def concepts_sae_beats_raw(tables) -> Finding:
    return _concept_finding(tables["concept_findings.parquet"], "sae_vs_raw", 0.0,
                            "held-out accuracy, SAE - raw (pooled, all methods)")


@claim(id="concepts_discriminative_ge_categorical",
       text="If using RSA, discriminative > categorical (the README's results: \"discriminative ~> categorical\").",
       source=CONCEPTS, study="concepts", tables=("concept_findings.parquet",),
       rule=_concept_rule("RSA discriminative", "categorical (both spaces)", -NONINFERIORITY_MARGIN,
                          " (non-inferiority margin)"))
def concepts_discriminative_ge_categorical(tables) -> Finding:
    return _concept_finding(tables["concept_findings.parquet"], "discriminative_vs_categorical",
                            -NONINFERIORITY_MARGIN,
                            "held-out accuracy, RSA discriminative - categorical (pooled, both spaces)")
