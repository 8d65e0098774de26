"""Concept features: activations -> selected features -> held-out probe accuracy.

*Activations.* The residual stream entering block ``layer`` (TransformerLens
``blocks.{layer}.hook_resid_pre``; default the middle block ``n_layers // 2``), read from
the core engine after one baseline pass (``engine.residual_in(layer)``).

* SAE training tokens: seeded corpus windows (``core.corpus``), every position but BOS.
* Stimulus sentences: ``[BOS] + sentence`` tokens, right-padded in a batch (causal
  attention: padding after a sentence cannot change its positions). Each sentence gives its
  *token pattern*, the first ``window`` tokens after BOS (zero-padded when shorter, as in
  the seed), and its *window mean*, the mean over those of its tokens (padding excluded).
  SAE features are computed per token and set to 0 on padding.

*Feature spaces.* ``raw`` = the residual stream's d_model dimensions; ``sae`` = the SAE's
features.

*Selection methods* (training split only), each giving the top ``top_k`` features:

* ``maxact``: the largest window-mean activation over training sentences of both
  classes (the seed's ``max_activation``: magnitude only, no use of the labels);
* ``rsa_categorical``, ``rsa_discriminative``: :mod:`.rsa`.

*Probe.* L1 logistic regression (liblinear, ``C``) on the standardised window means of the
selected features, fit on the training split, scored on the held-out split.

*Splits.* Sentences come in matched pairs (line i of ``<concept>_positive.txt`` and of
``<concept>_negative.txt``); a split holds out ``test_fraction`` of the pairs, both members
together, so the test set stays balanced and no training sentence is a near-copy of a
test sentence. ``n_splits`` seeded splits per concept; the mean accuracy gets a 95%
interval from the corrected resampled t (Nadeau & Bengio 2003: the variance over splits
is inflated by ``1/J + n_test/n_train`` because random splits overlap; the naive interval
would be far too narrow).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats
from tqdm.auto import tqdm

from ..core.settings import Settings
from .rsa import RSA_METHODS, rsa_scores

log = logging.getLogger(__name__)

SPACES = ("raw", "sae")
METHODS = ("maxact",) + RSA_METHODS


@dataclass
class ConceptSpec(Settings):
    section: ClassVar[str] = "concepts"
    shared_keys: ClassVar[frozenset[str]] = frozenset({"sae", "stimuli"})  # the SAE's block; the rule's input
    concepts: tuple = ("success", "danger")
    layer: int | None = None
    window: int = 16
    top_k: int = 8
    n_splits: int = 20
    test_fraction: float = 0.25
    C: float = 1.0
    seed: int = 0
    batch_size: int = 32

    def check(self) -> None:
        self.concepts = tuple(self.concepts)
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"concepts.test_fraction is {self.test_fraction}; use a value in (0, 1).")
        if self.n_splits < 2:
            raise ValueError(f"concepts.n_splits is {self.n_splits}; use at least 2 (intervals need repeats).")


def resolve_layer(layer: int | None, n_layers: int) -> int:
    layer = n_layers // 2 if layer is None else int(layer)
    if not 0 <= layer < n_layers:
        raise ValueError(f"concepts.layer is {layer}; the model has blocks 0..{n_layers - 1}.")
    return layer


# -- activations ---------------------------------------------------------------------------
def sentence_ids(tokenizer, sentences: Sequence[str]) -> list[list[int]]:
    bos = tokenizer.bos_token_id
    prefix = [bos] if bos is not None else []
    return [prefix + tokenizer(s, add_special_tokens=False)["input_ids"] for s in sentences]


class _StopForward(Exception):
    pass


@torch.no_grad()
def residual_upto(engine, input_ids: torch.Tensor, layer: int) -> torch.Tensor:
    """The residual entering block ``layer`` (what ``engine.baseline(ids)`` followed by
    ``engine.residual_in(layer)`` returns), without running the blocks after it or the
    unembedding: a forward pre-hook on that block captures its input and stops the pass.
    Half the cost of a baseline pass at the middle layer (tested against it).
    # TODO(lead): a candidate for core.engine (``engine.residual_upto(ids, layer)``).
    """
    if getattr(engine, "attn_implementation", None) == "bridge":
        engine.baseline(input_ids.to(engine.device))
        return engine.residual_in(layer)
    captured = {}

    def hook(module, args, kwargs):
        captured["hidden"] = args[0] if args else kwargs["hidden_states"]
        raise _StopForward

    handle = engine.blocks[layer].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        engine.model(input_ids=input_ids.to(engine.device), use_cache=False)
    except _StopForward:
        pass
    finally:
        handle.remove()
    return captured["hidden"]


def residual_batches(engine, batches, layer: int):
    """Yield the residual entering block ``layer`` for each batch of input ids."""
    for ids in batches:
        yield residual_upto(engine, ids, layer).float().cpu()


def stimulus_patterns(engine, ids: Sequence[Sequence[int]], layer: int, window: int, first: int,
                      batch_size: int = 32, pad_id: int = 0):
    """Token patterns [n, window, d] (zero-padded) and the number of real tokens in each
    window [n], from the residual entering block ``layer``; ``first`` = 1 skips BOS."""
    n = len(ids)
    out, lengths = None, np.zeros(n, dtype=np.int64)
    # batches of similar lengths (less padding); only the first + window tokens are needed
    order = sorted(range(n), key=lambda i: len(ids[i]))
    starts = list(range(0, n, batch_size))
    for start in tqdm(starts, desc="stimuli", disable=len(starts) < 4):
        rows = order[start : start + batch_size]
        seqs = [list(ids[i])[: first + window] for i in rows]
        batch = torch.full((len(seqs), max(len(q) for q in seqs)), pad_id, dtype=torch.long)
        for j, q in enumerate(seqs):
            batch[j, : len(q)] = torch.tensor(q)
        resid = residual_upto(engine, batch, layer).float().cpu()
        if out is None:
            out = torch.zeros(n, window, resid.shape[-1])
        for j, (i, q) in enumerate(zip(rows, seqs)):
            m = len(q) - first
            out[i, :m] = resid[j, first : first + m]
            lengths[i] = m
    return out, lengths


def corpus_residuals(engine, tokens: torch.Tensor, layer: int, first: int, batch_size: int = 8) -> torch.Tensor:
    """Residual vectors [N * (T - first), d] of corpus windows, every position from ``first``."""
    chunks = []
    batches = [tokens[i : i + batch_size] for i in range(0, len(tokens), batch_size)]
    for resid in tqdm(residual_batches(engine, batches, layer), total=len(batches), desc="corpus"):
        chunks.append(resid[:, first:].reshape(-1, resid.shape[-1]))
    return torch.cat(chunks)


def sae_patterns(sae, patterns: torch.Tensor, lengths: np.ndarray, batch: int = 64) -> torch.Tensor:
    """SAE features of token patterns [n, W, d] -> [n, W, d_sae], 0 on padding."""
    out = []
    with torch.no_grad():
        for i in range(0, len(patterns), batch):
            out.append(sae.features(patterns[i : i + batch]))
    feats = torch.cat(out)
    mask = torch.arange(patterns.shape[1])[None, :] < torch.as_tensor(lengths)[:, None]
    return feats * mask[:, :, None]


def window_means(patterns: torch.Tensor, lengths: np.ndarray) -> np.ndarray:
    lengths = torch.as_tensor(lengths).clamp(min=1).float()
    return (patterns.sum(dim=1) / lengths[:, None]).numpy()


# -- splits, selection, probes -----------------------------------------------------------
def pair_splits(n_pairs: int, n_splits: int, test_fraction: float, seed: int) -> np.ndarray:
    """[n_splits, n_pairs] boolean: which pairs are held out in each split."""
    rng = np.random.default_rng(seed)
    n_test = max(1, int(round(test_fraction * n_pairs)))
    if n_test >= n_pairs:
        raise ValueError(f"{n_pairs} sentence pairs cannot give a training split at test_fraction {test_fraction}.")
    out = np.zeros((n_splits, n_pairs), dtype=bool)
    for s in range(n_splits):
        out[s, rng.permutation(n_pairs)[:n_test]] = True
    return out


def maxact_scores(means: np.ndarray, train: np.ndarray) -> np.ndarray:
    """[S, F]: the largest window-mean activation over each split's training sentences."""
    return np.stack([means[row].max(axis=0) for row in np.atleast_2d(train)])


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores, best first (ties: lower index first)."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    return order[:k]


def probe_accuracy(x_train, y_train, x_test, y_test, C: float, seed: int) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import sklearn

    # the L1 penalty, as in the seed; scikit-learn >= 1.8 spells penalty="l1" as l1_ratio=1
    new = tuple(int(v) for v in sklearn.__version__.split(".")[:2]) >= (1, 8)
    l1 = {"l1_ratio": 1.0} if new else {"penalty": "l1"}
    clf = make_pipeline(StandardScaler(), LogisticRegression(solver="liblinear", C=C, random_state=seed,
                                                             max_iter=1000, **l1))
    clf.fit(x_train, y_train)
    return float(clf.score(x_train, y_train)), float(clf.score(x_test, y_test))


def concept_probes(model: str, concept: str, spaces: dict[str, tuple[torch.Tensor, np.ndarray]],
                   labels: np.ndarray, pair_ids: np.ndarray, spec: ConceptSpec) -> pd.DataFrame:
    """Every (space, method, split): the selected features and the probe's accuracies.

    ``spaces`` maps a space name to (token patterns [n, W, F], window means [n, F]).
    """
    n_pairs = int(pair_ids.max()) + 1
    held_pairs = pair_splits(n_pairs, spec.n_splits, spec.test_fraction, spec.seed)
    test = held_pairs[:, pair_ids]  # [S, n]
    train = ~test
    rows = []
    for space, (patterns, means) in spaces.items():
        scores = {"maxact": maxact_scores(means, train), **rsa_scores(patterns, labels, train)}
        for method in METHODS:
            for s in range(spec.n_splits):
                chosen = top_k(scores[method][s], spec.top_k)
                tr, te = train[s], test[s]
                acc_train, acc_test = probe_accuracy(means[tr][:, chosen], labels[tr], means[te][:, chosen],
                                                     labels[te], spec.C, spec.seed + s)
                rows.append({
                    "model": model, "concept": concept, "space": space, "method": method, "split": s,
                    "k": len(chosen), "n_train": int(tr.sum()), "n_test": int(te.sum()),
                    "train_accuracy": acc_train, "test_accuracy": acc_test,
                    "features": chosen.astype(np.int64).tolist(),
                    "scores": scores[method][s][chosen].astype(float).tolist(),
                })
    return pd.DataFrame(rows)


# -- summaries ---------------------------------------------------------------------------
def corrected_interval(values: np.ndarray, n_train: float, n_test: float, level: float = 0.95):
    """Mean and corrected resampled-t interval (Nadeau & Bengio) of per-split values."""
    values = np.asarray(values, dtype=float)
    j = len(values)
    mean = float(values.mean())
    if j < 2:
        return mean, float("nan"), float("nan")
    var = values.var(ddof=1) * (1 / j + n_test / n_train)
    half = stats.t.ppf(0.5 + level / 2, j - 1) * np.sqrt(var)
    return mean, mean - half, mean + half


def method_summary(probes: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (model, concept, space, method), g in probes.groupby(["model", "concept", "space", "method"], sort=False):
        mean, lo, hi = corrected_interval(g["test_accuracy"], g["n_train"].mean(), g["n_test"].mean())
        rows.append({"model": model, "concept": concept, "space": space, "method": method,
                     "n_splits": len(g), "test_accuracy": mean, "ci_low": lo, "ci_high": hi,
                     "sd": float(g["test_accuracy"].std(ddof=1)),
                     "train_accuracy": float(g["train_accuracy"].mean())})
    return pd.DataFrame(rows)


# The seed's three findings as paired per-split differences of held-out accuracy.
FINDINGS = {
    "rsa_vs_maxact": ("RSA > max activation", "method", ("rsa_categorical", "rsa_discriminative"), ("maxact",)),
    "sae_vs_raw": ("SAE > raw activations", "space", ("sae",), ("raw",)),
    "discriminative_vs_categorical": ("RSA discriminative >= categorical", "method",
                                      ("rsa_discriminative",), ("rsa_categorical",)),
}


def findings(probes: pd.DataFrame) -> pd.DataFrame:
    """Each finding's mean accuracy difference (a - b) with corrected 95% intervals, per
    model and concept and pooled over concepts (per split, the concepts' mean).

    ``scope`` = ``all``: averaged over the other axis (both spaces for the method findings,
    all methods for SAE vs raw), as in the seed's summary; the other scopes restrict it to
    one space (method findings) or one method (SAE vs raw)."""
    rows = []
    wide = probes.pivot_table(index=["model", "concept", "split"], columns=["space", "method"],
                              values="test_accuracy")
    n_train = probes.groupby(["model", "concept"])["n_train"].mean()
    n_test = probes.groupby(["model", "concept"])["n_test"].mean()
    for key, (label, axis, a, b) in FINDINGS.items():
        level = 0 if axis == "space" else 1
        other = 1 - level
        cols = list(wide.columns)
        scopes = ["all"] + sorted({c[other] for c in cols})
        for scope in scopes:
            keep = [c for c in cols if scope == "all" or c[other] == scope]
            in_a = [c for c in keep if c[level] in a]
            in_b = [c for c in keep if c[level] in b]
            if not in_a or not in_b:
                continue
            diff = wide[in_a].mean(axis=1) - wide[in_b].mean(axis=1)
            for model, per_model in diff.groupby(level="model"):
                concepts = per_model.index.get_level_values("concept").unique()
                for concept in list(concepts) + ["pooled"]:
                    if concept == "pooled":
                        values = per_model.groupby(level="split").mean()
                        ntr = float(n_train[model].mean())
                        nte = float(n_test[model].mean())
                    else:
                        values = per_model.xs(concept, level="concept")
                        ntr, nte = float(n_train[(model, concept)]), float(n_test[(model, concept)])
                    mean, lo, hi = corrected_interval(values.to_numpy(), ntr, nte)
                    rows.append({"model": model, "concept": concept, "finding": key, "label": label,
                                 "scope": scope, "difference": mean, "ci_low": lo, "ci_high": hi,
                                 "n_splits": len(values),
                                 "holds": bool(lo > 0), "reversed": bool(hi < 0)})
    return pd.DataFrame(rows)
