"""The seed studies' claims (claims/seeds.py): for each claim hand-built tables (the real
tables' columns) where it holds and changed ones where the verdict flips, the statistic
against a hand computation, and a run of every claim on a finished run's real tables."""
from __future__ import annotations

import math
import random
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stages_of_inference.claims import ledger, seeds
from stages_of_inference.claims.ledger import FAILS, HOLDS, INCONCLUSIVE, VERDICTS
from stages_of_inference.concepts.compute import findings as concept_findings
from stages_of_inference.self_repair.compute import SETTING_COLUMNS, TOKEN_COLUMNS, summarise_heads
from stages_of_inference.seqcont.compute import CIRCUIT_COLUMNS, MLP, SUMMARY_COLUMNS, component_name

REAL = Path("/work/main/results/smollm2")
SEED_CLAIMS = ("self_repair_imperfect", "self_repair_noisy", "self_repair_final_norm_share",
               "self_repair_sparse_anti_erasure", "seqcont_task_circuits", "seqcont_shared_components",
               "concepts_rsa_beats_maxact", "concepts_sae_beats_raw", "concepts_discriminative_ge_categorical")


def evaluate(claim_id: str, tables: dict):
    return ledger.REGISTRY[claim_id].evaluate(tables)


def test_registered_with_rules():
    for cid in SEED_CLAIMS:
        c = ledger.REGISTRY[cid]
        assert c.study in ("self_repair", "seqcont", "concepts")
        assert c.rule.endswith(".") and c.rule.count(". ") == 0, c.rule  # one sentence
        assert all(t.endswith(".parquet") for t in c.tables)


def test_within():
    assert ledger.within(0.1, 0.9, 0, 1) == HOLDS
    assert ledger.within(-0.1, 0.9, 0, 1) == INCONCLUSIVE
    assert ledger.within(1.0, 1.3, 0, 1) == FAILS
    assert ledger.within(0.2, 0.5, 0.05, 0.5, closed_high=True) == HOLDS
    assert ledger.within(0.2, 0.5, 0.05, 0.5) == INCONCLUSIVE
    assert ledger.within(math.nan, math.nan, 0, 1) == INCONCLUSIVE


# -- self-repair tables ---------------------------------------------------------------------

def _real_head_columns() -> list[str]:
    """The per-head table's columns as the study writes them (summarise_heads + the model,
    n_layers and the setting columns of self_repair_study)."""
    tok = pd.DataFrame({c: [0, 0] for c in TOKEN_COLUMNS})
    tok["pos"] = [1, 2]
    tok["de"] = [1.0, 2.0]
    tok["top"] = True
    heads = summarise_heads(tok, n_layers=2)
    return ["model", *heads.columns, "n_layers", *SETTING_COLUMNS]


HEAD_COLUMNS = _real_head_columns()
NEURON_COLUMNS = ["model", "layer", "head", "rank", "neuron_layer", "neuron", "repair", "frac_of_de", "frac_of_mlp"]


def heads_table(de, frac=0.6, spread=1.0, norm_pct=0.25, sr_mlp=None, n_layers=6, n_heads=4) -> pd.DataFrame:
    """Per-head table with the real columns: head i has mean DE ``de[i]``, SR = frac[i]·DE,
    per-token SR/DE quantiles q50 ± spread/2, final-norm share ``norm_pct``."""
    n = len(de)
    b = np.broadcast_arrays(np.asarray(de, float), frac, spread, norm_pct,
                            0.4 * np.asarray(de, float) if sr_mlp is None else sr_mlp)
    de, frac, spread, norm_pct, sr_mlp = (np.array(x, dtype=float) for x in b)
    layer, head = np.divmod(np.arange(n), n_heads)
    sr = frac * de
    df = pd.DataFrame({"model": "m", "layer": layer, "head": head, "rel_depth": layer / (n_layers - 1),
                       "n_top": 10, "n_tokens": 100, "de": de, "te": de - sr, "self_repair": sr,
                       "sr_norm": norm_pct * de, "sr_post_norm": 0.0, "sr_mlp": sr_mlp,
                       "repair_frac": frac, "norm_frac_de": norm_pct, "norm_share": norm_pct / frac,
                       "norm_pct_de": norm_pct, "repair_pct_de": np.clip(frac, 0, 1),
                       "ratio_q10": frac - spread / 2, "ratio_q50": frac, "ratio_q90": frac + spread / 2,
                       "frac_overcorrect": 0.2, "frac_negative": 0.1, "n_layers": n_layers, "ablation": "resample",
                       "target": "next", "positions": "all", "centre_unembed": True})
    df["sr_attn"] = df["self_repair"] - df["sr_norm"] - df["sr_mlp"]
    for c in HEAD_COLUMNS:
        if c.endswith("_all"):
            df[c] = df[c[:-4]] / 10
    assert set(df.columns) == set(HEAD_COLUMNS)
    return df[HEAD_COLUMNS]


# ten heads: the eight with the largest DE are the top heads (MIN_TOP_HEADS), the two weakest not
DE = np.array([3.0, 2.5, 2.2, 2.0, 1.8, 1.5, 1.2, 1.0, 0.1, 0.05])


def test_head_columns_match_the_study():
    assert {"de", "self_repair", "norm_pct_de", "ratio_q10", "ratio_q90", "sr_mlp", "n_top"} <= set(HEAD_COLUMNS)
    assert seeds.MIN_TOP_HEADS == 8


def test_top_heads():
    h = heads_table(DE)
    assert list(seeds.top_heads(h).index) == list(range(8))
    # a fraction of the heads once there are many; DE <= 0 never
    many = heads_table(np.r_[np.linspace(5, 1, 95), [-1.0] * 5], n_heads=10)
    assert len(seeds.top_heads(many)) == 10
    assert len(seeds.top_heads(heads_table(np.r_[[1.0] * 3, [-1.0] * 7]))) == 3


def test_self_repair_imperfect():
    frac = np.r_[[0.5, 0.6, 0.7, 0.55, 0.65, 0.8, 0.6, 0.7], [5.0, -4.0]]
    f = evaluate("self_repair_imperfect", {"self_repair.parquet": heads_table(DE, frac)})
    assert f.verdict == HOLDS
    assert f.value == pytest.approx(np.median(frac[:8]))  # the weak heads do not count
    assert 0 < f.lo <= f.value <= f.hi < 1
    # full repair or more: fails; around 1: inconclusive; the weakest heads cannot flip it
    over = evaluate("self_repair_imperfect", {"self_repair.parquet": heads_table(DE, np.r_[[1.2] * 8, [0.5, 0.5]])})
    assert over.verdict == FAILS and over.value == pytest.approx(1.2)
    none = evaluate("self_repair_imperfect", {"self_repair.parquet": heads_table(DE, np.r_[[-0.3] * 8, [0.5] * 2])})
    assert none.verdict == FAILS
    mixed = np.r_[[0.7, 1.2, 0.8, 1.3, 0.9, 1.1, 0.95, 1.05], [0.5, 0.5]]
    assert evaluate("self_repair_imperfect", {"self_repair.parquet": heads_table(DE, mixed)}).verdict == INCONCLUSIVE


def test_self_repair_noisy():
    spread = np.r_[[0.9, 1.2, 0.8, 1.5, 1.0, 0.7, 1.1, 2.0], [0.0, 0.0]]
    h = heads_table(DE, spread=spread)
    f = evaluate("self_repair_noisy", {"self_repair.parquet": h})
    assert f.verdict == HOLDS
    assert f.value == pytest.approx(np.median(spread[:8]))
    assert seeds.NOISE_SPREAD < f.lo <= f.value <= f.hi
    assert "20% over-correct" in f.detail
    calm = heads_table(DE, spread=np.r_[[0.1, 0.2, 0.15, 0.1, 0.05, 0.2, 0.1, 0.1], [3.0, 3.0]])
    f = evaluate("self_repair_noisy", {"self_repair.parquet": calm})
    assert f.verdict == FAILS and f.value == pytest.approx(0.1)
    edge = heads_table(DE, spread=np.r_[[0.2, 0.9, 0.3, 0.8, 0.4, 0.7, 0.45, 0.6], [0, 0]])
    assert evaluate("self_repair_noisy", {"self_repair.parquet": edge}).verdict == INCONCLUSIVE


def test_self_repair_final_norm_share():
    share = np.r_[[0.2, 0.3, 0.25, 0.15, 0.28, 0.35, 0.22, 0.3], [0.95, 0.9]]
    f = evaluate("self_repair_final_norm_share", {"self_repair.parquet": heads_table(DE, norm_pct=share)})
    assert f.verdict == HOLDS
    assert f.value == pytest.approx(np.median(share[:8]))
    assert seeds.NORM_SHARE_MIN < f.lo and f.hi <= seeds.NORM_SHARE_MAX
    big = np.r_[[0.7, 0.8, 0.75, 0.9, 0.65, 0.85, 0.7, 0.8], [0.1, 0.1]]
    f = evaluate("self_repair_final_norm_share", {"self_repair.parquet": heads_table(DE, norm_pct=big)})
    assert f.verdict == FAILS and f.value == pytest.approx(np.median(big[:8]))
    tiny = np.r_[[0.0, 0.01, 0.02, 0.0, 0.01, 0.03, 0.0, 0.02], [0.3, 0.3]]
    assert evaluate("self_repair_final_norm_share",
                    {"self_repair.parquet": heads_table(DE, norm_pct=tiny)}).verdict == FAILS
    edge = np.r_[[0.3, 0.6, 0.4, 0.55, 0.45, 0.5, 0.35, 0.65], [0.1, 0.1]]
    assert evaluate("self_repair_final_norm_share",
                    {"self_repair.parquet": heads_table(DE, norm_pct=edge)}).verdict == INCONCLUSIVE


def neurons_table(heads: pd.DataFrame, share, k: int = 3) -> pd.DataFrame:
    """Top-k anti-erasure neurons per head carrying ``share[i]`` of head i's SR_mlp in total."""
    rows = []
    share = np.broadcast_to(np.asarray(share, float), (len(heads),))
    for (i, h), s in zip(heads.iterrows(), share):
        parts = np.array([0.5, 0.3, 0.2][:k]) * s * h["sr_mlp"]
        for rank, r in enumerate(parts):
            rows.append({"model": "m", "layer": h["layer"], "head": h["head"], "rank": rank,
                         "neuron_layer": h["layer"] + rank % 2, "neuron": 100 * rank + i, "repair": r,
                         "frac_of_de": r / h["de"], "frac_of_mlp": r / h["sr_mlp"]})
    return pd.DataFrame(rows, columns=NEURON_COLUMNS)


def test_self_repair_sparse_anti_erasure():
    sr_mlp = np.r_[[0.5] * 7, [-0.2], [0.3, 0.3]]  # head 7's MLPs do not repair: left out
    h = heads_table(DE, sr_mlp=sr_mlp)
    share = np.r_[[0.6, 0.8, 0.5, 0.7, 0.9, 0.55, 0.65], [5.0], [0.01, 0.01]]
    f = evaluate("self_repair_sparse_anti_erasure",
                 {"self_repair.parquet": h, "self_repair_neurons.parquet": neurons_table(h, share)})
    assert f.verdict == HOLDS
    assert f.value == pytest.approx(np.median(share[:7]))
    assert f.lo > seeds.SPARSE_SHARE
    assert "7 of 8 top heads" in f.detail and "top 3 neurons" in f.detail
    spread_out = np.r_[[0.05, 0.1, 0.02, 0.08, 0.04, 0.06, 0.03], [5.0], [0.9, 0.9]]
    f = evaluate("self_repair_sparse_anti_erasure",
                 {"self_repair.parquet": h, "self_repair_neurons.parquet": neurons_table(h, spread_out)})
    assert f.verdict == FAILS and f.value == pytest.approx(0.05)


def test_self_repair_claims_without_heads():
    h = heads_table(-DE)
    for cid in SEED_CLAIMS[:4]:
        f = evaluate(cid, {"self_repair.parquet": h, "self_repair_neurons.parquet": neurons_table(h, 0.5)})
        assert f.verdict == INCONCLUSIVE and math.isnan(f.value)


# -- sequence continuation -------------------------------------------------------------------

N_LAYERS, N_HEADS = 6, 4
COMPONENTS = [(L, h) for L in range(N_LAYERS - 1, -1, -1) for h in [MLP, *range(N_HEADS)]]


def summary_table(scores, sizes, solved=None, order=0) -> pd.DataFrame:
    tasks = ["digits", "numwords", "months", "weekdays"][: len(scores)]
    solved = [True] * len(scores) if solved is None else solved
    n_total = len(COMPONENTS)
    rows = [dict(model="m", task=t, order=order, solved=ok, n_prompts=3, logit_diff_clean=2.0 if ok else -1.0,
                 n_heads=n - 2, n_mlps=2, n_components=n, n_total=n_total, n_sweeps=2,
                 final_score_pct=s if ok else np.nan, recheck_score_pct=s if ok else np.nan, seconds=1.0)
            for t, s, n, ok in zip(tasks, scores, sizes, solved)]
    df = pd.DataFrame(rows)
    assert list(df.columns) == SUMMARY_COLUMNS
    return df


def test_seqcont_task_circuits():
    good = summary_table([85, 82, 90, 81], [10, 12, 8, 14])
    f = evaluate("seqcont_task_circuits", {"seqcont_circuit_summary.parquet": good})
    assert f.verdict == HOLDS and f.value == 1.0
    assert "digits ok (85.0%, 10/30)" in f.detail
    # a later order's failure does not count: the lowest order is the circuit
    later = pd.concat([good, summary_table([50, 50, 50, 50], [29] * 4, order=1)], ignore_index=True)
    assert evaluate("seqcont_task_circuits", {"seqcont_circuit_summary.parquet": later}).verdict == HOLDS
    low = summary_table([85, 79, 90, 81], [10, 12, 8, 14])
    f = evaluate("seqcont_task_circuits", {"seqcont_circuit_summary.parquet": low})
    assert f.verdict == FAILS and f.value == 0.75 and "numwords NO" in f.detail
    at = summary_table([85, 80.0, 90, 81], [10, 12, 8, 14])  # "strictly above" the threshold
    assert evaluate("seqcont_task_circuits", {"seqcont_circuit_summary.parquet": at}).value == 0.75
    unsolved = summary_table([85, 82, 90, 81], [10, 12, 8, 14], solved=[True, True, False, True])
    f = evaluate("seqcont_task_circuits", {"seqcont_circuit_summary.parquet": unsolved})
    assert f.verdict == FAILS and "months NO (unsolved" in f.detail
    whole = summary_table([85, 82, 90, 81], [10, 16, 8, 14])  # 16 of 30 components: not a circuit
    f = evaluate("seqcont_task_circuits", {"seqcont_circuit_summary.parquet": whole})
    assert f.verdict == FAILS and f.value == 0.75


def circuits_table(members: dict[str, set], order: int = 0) -> pd.DataFrame:
    """Order-``order`` pruning rows of each task: ``members[task]`` the components kept."""
    rows = []
    for task, kept in members.items():
        solved = bool(kept)
        for step, (L, h) in enumerate(COMPONENTS):
            rows.append(dict(model="m", task=task, order=order, step=step, layer=L, head=h,
                             component=component_name(L, h), kind="mlp" if h == MLP else "head",
                             trial_score_pct=70.0 if (L, h) in kept else 90.0,
                             removed_in_sweep=-1 if (L, h) in kept else 0, in_circuit=solved and (L, h) in kept))
    df = pd.DataFrame(rows)
    assert list(df.columns) == CIRCUIT_COLUMNS
    return df


def test_mean_pairwise_jaccard_by_hand():
    sets = np.zeros((3, 6), dtype=bool)
    sets[0, [1, 2, 3]] = sets[1, [2, 3, 4]] = sets[2, [5]] = True
    assert seeds.mean_pairwise_jaccard(sets) == pytest.approx((2 / 4 + 0 + 0) / 3)
    assert seeds.mean_pairwise_jaccard(np.stack([sets, sets[[0, 0, 0]]])) == pytest.approx([1 / 6, 1.0])


def test_random_circuits_keep_sizes_per_kind():
    kinds = np.array(["mlp"] * 4 + ["head"] * 16)
    draws = seeds.random_circuits(kinds, {"mlp": np.array([1, 3]), "head": np.array([5, 2])}, 4000, 0)
    assert (draws[:, :, :4].sum(-1) == [1, 3]).all() and (draws[:, :, 4:].sum(-1) == [5, 2]).all()
    # uniform within a kind
    assert draws[:, 0, 4:].mean(0) == pytest.approx(np.full(16, 5 / 16), abs=0.03)
    assert draws[:, 1, :4].mean(0) == pytest.approx(np.full(4, 3 / 4), abs=0.03)


def _null_mean_by_hand(sizes, n=3000, seed=1):
    """Mean pairwise Jaccard of random circuits drawn with random.sample (independent of the module)."""
    rng = random.Random(seed)
    heads = [c for c in COMPONENTS if c[1] != MLP]
    mlps = [c for c in COMPONENTS if c[1] == MLP]
    total = 0.0
    for _ in range(n):
        sets = [set(rng.sample(heads, nh)) | set(rng.sample(mlps, nm)) for nh, nm in sizes]
        total += np.mean([len(a & b) / len(a | b) for a, b in combinations(sets, 2)])
    return total / n


def test_seqcont_shared_components():
    shared = {(5, MLP), (3, MLP), (4, 1), (3, 2), (2, 0)}
    members = {"digits": shared | {(1, 1)}, "numwords": shared | {(0, 3)}, "months": shared,
               "weekdays": shared | {(1, 1), (0, 0)}}
    f = evaluate("seqcont_shared_components", {"seqcont_circuits.parquet": circuits_table(members)})
    assert f.verdict == HOLDS and f.lo > 0
    observed = np.mean([len(members[a] & members[b]) / len(members[a] | members[b])
                        for a, b in combinations(members, 2)])
    sizes = [(len([c for c in m if c[1] != MLP]), len([c for c in m if c[1] == MLP])) for m in members.values()]
    assert f.value == pytest.approx(observed - _null_mean_by_hand(sizes), abs=0.01)
    assert f"Jaccard {observed:.3f}" in f.detail
    # an unsolved task (no circuit) and a later order change nothing
    more = circuits_table({**members, "digits_words": set()})
    other = circuits_table({t: {(0, 0)} for t in members}, order=1)
    g = evaluate("seqcont_shared_components", {"seqcont_circuits.parquet": pd.concat([more, other])})
    assert (g.value, g.lo, g.hi, g.verdict) == (f.value, f.lo, f.hi, f.verdict)
    # disjoint circuits of the same sizes share less than random ones
    heads = [c for c in COMPONENTS if c[1] != MLP]
    disjoint = {t: set(heads[6 * i: 6 * i + 6]) for i, t in enumerate(members)}
    f = evaluate("seqcont_shared_components", {"seqcont_circuits.parquet": circuits_table(disjoint)})
    assert f.verdict == FAILS and f.hi < 0
    assert f.value == pytest.approx(0 - _null_mean_by_hand([(6, 0)] * 4), abs=0.01)
    # one task with a circuit: nothing to share
    f = evaluate("seqcont_shared_components", {"seqcont_circuits.parquet": circuits_table({"digits": shared,
                                                                                        "months": set()})})
    assert f.verdict == INCONCLUSIVE and math.isnan(f.value)


def test_seqcont_shared_components_random_baseline_counts_mlps():
    """Circuits that share only what their sizes force (every MLP) are not 'shared' beyond chance."""
    mlps = {c for c in COMPONENTS if c[1] == MLP}
    heads = [c for c in COMPONENTS if c[1] != MLP]
    members = {t: mlps | {heads[(5 * i + j) % 24] for j in range(5)} for i, t in enumerate(["a", "b", "c", "d"])}
    f = evaluate("seqcont_shared_components", {"seqcont_circuits.parquet": circuits_table(members)})
    assert f.verdict != HOLDS


# -- concept features -------------------------------------------------------------------

METHODS = ("maxact", "rsa_categorical", "rsa_discriminative")


def probes_table(acc, n_splits=10, seed=0, noise=0.03) -> pd.DataFrame:
    """Per-split probe accuracies: ``acc[(space, method)]`` the mean, plus seeded noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for concept in ("success", "danger"):
        for space in ("raw", "sae"):
            for method in METHODS:
                for s in range(n_splits):
                    rows.append(dict(model="m", concept=concept, space=space, method=method, split=s, k=8, refused=0,
                                     n_train=96, n_test=24, train_accuracy=0.9,
                                     test_accuracy=acc[(space, method)] + noise * rng.standard_normal(),
                                     features=[1, 2], scores=[0.5, 0.4]))
    return pd.DataFrame(rows)


def _by_hand(probes, a, b):
    """Mean over splits of the concepts' mean paired difference mean(a cells) - mean(b cells)."""
    w = probes.pivot_table(index=["concept", "split"], columns=["space", "method"], values="test_accuracy")
    d = w[a].mean(axis=1) - w[b].mean(axis=1)
    return float(d.groupby(level="split").mean().mean())


BASE = {("raw", "maxact"): 0.6, ("raw", "rsa_categorical"): 0.75, ("raw", "rsa_discriminative"): 0.78,
        ("sae", "maxact"): 0.7, ("sae", "rsa_categorical"): 0.85, ("sae", "rsa_discriminative"): 0.86}


@pytest.mark.parametrize("claim_id, a, b", [
    ("concepts_rsa_beats_maxact",
     [("raw", "rsa_categorical"), ("raw", "rsa_discriminative"), ("sae", "rsa_categorical"),
      ("sae", "rsa_discriminative")], [("raw", "maxact"), ("sae", "maxact")]),
    ("concepts_sae_beats_raw", [("sae", m) for m in METHODS], [("raw", m) for m in METHODS]),
])
def test_concept_findings_hold_and_flip(claim_id, a, b):
    probes = probes_table(BASE)
    f = evaluate(claim_id, {"concept_findings.parquet": concept_findings(probes)})
    assert f.verdict == HOLDS and f.lo > 0
    assert f.value == pytest.approx(_by_hand(probes, a, b))
    # reversed: the b cells get the a cells' accuracy and more
    flipped = dict(BASE)
    for cell in b:
        flipped[cell] = 0.95
    f = evaluate(claim_id, {"concept_findings.parquet": concept_findings(probes_table(flipped))})
    assert f.verdict == FAILS and f.hi < 0
    # equal on average, noisy: inconclusive
    same = {cell: 0.75 for cell in BASE}
    f = evaluate(claim_id, {"concept_findings.parquet": concept_findings(probes_table(same, noise=0.1))})
    assert f.verdict == INCONCLUSIVE


def test_concepts_discriminative_ge_categorical():
    a, b = [("raw", "rsa_discriminative"), ("sae", "rsa_discriminative")], [("raw", "rsa_categorical"),
                                                                            ("sae", "rsa_categorical")]
    # equal: non-inferior (holds) although not better
    equal = {**BASE, ("raw", "rsa_discriminative"): 0.75, ("sae", "rsa_discriminative"): 0.85}
    probes = probes_table(equal, n_splits=30, noise=0.01)
    found = concept_findings(probes)
    f = evaluate("concepts_discriminative_ge_categorical", {"concept_findings.parquet": found})
    assert f.value == pytest.approx(_by_hand(probes, a, b))
    assert f.lo < 0 < f.hi and f.lo > -seeds.NONINFERIORITY_MARGIN
    assert f.verdict == HOLDS
    worse = {**BASE, ("raw", "rsa_discriminative"): 0.70, ("sae", "rsa_discriminative"): 0.80}
    f = evaluate("concepts_discriminative_ge_categorical",
                 {"concept_findings.parquet": concept_findings(probes_table(worse, noise=0.01))})
    assert f.verdict == FAILS
    noisy = evaluate("concepts_discriminative_ge_categorical",
                     {"concept_findings.parquet": concept_findings(probes_table(equal, noise=0.1))})
    assert noisy.verdict == INCONCLUSIVE


def test_concept_claims_read_the_pooled_all_row():
    found = concept_findings(probes_table(BASE))
    row = found[(found["finding"] == "sae_vs_raw") & (found["concept"] == "pooled") & (found["scope"] == "all")]
    f = evaluate("concepts_sae_beats_raw", {"concept_findings.parquet": found})
    assert (f.value, f.lo, f.hi) == (row["difference"].iloc[0], row["ci_low"].iloc[0], row["ci_high"].iloc[0])
    # a table without the finding: inconclusive, no value
    f = evaluate("concepts_sae_beats_raw", {"concept_findings.parquet": found[found["finding"] != "sae_vs_raw"]})
    assert f.verdict == INCONCLUSIVE and math.isnan(f.value)


# -- the real tables --------------------------------------------------------------------------

@pytest.mark.skipif(not (REAL / "self_repair.parquet").exists(), reason="no finished SmolLM2 run in /work/main")
def test_seed_claims_on_real_tables(monkeypatch):
    monkeypatch.setattr(ledger, "CLAIM_MODULES", ("stages_of_inference.claims.seeds",))
    claims = {cid: ledger.load_claims()[cid] for cid in SEED_CLAIMS}
    names = {t for c in claims.values() for t in c.tables}
    missing = [n for n in names if not (REAL / n).exists()]
    if missing:
        pytest.skip(f"missing tables {missing}")
    tables = {"smollm2": {n: pd.read_parquet(REAL / n) for n in names}}
    df = ledger.build_ledger(tables, {s: ["smollm2"] for s in ("self_repair", "seqcont", "concepts")})
    df = df[df["claim"].isin(SEED_CLAIMS)]
    assert sorted(df["claim"]) == sorted(SEED_CLAIMS)
    assert df["verdict"].isin(VERDICTS).all()
    assert np.isfinite(df["value"].astype(float)).all(), df[["claim", "value", "detail"]]
    assert (df["detail"].str.len() > 0).all()


@pytest.mark.skipif(not (REAL / "self_repair_tokens.parquet").exists(), reason="no finished SmolLM2 run in /work/main")
def test_noisy_spread_is_the_token_figures_spread():
    """The per-head quantiles the noisy claim reads are the spread of the per-token SR/DE over
    the head's top tokens that figures/self_repair_tokens.pdf draws (from the tokens table)."""
    heads = pd.read_parquet(REAL / "self_repair.parquet")
    tokens = pd.read_parquet(REAL / "self_repair_tokens.parquet")
    top = seeds.top_heads(heads)
    tk = tokens[tokens["top"]].merge(top[["layer", "head"]], on=["layer", "head"])
    ratio = (tk["self_repair"] / tk["de"]).replace([np.inf, -np.inf], np.nan)
    q = ratio.groupby([tk["layer"], tk["head"]]).quantile([0.1, 0.9]).unstack()
    spread = (q[0.9] - q[0.1]).reindex(pd.MultiIndex.from_frame(top[["layer", "head"]]))
    f = evaluate("self_repair_noisy", {"self_repair.parquet": heads})
    assert f.value == pytest.approx(float(np.median(spread)), rel=1e-4)
