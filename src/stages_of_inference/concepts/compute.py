"""Concept features: activations -> selected features -> held-out probe accuracy.

*Activations.* The residual stream entering block ``layer`` (TransformerLens
``blocks.{layer}.hook_resid_pre``; default the middle block ``n_layers // 2``), from the
core engine's ``run_to(ids, layer)``: blocks 0..layer-1 run, then the pass stops.

* SAE training tokens: seeded corpus windows (``core.corpus``), every position but BOS.
* Stimulus sentences: ``[BOS] + sentence`` tokens, right-padded in a batch (causal
  attention: padding after a sentence cannot change its positions). Each sentence gives its
  *token pattern*, the first ``window`` tokens after BOS (zero-padded when shorter), and
  its *window mean*, the mean over those of its tokens (padding excluded).
  SAE features are computed per token and set to 0 on padding.

*Feature spaces.* ``raw`` = the residual stream's d_model dimensions; ``sae`` = the SAE's
features.

*Selection methods* (training split only), each giving the top ``top_k`` features:

* ``maxact`` (the seed README's "maximum activations"; this definition is ours): the
  largest window-mean activation over training sentences of both classes (magnitude only,
  no use of the labels);
* ``rsa_categorical``, ``rsa_discriminative``: :mod:`.rsa`. A feature whose RSA score rests
  on fewer than ``rsa_min_pairs`` (default 45) defined sentence pairs on either side of its
  t test, or whose t statistic has a standard error below ``rsa_min_se`` (default 0.001,
  Fisher-z units), is refused: it has no score and is never selected (an SAE feature that
  fires on 4 of 120 training sentences has a t of rounding noise and was the top pick of
  4 of 20 splits per concept on SmolLM2 without the rule). Where fewer than ``top_k``
  features have a score, fewer are selected; with none the probe is the intercept-only one
  (it predicts the training split's majority class).

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
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats
from tqdm.auto import tqdm

from ..core.engine import batched
from ..core.probes import probe_accuracy
from .rsa import RSA_METHODS, rsa_scores
from .settings import ConceptSettings, SAESettings

log = logging.getLogger(__name__)

SPACES = ("raw", "sae")
METHODS = ("maxact",) + RSA_METHODS


def resolve_layer(layer: int | None, n_layers: int) -> int:
    layer = n_layers // 2 if layer is None else int(layer)
    if not 0 <= layer < n_layers:
        raise ValueError(f"concepts.layer is {layer}; the model has blocks 0..{n_layers - 1}.")
    return layer


# -- stimuli -------------------------------------------------------------------------------
SIDES = ((1, "positive"), (0, "negative"))


def load_stimuli(files: Sequence[str], concepts: Sequence[str]) -> pd.DataFrame:
    """The stimulus sentences of ``concepts`` from ``files`` (the rule's input list):
    ``<concept>_positive.txt`` and ``<concept>_negative.txt``, one sentence a line; line i
    of both files is a matched pair. Rows: per concept, the positives, then the negatives."""
    by_name = {Path(f).name: Path(f) for f in files}
    rows = []
    for concept in concepts:
        texts = {}
        for label, side in SIDES:
            name = f"{concept}_{side}.txt"
            path = by_name.get(name)
            if path is None or not path.exists():
                raise FileNotFoundError(f"concept {concept!r}: no stimulus file {name} "
                                        f"({path if path is not None else 'not among the inputs'})")
            texts[label] = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if len(texts[1]) != len(texts[0]):
            raise ValueError(f"concept {concept!r}: {len(texts[1])} positive but {len(texts[0])} negative "
                             f"sentences; the files must be line-matched pairs.")
        for label, _ in SIDES:
            for pair, text in enumerate(texts[label]):
                rows.append({"concept": concept, "label": label, "pair_id": pair, "text": text})
    df = pd.DataFrame(rows)
    df.insert(0, "sentence_id", np.arange(len(df)))
    return df


# -- activations ---------------------------------------------------------------------------
def sentence_ids(tokenizer, sentences: Sequence[str]) -> list[list[int]]:
    bos = tokenizer.bos_token_id
    prefix = [bos] if bos is not None else []
    return [prefix + tokenizer(s, add_special_tokens=False)["input_ids"] for s in sentences]


@torch.no_grad()
def stimulus_patterns(engine, ids: Sequence[Sequence[int]], layer: int, window: int, first: int,
                      batch_size: int = 32, pad_id: int = 0):
    """Token patterns [n, window, d] (zero-padded) and the number of real tokens in each
    window [n], from the residual entering block ``layer``; ``first`` = 1 skips BOS."""
    n = len(ids)
    out, lengths = torch.zeros(n, window, engine.d_model), np.zeros(n, dtype=np.int64)
    # batches of similar lengths (less padding); only the first + window tokens are needed
    order = sorted(range(n), key=lambda i: len(ids[i]))

    def run(start: int, stop: int) -> None:
        rows = order[start:stop]
        seqs = [list(ids[i])[: first + window] for i in rows]
        batch = torch.full((len(seqs), max(len(q) for q in seqs)), pad_id, dtype=torch.long)
        for j, q in enumerate(seqs):
            batch[j, : len(q)] = torch.tensor(q)
        resid = engine.run_to(batch.to(engine.device), layer).float().cpu()
        for j, (i, q) in enumerate(zip(rows, seqs)):
            m = len(q) - first
            out[i, :m] = resid[j, first : first + m]
            lengths[i] = m

    with tqdm(total=n, desc="stimuli", disable=n <= 3 * batch_size) as bar:
        batched(n, batch_size, run, progress=bar)
    return out, lengths


@torch.no_grad()
def corpus_residuals(engine, tokens: torch.Tensor, layer: int, first: int, batch_size: int = 8) -> torch.Tensor:
    """Residual vectors [N * (T - first), d] of corpus windows, every position from ``first``."""

    def run(start: int, stop: int) -> torch.Tensor:
        resid = engine.run_to(tokens[start:stop].to(engine.device), layer).float().cpu()
        return resid[:, first:].reshape(-1, resid.shape[-1])

    with tqdm(total=len(tokens), desc="corpus") as bar:
        return torch.cat(batched(len(tokens), batch_size, run, progress=bar))


def sae_corpus_residuals(engine, tokenizer, corpus: dict, sae: SAESettings, layer: int) -> tuple[torch.Tensor, dict]:
    """The SAE's training tokens: residual vectors of ``sae.n_sequences`` corpus windows of
    ``sae.seq_len`` drawn with ``sae.corpus_seed`` (the ``corpus`` section's source), BOS
    excluded; and a record of what they are."""
    from ..core.corpus import CorpusSettings, sample_sequences

    t0 = time.perf_counter()
    spec = CorpusSettings.from_config({**corpus, "n_sequences": sae.n_sequences, "seq_len": sae.seq_len,
                                   "seed": sae.corpus_seed})
    tokens, record = sample_sequences(spec, tokenizer)
    first = 1 if record["has_bos"] else 0
    resid = corpus_residuals(engine, tokens, layer, first, sae.batch_size)
    log.info("%d corpus tokens (%d x %d windows, BOS excluded) in %.1f s", len(resid), *tokens.shape,
             time.perf_counter() - t0)
    return resid, {"layer": layer, "n_sequences": len(tokens), "seq_len": tokens.shape[1], "corpus_seed": spec.seed,
                   "first": first}


def stimulus_activations(model: str, engine, tokenizer, sentences: pd.DataFrame, spec: ConceptSettings,
                         layer: int) -> tuple[torch.Tensor, np.ndarray, pd.DataFrame]:
    """Token patterns [n, window, d] and real-token counts [n] of the stimulus sentences
    (:func:`load_stimuli`), and the sentence table with the model, token counts and layer."""
    t0 = time.perf_counter()
    first = 1 if tokenizer.bos_token_id is not None else 0
    ids = sentence_ids(tokenizer, sentences["text"].tolist())
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    patterns, lengths = stimulus_patterns(engine, ids, layer, spec.window, first, spec.batch_size, pad)
    sentences = sentences.copy()
    sentences["n_tokens"] = [len(i) - first for i in ids]
    sentences["window_tokens"] = lengths
    sentences.insert(0, "model", model)
    sentences["layer"] = layer
    log.info("%s: %d stimulus sentences (%s), %.1f tokens on average (window %d) in %.1f s", model,
             len(sentences), ", ".join(spec.concepts), sentences["n_tokens"].mean(), spec.window,
             time.perf_counter() - t0)
    return patterns, lengths, sentences


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
    """Indices of the ``k`` highest scores, best first (ties: lower index first); a NaN
    score (a refused feature, :mod:`.rsa`) is never selected, so fewer than ``k`` may come
    back."""
    scores = np.asarray(scores, dtype=float)
    order = np.lexsort((np.arange(len(scores)), -scores))
    return order[np.isfinite(scores[order])][:k]


def majority_accuracy(y_train: np.ndarray, y_test: np.ndarray) -> tuple[float, float]:
    """Train and held-out accuracy of the intercept-only probe (no features): it predicts
    the training split's majority class (ties: class 0, as a logistic regression whose
    probability is exactly 0.5 does)."""
    guess = int(np.mean(y_train) > 0.5)
    return float(np.mean(y_train == guess)), float(np.mean(y_test == guess))


def probe_concept(model: str, concept: str, spaces: dict[str, tuple[torch.Tensor, np.ndarray]],
                  labels: np.ndarray, pair_ids: np.ndarray, spec: ConceptSettings) -> pd.DataFrame:
    """Every (space, method, split): the selected features (``k`` of them, at most
    ``top_k``), how many features the RSA rule refused (``refused``; 0 for ``maxact``) and
    the probe's accuracies.

    ``spaces`` maps a space name to (token patterns [n, W, F], window means [n, F]).
    """
    n_pairs = int(pair_ids.max()) + 1
    held_pairs = pair_splits(n_pairs, spec.n_splits, spec.test_fraction, spec.seed)
    test = held_pairs[:, pair_ids]  # [S, n]
    train = ~test
    rows = []
    for space, (patterns, means) in spaces.items():
        scores = {"maxact": maxact_scores(means, train),
                  **rsa_scores(patterns, labels, train, min_pairs=spec.rsa_min_pairs, min_se=spec.rsa_min_se)}
        for method in METHODS:
            refused = (~np.isfinite(scores[method])).sum(axis=1)
            if method in RSA_METHODS:
                log.info("%s %s %s %s: %.0f of %d features refused per split on average (rsa_min_pairs %d, "
                         "rsa_min_se %g)", model, concept, space, method, refused.mean(), scores[method].shape[1],
                         spec.rsa_min_pairs, spec.rsa_min_se)
            for s in range(spec.n_splits):
                chosen = top_k(scores[method][s], spec.top_k)
                tr, te = train[s], test[s]
                if len(chosen):
                    acc_train, acc_test = probe_accuracy(means[tr][:, chosen], labels[tr], means[te][:, chosen],
                                                         labels[te], seed=spec.seed + s, C=spec.C, l1=True,
                                                         max_iter=1000)
                else:
                    acc_train, acc_test = majority_accuracy(labels[tr], labels[te])
                rows.append({
                    "model": model, "concept": concept, "space": space, "method": method, "split": s,
                    "k": len(chosen), "refused": int(refused[s]), "n_train": int(tr.sum()), "n_test": int(te.sum()),
                    "train_accuracy": acc_train, "test_accuracy": acc_test,
                    "features": chosen.astype(np.int64).tolist(),
                    "scores": scores[method][s][chosen].astype(float).tolist(),
                })
    return pd.DataFrame(rows)


def probe_concepts(model: str, patterns: torch.Tensor, lengths: np.ndarray, sentences: pd.DataFrame, sae,
                   spec: ConceptSettings) -> pd.DataFrame:
    """:func:`probe_concept` for every concept of ``spec``, in the raw and the SAE space:
    ``patterns`` [n, W, d] and ``lengths`` [n] are the rows of ``sentences``."""
    frames = []
    t0 = time.perf_counter()
    for concept in spec.concepts:
        rows = np.flatnonzero(sentences["concept"].to_numpy() == concept)
        raw = patterns[rows]
        feats = sae_patterns(sae, raw, lengths[rows])
        spaces = {"raw": (raw, window_means(raw, lengths[rows])),
                  "sae": (feats, window_means(feats, lengths[rows]))}
        assert tuple(spaces) == SPACES
        frames.append(probe_concept(model, concept, spaces, sentences["label"].to_numpy()[rows],
                                    sentences["pair_id"].to_numpy()[rows], spec))
        log.info("%s: concept %r done (%.1f s so far)", model, concept, time.perf_counter() - t0)
    return pd.concat(frames, ignore_index=True)


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


# The three findings of the seed README's tl;dr, as paired per-split differences of held-out accuracy.
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
    all methods for SAE vs raw); the other scopes restrict it to
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


def concept_results(model: str, patterns: torch.Tensor, lengths: np.ndarray, sentences: pd.DataFrame, sae,
                    spec: ConceptSettings) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The per-split probes (:func:`probe_concepts`), their summary per (concept, space,
    method) and the findings; the summary and the pooled findings are logged."""
    probes = probe_concepts(model, patterns, lengths, sentences, sae, spec)
    summary = method_summary(probes)
    found = findings(probes)
    for r in summary.itertuples():
        log.info("%s %-8s %-4s %-19s held-out accuracy %.3f [%.3f, %.3f]", model, r.concept, r.space, r.method,
                 r.test_accuracy, r.ci_low, r.ci_high)
    for r in found[found["concept"] == "pooled"].itertuples():
        log.info("%s finding %-30s difference %+.3f [%+.3f, %+.3f]", model, r.label, r.difference, r.ci_low,
                 r.ci_high)
    return probes, summary, found
