"""Each of the paper's claims on hand-built tables (the real tables' columns): a table where the
verdict must be HOLDS, a changed one where it must flip, and the statistic against a hand
computation; then every claim on the finished SmolLM2 run's tables, where they exist."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import beta, spearmanr

from stages_of_inference.claims import paper
from stages_of_inference.claims.ledger import FAILS, HOLDS, INCONCLUSIVE, VERDICTS, load_claims

RNG = np.random.default_rng(0)


def evaluate(claim_id, tables):
    return load_claims()[claim_id].evaluate(tables)


# -- robustness --------------------------------------------------------------------------------


def intervention_tokens(n_layers=10, n_docs=12, n_pos=40, kl=None, keep=None, seed=0):
    """Per-token drop and swap rows: ``kl[kind](layer)`` the mean KL (exponential noise),
    ``keep[kind](layer)`` the chance a correct baseline prediction stays correct."""
    rng = np.random.default_rng(seed)
    kl = kl or {"drop": lambda layer: 1.0, "swap": lambda layer: 0.5}
    keep = keep or {"drop": lambda layer: 0.85, "swap": lambda layer: 0.9}
    base = rng.random((n_docs, n_pos)) < 0.5
    rows = []
    for kind in ("drop", "swap"):
        for layer in range(n_layers - (kind == "swap")):
            for seq in range(n_docs):
                correct = base[seq] & (rng.random(n_pos) < keep[kind](layer))
                rows.append(pd.DataFrame({
                    "model": "m", "kind": kind, "layer": np.int32(layer), "seq": np.int32(seq),
                    "pos": np.arange(1, n_pos + 1, dtype=np.int32),
                    "kl": rng.exponential(kl[kind](layer), n_pos).astype(np.float32),
                    "correct_base": base[seq].astype(np.float32), "correct": correct.astype(np.float32)}))
    tokens = pd.concat(rows, ignore_index=True)
    tokens["kind"] = tokens["kind"].astype("category")
    return tokens


def summary_of(tokens, n_layers):
    s = tokens.groupby(["model", "kind", "layer"], observed=True)[["kl", "correct", "correct_base"]].mean()
    s = s.rename(columns={c: f"{c}_mean" for c in s.columns}).reset_index()
    s["n_layers"] = n_layers
    return s


def robustness_tables(n_layers=10, **kw):
    tokens = intervention_tokens(n_layers, **kw)
    return {"interventions.parquet": summary_of(tokens, n_layers), "interventions_tokens.parquet": tokens}


def hand_retained(tokens, kind, n_layers):
    t = tokens[tokens["kind"] == kind]
    last = n_layers - 2 if kind == "swap" else n_layers - 1  # swap L touches L+1
    t = t[(t["layer"] > 0) & (t["layer"] < last)]
    per_layer = t.groupby("layer")["correct"].sum() / t.groupby("layer")["correct_base"].sum()
    return per_layer.mean()


@pytest.mark.parametrize("kind", ["drop", "swap"])
def test_retained_accuracy_band(kind):
    tables = robustness_tables()
    f = evaluate(f"retained_accuracy_{kind}", tables)
    want = hand_retained(tables["interventions_tokens.parquet"], kind, 10)
    assert f.value == pytest.approx(want, rel=1e-6)
    assert f.verdict == HOLDS and 0.72 <= f.lo < f.value < f.hi <= 0.95, f
    low = robustness_tables(keep={"drop": lambda layer: 0.5, "swap": lambda layer: 0.5})
    assert evaluate(f"retained_accuracy_{kind}", low).verdict == FAILS
    # the first and last layer are left out, as in table_robustness: ruining them changes nothing
    ruined = (0, 9) if kind == "drop" else (0, 8)  # swap 8 touches block 9
    edges = robustness_tables(keep={k: (lambda layer: 0.0 if layer in ruined else 0.85) for k in ("drop", "swap")})
    assert evaluate(f"retained_accuracy_{kind}", edges).verdict == HOLDS
    # near the band's edge the interval straddles it
    edge = robustness_tables(keep={k: (lambda layer: 0.95) for k in ("drop", "swap")}, n_docs=6)
    assert evaluate(f"retained_accuracy_{kind}", edge).verdict == INCONCLUSIVE


def test_retained_accuracy_of_a_model_that_predicts_nothing():
    tables = robustness_tables()
    tables["interventions.parquet"]["correct_base_mean"] = 0.0
    f = evaluate("retained_accuracy_drop", tables)
    assert f.verdict == INCONCLUSIVE and np.isnan(f.value)


def test_edges_degrade_most():
    def kl(edge_first, edge_last):
        return {"drop": lambda layer: edge_first if layer == 0 else edge_last if layer == 9 else 0.2,
                "swap": lambda layer: 0.1}

    tables = robustness_tables(kl=kl(3.0, 2.0))
    f = evaluate("edges_degrade_most", tables)
    t = tables["interventions_tokens.parquet"]
    per_layer = t[t["kind"] == "drop"].groupby("layer")["kl"].mean()
    want = min(per_layer[0], per_layer[9]) - per_layer[1:9].mean()  # 10 layers: one edge layer each side
    assert f.value == pytest.approx(want, rel=1e-5)
    assert f.verdict == HOLDS
    # a robust last layer: the claim needs BOTH ends
    assert evaluate("edges_degrade_most", robustness_tables(kl=kl(3.0, 0.05))).verdict == FAILS


def test_swaps_gentler_than_drops():
    tables = robustness_tables(kl={"drop": lambda layer: 1.0 + layer, "swap": lambda layer: 0.4 * (1.0 + layer)})
    f = evaluate("swaps_gentler_than_drops", tables)
    t = tables["interventions_tokens.parquet"]
    m = t.groupby(["kind", "layer"], observed=True)["kl"].mean()
    want = np.mean([m["swap"][layer] < m["drop"][layer] for layer in range(9)])
    assert f.value == pytest.approx(want) and f.verdict == HOLDS
    harsh = robustness_tables(kl={"drop": lambda layer: 1.0, "swap": lambda layer: 3.0})
    assert evaluate("swaps_gentler_than_drops", harsh).verdict == FAILS


def family(points, control=None):
    """``points``: (n_layers, retained) per trained model; ``control``: the same for a random one."""
    out = {}
    for i, (n, r) in enumerate(points + ([control] if control else [])):
        random = control is not None and i == len(points)
        layers = np.arange(n)
        summary = pd.DataFrame({"model": f"m{i}", "kind": "drop", "layer": layers, "correct_base_mean": 0.4,
                                "correct_mean": 0.4 * r, "n_layers": n})
        info = pd.DataFrame([{"model": f"m{i}", "family": "Llama (random weights)" if random else "Llama",
                              "layers": n}])
        out[f"m{i}"] = {"interventions.parquet": summary, "model_info.json": info}
    return out


def test_more_layers_more_robust_is_a_family_claim():
    assert load_claims()["more_layers_more_robust"].scope == "family"
    up = [(12, 0.7), (24, 0.8), (36, 0.9)]
    f = evaluate("more_layers_more_robust", family(up))
    assert f.value == pytest.approx(1.0) and f.verdict == HOLDS
    # a random-weight control (deep, fragile) is left out
    assert evaluate("more_layers_more_robust", family(up, control=(60, 0.1))).verdict == HOLDS
    assert evaluate("more_layers_more_robust", family([(12, 0.9), (24, 0.8), (36, 0.7)])).verdict == FAILS
    two = evaluate("more_layers_more_robust", family([(12, 0.7), (24, 0.9)]))  # the default run: two trained
    assert two.verdict == INCONCLUSIVE and two.value == 1.0
    none = evaluate("more_layers_more_robust", family([], control=(30, 0.5)))
    assert none.verdict == INCONCLUSIVE and np.isnan(none.value)


# -- depth -------------------------------------------------------------------------------------


def layer_tokens(n_layers=12, n_docs=10, n_pos=20, seed=0, **columns):
    """Per-token layer statistics: ``columns[name](layer)`` the mean (normal noise, sd 10 %);
    layer -1 is the embedding (lens columns only)."""
    rng = np.random.default_rng(seed)
    rows = []
    for layer in range(-1, n_layers):
        for seq in range(n_docs):
            row = {"model": "m", "layer": np.int32(layer), "seq": np.int32(seq),
                   "pos": np.arange(1, n_pos + 1, dtype=np.int32),
                   "prev5_keys": np.minimum(np.arange(1, n_pos + 1), 5).astype(np.int8)}
            for name, fn in columns.items():
                mean = fn(layer)
                row[name] = (mean * (1 + 0.1 * rng.standard_normal(n_pos))).astype(np.float32)
                if layer < 0 and not name.startswith("lens"):
                    row[name] = np.full(n_pos, np.nan, np.float32)
            rows.append(pd.DataFrame(row))
    tokens = pd.concat(rows, ignore_index=True)
    layers = pd.DataFrame({"model": "m", "layer": np.arange(-1, n_layers), "n_layers": n_layers})
    return {"layer_stats_tokens.parquet": tokens, "layer_stats.parquet": layers}


def test_prev5_attention_early_uses_the_authors_convention():
    tables = layer_tokens(prev5_attn_authors=lambda layer: 0.5 if layer < 4 else 0.1, prev5_attn=lambda layer: 0.2)
    f = evaluate("prev5_attention_early", tables)
    t = tables["layer_stats_tokens.parquet"]
    t = t[t["layer"] >= 0]
    w = t["prev5_keys"].astype(float)
    doc = (t.assign(wv=t["prev5_attn_authors"] * w, w=w).groupby(["layer", "seq"])[["wv", "w"]].sum()
           .pipe(lambda d: d["wv"] / d["w"]).groupby("layer").mean())
    early = doc.index.to_numpy() / 11 < 1 / 3  # layers 0..3 of 12
    assert f.value == pytest.approx(doc[early].mean() - doc[~early].mean(), rel=1e-5)
    assert f.verdict == HOLDS
    late = layer_tokens(prev5_attn_authors=lambda layer: 0.1 if layer < 4 else 0.5, prev5_attn=lambda layer: 0.2)
    assert evaluate("prev5_attention_early", late).verdict == FAILS
    # an older run without the authors' column: the pooled definition, said in the detail
    old = layer_tokens(prev5_attn=lambda layer: 0.5 if layer < 4 else 0.1)
    f = evaluate("prev5_attention_early", old)
    assert f.verdict == HOLDS and "pooled" in f.detail


def test_attn_mlp_ratio_falls():
    tables = layer_tokens(attn_norm=lambda layer: 10.0 / (2 + layer), mlp_norm=lambda layer: 5.0 + layer)
    f = evaluate("attn_mlp_ratio_falls", tables)
    t = tables["layer_stats_tokens.parquet"]
    t = t[t["layer"] >= 0]
    g = t.groupby("layer")
    want = spearmanr(g.size().index, g["attn_norm"].mean() / g["mlp_norm"].mean()).statistic
    assert f.value == pytest.approx(want) and f.verdict == HOLDS
    rising = layer_tokens(attn_norm=lambda layer: 1.0 + layer, mlp_norm=lambda layer: 5.0)
    assert evaluate("attn_mlp_ratio_falls", rising).verdict == FAILS


def test_lens_kl_falls_in_the_second_half():
    tables = layer_tokens(lens_kl=lambda layer: 5.0 if layer < 6 else 12.0 - layer)  # flat, then falling
    f = evaluate("lens_kl_falls_second_half", tables)
    t = tables["layer_stats_tokens.parquet"]
    m = t[(t["layer"] >= 6) & (t["layer"] < 11)].groupby("layer")["lens_kl"].mean()  # 12 layers: 6..10
    assert f.value == pytest.approx(spearmanr(m.index, m.to_numpy()).statistic)
    assert f.verdict == HOLDS
    rising = layer_tokens(lens_kl=lambda layer: 5.0 if layer < 6 else 1.0 + layer)
    assert evaluate("lens_kl_falls_second_half", rising).verdict == FAILS


@pytest.mark.parametrize("column, claim_id", [("lens_entropy", "lens_entropy_falls"),
                                              ("lens_entropy_authors", "lens_entropy_falls_authors")])
def test_entropy_falls_per_lens(column, claim_id):
    falling = layer_tokens(**{column: lambda layer: 15.0 - layer})
    f = evaluate(claim_id, falling)
    t = falling["layer_stats_tokens.parquet"]
    m = t.groupby(["layer", "seq"])[column].mean().groupby("layer").mean()  # every point: embedding too
    assert f.value == pytest.approx(spearmanr(m.index, m.to_numpy()).statistic)
    assert f.verdict == HOLDS
    # each lens reads its own column: the other lens' falling entropy decides nothing
    other = "lens_entropy" if column == "lens_entropy_authors" else "lens_entropy_authors"
    flat_here = layer_tokens(**{column: lambda layer: 2.0 + (layer == 11) * 2, other: lambda layer: 15.0 - layer})
    assert evaluate(claim_id, flat_here).verdict != HOLDS
    assert evaluate(claim_id, layer_tokens(**{column: lambda layer: 1.0 + 0.3 * layer})).verdict == FAILS
    f = evaluate(claim_id, layer_tokens(**{other: lambda layer: 1.0}))
    assert f.verdict == INCONCLUSIVE and "no column" in f.detail


def neurons_table(n_layers, counts):
    """``counts[layer] = (n_prediction, n_suppression)``; 20 other neurons per layer."""
    rows = []
    for layer in range(n_layers):
        p, s = counts.get(layer, (0, 0))
        rows += [("prediction", layer)] * p + [("suppression", layer)] * s + [("other", layer)] * 20
    df = pd.DataFrame(rows, columns=["type", "layer"])
    df.insert(0, "model", "m")
    df["neuron"] = df.groupby("layer").cumcount()
    df["skew"] = 0.0
    df["kurtosis"] = 3.0
    return {"neurons.parquet": df}


def test_suppression_outnumber_prediction_in_the_last_layers():
    # 20 layers: the last tenth is layers 18, 19; layer 10 is outside and does not count
    tables = neurons_table(20, {10: (100, 0), 18: (5, 20), 19: (10, 30)})
    f = evaluate("suppression_outnumber_prediction", tables)
    k, n = 50, 65
    assert f.value == pytest.approx(k / n)
    assert f.lo == pytest.approx(beta.ppf(0.025, k, n - k + 1)) and f.hi == pytest.approx(beta.ppf(0.975, k + 1, n - k))
    assert f.verdict == HOLDS
    assert evaluate("suppression_outnumber_prediction", neurons_table(20, {19: (40, 10)})).verdict == FAILS
    assert evaluate("suppression_outnumber_prediction", neurons_table(20, {19: (10, 12)})).verdict == INCONCLUSIVE


# -- case studies ------------------------------------------------------------------------------


def subjoiner_table(scores, n_layers=12, n_heads=2, se=0.02):
    """``scores[(layer, head)]``; every other head scores 0."""
    rows = [{"model": "m", "layer": layer, "head": h, "n_layers": n_layers, "n_heads": n_heads,
             "rel_depth": layer / (n_layers - 1), "score": scores.get((layer, h), 0.0), "score_se": se}
            for layer in range(n_layers) for h in range(n_heads)]
    df = pd.DataFrame(rows)
    df["rank"] = df["score"].rank(ascending=False, method="first").astype(int)
    return {"subjoiner_scores.parquet": df}


def test_subjoiner_head_early():
    f = evaluate("subjoiner_head_early", subjoiner_table({(2, 1): 0.6, (9, 0): 0.9}))
    assert f.value == pytest.approx(0.6) and f.lo == pytest.approx(0.6 - 1.96 * 0.02, abs=1e-3)
    assert f.verdict == HOLDS and "L2H1" in f.detail
    late_only = subjoiner_table({(9, 0): 0.9, (1, 0): 0.05})
    assert evaluate("subjoiner_head_early", late_only).verdict == FAILS
    assert evaluate("subjoiner_head_early", subjoiner_table({(1, 0): 0.22}, se=0.05)).verdict == INCONCLUSIVE


def ing_table(single, ensemble, n_test=180):
    rows = [{"model": "m", "probe": "single", "n_neurons": 1, "order": i + 1, "layer": 5, "neuron": i,
             "test_accuracy": a, "n_test": n_test} for i, a in enumerate(single)]
    rows += [{"model": "m", "probe": "ensemble", "n_neurons": i + 1, "order": i + 1, "test_accuracy": a,
              "n_test": n_test} for i, a in enumerate(ensemble)]
    rows.append({"model": "m", "probe": "model_top1", "n_neurons": 0, "test_accuracy": 0.6, "n_test": n_test})
    return {"ing_probes.parquet": pd.DataFrame(rows)}


def test_ing_ensembles_beat_single_neurons():
    f = evaluate("ing_ensembles_beat_single_neurons", ing_table([0.6, 0.7, 0.55], [0.7, 0.8, 0.9]))
    se = np.sqrt(0.9 * 0.1 / 180 + 0.7 * 0.3 / 180)  # the full ensemble (last) against the best single
    assert f.value == pytest.approx(0.2) and f.se == pytest.approx(se)
    assert f.verdict == HOLDS
    assert evaluate("ing_ensembles_beat_single_neurons", ing_table([0.8], [0.8, 0.6])).verdict == FAILS
    assert evaluate("ing_ensembles_beat_single_neurons", ing_table([0.7], [0.72])).verdict == INCONCLUSIVE
    empty = {"ing_probes.parquet": ing_table([], [])["ing_probes.parquet"].iloc[:0]}
    assert evaluate("ing_ensembles_beat_single_neurons", empty).verdict == INCONCLUSIVE


# -- edits -------------------------------------------------------------------------------------


def cka_table(adjacent, n_layers=10):
    """``adjacent(layer)``: CKA of (layer, layer+1); other pairs 0.5."""
    rows = [{"model": "m", "layer_a": a, "layer_b": b, "n_layers": n_layers,
             "cka": 1.0 if a == b else adjacent(min(a, b)) if abs(a - b) == 1 else 0.5}
            for a in range(n_layers) for b in range(n_layers)]
    return {"cka.parquet": pd.DataFrame(rows)}


def test_cka_middle_block():
    # 10 layers: edge tenth = layer 0 and layer 9, so pairs (0,1) and (8,9) are the edges
    f = evaluate("cka_middle_block", cka_table(lambda layer: 0.8 if layer in (0, 8) else 0.95 + 0.001 * layer))
    middle = np.mean([0.95 + 0.001 * layer for layer in range(1, 8)])
    assert f.value == pytest.approx(middle - 0.8) and f.verdict == HOLDS
    assert evaluate("cka_middle_block", cka_table(lambda layer: 0.99 if layer in (0, 8) else 0.9)).verdict == FAILS


def spearman_table(rhos, ps):
    rows = [{"model": "m", "width": w, "predictor": p, "measure": m, "rho": r if m == "kl" else -r,
             "p_value": pv, "n_windows": 10, "picked_first": 3, "picked_kl": 0.1, "picked_rank": 1,
             "best_first": 3, "best_kl": 0.1}
            for (w, p), r, pv in zip([(1, "block_influence"), (1, "angular_last"), (2, "block_influence")], rhos, ps)
            for m in ("kl", "accuracy_retained")]
    return {"drop_predictors_spearman.parquet": pd.DataFrame(rows)}


def test_predictors_pick_harmless_drops():
    f = evaluate("predictors_pick_harmless_drops", spearman_table([0.7, 0.5, 0.6], [0.001, 0.01, 0.02]))
    assert f.value == pytest.approx(0.6) and f.verdict == HOLDS
    assert evaluate("predictors_pick_harmless_drops",
                    spearman_table([-0.7, -0.5, 0.1], [0.001, 0.01, 0.5])).verdict == FAILS
    assert evaluate("predictors_pick_harmless_drops",
                    spearman_table([0.7, -0.1, 0.6], [0.001, 0.8, 0.02])).verdict == INCONCLUSIVE


# -- helpers -----------------------------------------------------------------------------------


def test_per_document_sums_give_the_tables_aggregations():
    tables = layer_tokens(n_docs=4, lens_entropy_authors=lambda layer: 3.0 + layer, prev5_attn=lambda layer: 0.2)
    t = tables["layer_stats_tokens.parquet"]
    t.loc[t.index[::7], "lens_entropy_authors"] = np.nan  # the last position is NaN in the real table
    layers, s, n = paper.per_document(t, "lens_entropy_authors", by_document=True)
    want = t.groupby(["layer", "seq"])["lens_entropy_authors"].mean().groupby("layer").mean()
    np.testing.assert_allclose(s.sum(0) / n.sum(0), want.loc[layers].to_numpy(), rtol=1e-6)
    layers, s, n = paper.per_document(t[t["layer"] >= 0], "prev5_attn")
    np.testing.assert_allclose(s.sum(0) / n.sum(0), t[t["layer"] >= 0].groupby("layer")["prev5_attn"].mean(),
                               rtol=1e-6)


def test_every_paper_claim_is_tested_here():
    text = Path(__file__).read_text()
    ids = [c.id for c in load_claims().values() if c.evaluate.__module__ == paper.__name__]
    assert len(ids) >= 14
    assert not [i for i in ids if f'"{i}"' not in text and not i.startswith("retained_accuracy_")], ids


# -- the real tables of a finished run ---------------------------------------------------------

REAL = Path("/work/main/results/smollm2")


@pytest.mark.skipif(not REAL.exists(), reason="no finished SmolLM2 run here")
def test_claims_on_the_real_smollm2_tables():
    rows = 0
    for c in load_claims().values():
        if c.evaluate.__module__ != paper.__name__ or not all((REAL / t).exists() for t in c.tables):
            continue
        tables = {t: pd.read_parquet(REAL / t) if t.endswith(".parquet") else
                  pd.DataFrame([json.loads((REAL / t).read_text())]) for t in c.tables}
        f = c.evaluate({"smollm2": tables} if c.scope == "family" else tables)
        rows += 1
        assert f.verdict in VERDICTS
        # NaN only where an older run's table lacks a column, or the family has too few trained models
        assert np.isfinite(f.value) or "no column" in f.detail or c.scope == "family", (c.id, f)
    assert rows >= 10
