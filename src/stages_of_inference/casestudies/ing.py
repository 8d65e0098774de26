"""Predicting the suffix "ing" (FIGURES.md, Figure 10).

*ing tokens.* A vocabulary token is an *ing token* when its text, without surrounding
whitespace, is letters only and ends in ``ing`` (``" running"``, ``"ing"``, ``"ting"``).

*Prompts* (``build_prompts``). From the configured corpus (standalone lower-case words,
:mod:`stages_of_inference.casestudies.words`), the position just before the *last* token of a word:

* positive: the word ends in ``ing`` and its last token is an ing token (``" runn|ing"``,
  or ``" running"`` as one token);
* negative: the word does not end in ``ing`` (its last token is then not an ing token).

Words ending in ``ing`` whose last token is not an ing token (``"runnin|g"``) are left
out. Each prompt is ``[BOS] + context_tokens`` tokens of the document ending just before
that token, so the *label* is "the next token ends a word in -ing" (1) or not (0).
The set is balanced: ``n_prompts`` positives (seeded, at most ``max_per_word`` per word)
and as many negatives, matched on whether the next token continues a word that the
prompt's last token began (so a probe cannot win by detecting "inside a word"). A
stratified held-out split (``test_fraction``, ``seed``) is fixed with the prompts.

*Neurons* (``ing_neuron_table``, ``select_neurons``). With the folded weights of
:func:`stages_of_inference.core.neurons.folded_weights`, every MLP neuron gets the cosines
``cos(w_out, W_U[:, v])`` over the vocabulary, and its *ing separation*: the standardised
mean difference ``(mean over ing tokens − mean over other tokens) / std over the
vocabulary``. Prediction neurons for "ing" are those with the largest positive
separation, suppression neurons those with the most negative; with ``require_type`` they
are taken first among the Universal-Neurons prediction (resp. suppression) neurons
(kurtosis > 10, skew > 0 resp. < 0), filling up from the rest when there are too few.

*Probes* (``fit_probes``). Logistic regression (scikit-learn, standardised inputs) on the
post-nonlinearity activation at the last position (``blocks.{L}.mlp.hook_post``, the
input of the MLP's output projection) of each selected neuron alone, and of growing
ensembles (neurons added in order of |separation|), trained on the training split and
scored on the held-out split. *The model's accuracy* is measured the same way on the
same held-out prompts: the model "says ing" when its top-1 next token is an ing token,
and is right when that matches the label.
"""
from __future__ import annotations

import logging
from typing import ClassVar, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from ..core.settings import Settings
from .words import bos_prefix, cap_per_word, display_token, scan_corpus

log = logging.getLogger(__name__)

SUFFIX = "ing"
ROLES = ("prediction", "suppression")
PROMPT_COLUMNS = ["model", "prompt_id", "label", "continues_word", "word", "n_subtokens", "doc",
                  "char_start", "next_token_id", "next_token", "split", "input_ids"]
PREDICTION_COLUMNS = ["model_top1_id", "model_top1", "model_says_ing", "model_p_ing", "model_top1_correct"]
NEURON_COLUMNS = ["model", "layer", "neuron", "ing_mean", "other_mean", "ing_separation", "skew",
                  "kurtosis", "type", "role", "role_rank", "order"]
VOCAB_COLUMNS = ["model", "role", "layer", "neuron", "token_id", "token", "is_ing", "cosine"]
ACTIVATION_COLUMNS = ["model", "prompt_id", "layer", "neuron", "activation"]
PROBE_COLUMNS = ["model", "probe", "n_neurons", "order", "layer", "neuron", "role", "type",
                 "ing_separation", "train_accuracy", "test_accuracy", "n_train", "n_test"]


class IngSettings(Settings):
    """``casestudies.ing`` (keys and defaults: config/schema.yaml)."""

    section: ClassVar[str] = "casestudies.ing"


def is_ing_string(text: str) -> bool:
    word = text.strip()
    return word.isalpha() and word.lower().endswith(SUFFIX)


def token_strings(tokenizer, n: int | None = None) -> list[str]:
    """The text of every token id ``0..n-1`` decoded alone (``tokenizer.decode([i])``).

    A fast tokenizer that does not clean up spaces decodes in one call of its Rust backend
    (the same strings as ``batch_decode``, without its per-token Python work); others go
    through ``batch_decode``. Gemma 3 has 262,144 tokens: decode once per job and pass the
    strings on (``ing_mask(..., strings=...)``, :func:`vocab_table`).
    """
    n = len(tokenizer) if n is None else min(n, len(tokenizer))
    ids = [[i] for i in range(n)]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if getattr(tokenizer, "is_fast", False) and backend is not None and not tokenizer.clean_up_tokenization_spaces:
        return backend.decode_batch(ids, skip_special_tokens=False)
    return tokenizer.batch_decode(ids)


def ing_mask(tokenizer, d_vocab: int, strings: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(is_ing [d_vocab], is_real [d_vocab])``; columns past the tokenizer are padding.
    ``strings``: :func:`token_strings` already decoded (else decoded here)."""
    if strings is None:
        strings = token_strings(tokenizer, d_vocab)
    strings = strings[:d_vocab]
    is_ing = np.zeros(d_vocab, dtype=bool)
    is_real = np.zeros(d_vocab, dtype=bool)
    is_ing[: len(strings)] = [is_ing_string(s) for s in strings]
    is_real[: len(strings)] = True
    return is_ing, is_real


# -- prompts ----------------------------------------------------------------------------


def build_prompts(documents: Iterable[str], tokenizer, settings: IngSettings, model: str = "") -> pd.DataFrame:
    """Balanced ing / non-ing next-token prompts with a fixed held-out split."""
    ids, words = scan_corpus(documents, tokenizer)
    c = settings.context_tokens
    words = [w for w in words if w.last >= c]
    last_is_ing = {}
    for w in words:
        tid = int(ids[w.doc][w.last])
        if tid not in last_is_ing:
            last_is_ing[tid] = is_ing_string(tokenizer.decode([tid]))
    positives = [w for w in words if w.word.endswith(SUFFIX) and last_is_ing[int(ids[w.doc][w.last])]]
    negatives = [w for w in words if not w.word.endswith(SUFFIX)]
    rng = np.random.default_rng(settings.seed)
    positives = cap_per_word(positives, settings.max_per_word, rng)[: settings.n_prompts]
    chosen = [(w, 1) for w in positives]
    for continues in (False, True):
        want = sum((w.n_subtokens > 1) == continues for w in positives)
        pool = [w for w in negatives if (w.n_subtokens > 1) == continues]
        picked = cap_per_word(pool, settings.max_per_word, rng)[:want]
        if len(picked) < want:
            log.warning("%s: only %d of %d matched negatives (continues_word=%s)", model, len(picked), want, continues)
        chosen += [(w, 0) for w in picked]
    log.info("%s: %d -ing positives (%d continue a word), %d negatives", model, len(positives),
             sum(w.n_subtokens > 1 for w in positives), len(chosen) - len(positives))
    bos = bos_prefix(tokenizer)
    rows = []
    for w, label in chosen:
        nxt = int(ids[w.doc][w.last])
        rows.append(
            {
                "model": model,
                "prompt_id": len(rows),
                "label": label,
                "continues_word": w.n_subtokens > 1,
                "word": w.word,
                "n_subtokens": w.n_subtokens,
                "doc": w.doc,
                "char_start": w.char_start,
                "next_token_id": nxt,
                "next_token": display_token(tokenizer, nxt),
                "split": "train",
                "input_ids": bos + ids[w.doc][w.last - c : w.last].tolist(),
            }
        )
    df = pd.DataFrame(rows, columns=PROMPT_COLUMNS)
    df["split"] = assign_split(df["label"].to_numpy() * 2 + df["continues_word"].to_numpy(), settings)
    return df


def assign_split(strata: np.ndarray, settings: IngSettings) -> np.ndarray:
    """Seeded stratified train/test assignment (each stratum split ``test_fraction``)."""
    rng = np.random.default_rng(settings.seed + 1)
    split = np.full(len(strata), "train", dtype=object)
    for value in np.unique(strata):
        index = rng.permutation(np.flatnonzero(strata == value))
        n_test = int(round(settings.test_fraction * len(index)))
        split[index[:n_test]] = "test"
    return split


# -- neurons ----------------------------------------------------------------------------


@torch.no_grad()
def ing_neuron_table(w_out: torch.Tensor, w_u: torch.Tensor, is_ing: np.ndarray, is_real: np.ndarray,
                     model: str = "", chunk: int = 256, moments_table: pd.DataFrame | None = None,
                     vocab_chunk: int = 16384) -> pd.DataFrame:
    """ing separation, skew, kurtosis and Universal-Neurons type of every MLP neuron.

    ``w_out`` ``[n_layers, d_mlp, d_model]`` and ``w_u`` ``[d_model, d_vocab]`` are the
    folded weights (:func:`stages_of_inference.core.neurons.folded_weights`).

    The separation needs only first and second moments of the cosines over the vocabulary,
    so it is computed in closed form from unit unembedding columns ``û_v``: with
    ``ŵ = w_out / |w_out|``, the mean cosine over a token set S is ``ŵ · mean_{v∈S} û_v`` and
    the variance over the vocabulary is ``ŵᵀ Σ ŵ`` with ``Σ`` the ``d_model × d_model``
    covariance of the ``û_v`` (:func:`unit_column_moments`, ``vocab_chunk`` columns at a
    time): no ``n_neurons × d_vocab`` matrix. Skew and
    kurtosis (the neuron *type*) are taken from ``moments_table`` (the ``neurons`` rule's
    table, same weights and definitions) when given, else computed from the cosines.
    """
    from ..core.neurons import _unit, classify, layer_frame, layer_moments

    ing = torch.as_tensor(is_ing)
    other = torch.as_tensor(is_real & ~is_ing)
    if ing.sum() == 0:
        raise ValueError("the vocabulary has no ing tokens")
    _, mu_ing, mu_other, cov = unit_column_moments(w_u, ing, other, chunk=vocab_chunk)
    if moments_table is not None:
        moments_table = moments_table.set_index(["layer", "neuron"]).sort_index()
        u_float = None
    else:
        u_float = _unit(w_u, 0)
    frames = []
    for layer in range(w_out.shape[0]):
        w = _unit(w_out[layer].double(), 1)
        ing_mean = (w @ mu_ing).numpy()
        other_mean = (w @ mu_other).numpy()
        std = torch.einsum("nd,de,ne->n", w, cov, w).clamp_min(0).sqrt().numpy()
        n = w.shape[0]
        if moments_table is not None:
            rows = moments_table.reindex(pd.MultiIndex.from_product([[layer], np.arange(n)]))
            if rows["skew"].isna().any():
                raise ValueError(f"neuron moments table lacks neurons of layer {layer}")
            skew, kurt = rows["skew"].to_numpy(), rows["kurtosis"].to_numpy()
        else:
            skew, kurt = layer_moments(w_out[layer], u_float, chunk)
        frames.append(layer_frame(model, layer, n, ing_mean=ing_mean, other_mean=other_mean,
                                  ing_separation=(ing_mean - other_mean) / np.maximum(std, 1e-12),
                                  skew=skew, kurtosis=kurt, type=classify(skew, kurt)))
    return pd.concat(frames, ignore_index=True)


@torch.no_grad()
def unit_column_moments(w_u: torch.Tensor, ing: torch.Tensor, other: torch.Tensor, chunk: int = 16384):
    """``(mean_all, mean_ing, mean_other [d_model], cov [d_model, d_model])`` of the unit
    unembedding columns ``û_v = W_U[:, v] / |W_U[:, v]|``, in float64: over all columns,
    the ``ing`` columns, the ``other`` columns (boolean masks ``[d_vocab]``); ``cov`` is
    the population covariance over all columns.

    Blocked over the vocabulary, ``chunk`` columns at a time, so that no float64 copy of
    ``W_U`` (1.3 GB for Gemma 3's 262,144 x 640) nor of its masked columns is ever made:
    each block's Gram matrix ``û ûᵀ`` is a float32 product (half the time of float64; the
    resulting standard deviations differ by ~1e-7 relative on Gemma 3), every sum across
    blocks is float64."""
    from ..core.neurons import _unit

    d_model, d_vocab = w_u.shape
    total = torch.zeros(d_model, dtype=torch.float64)
    s_ing = torch.zeros(d_model, dtype=torch.float64)
    s_other = torch.zeros(d_model, dtype=torch.float64)
    gram = torch.zeros(d_model, d_model, dtype=torch.float64)
    for start in range(0, d_vocab, chunk):
        stop = min(start + chunk, d_vocab)
        u = _unit(w_u[:, start:stop].float(), 0)
        gram += (u @ u.T).double()
        u = u.double()
        total += u.sum(1)
        s_ing += u[:, ing[start:stop]].sum(1)
        s_other += u[:, other[start:stop]].sum(1)
    mu_all = total / d_vocab
    cov = gram / d_vocab - torch.outer(mu_all, mu_all)
    return mu_all, s_ing / int(ing.sum()), s_other / max(int(other.sum()), 1), cov


def select_neurons(table: pd.DataFrame, n: int, require_type: bool = True, model: str = "") -> pd.DataFrame:
    """Add ``role`` (prediction / suppression / None), ``role_rank`` (1 = most aligned) and
    ``order`` (1..2n by |separation|: the order neurons join the ensembles)."""
    table = table.copy()
    table["role"] = None
    table["role_rank"] = 0
    for role, sign in (("prediction", 1.0), ("suppression", -1.0)):
        aligned = table[sign * table["ing_separation"] > 0]
        ranked = aligned.sort_values("ing_separation", ascending=sign < 0)
        if require_type:
            typed = ranked[ranked["type"] == role]
            if len(typed) < n:
                log.warning("%s: %d %s neurons (kurtosis > 10) push ing tokens the right way; filling "
                            "up to %d with untyped neurons by ing separation", model, len(typed), role, n)
            ranked = pd.concat([typed, ranked[ranked["type"] != role]])
        pick = ranked.index[:n]
        table.loc[pick, "role"] = role
        table.loc[pick, "role_rank"] = np.arange(1, len(pick) + 1)
    selected = table["role"].notna()
    order = table.loc[selected, "ing_separation"].abs().sort_values(ascending=False).index
    table["order"] = 0
    table.loc[order, "order"] = np.arange(1, len(order) + 1)
    table["role_rank"] = table["role_rank"].astype(np.int32)
    table["order"] = table["order"].astype(np.int32)
    return table[NEURON_COLUMNS]


@torch.no_grad()
def vocab_table(w_out: torch.Tensor, w_u: torch.Tensor, neurons: pd.DataFrame, strings: Sequence[str],
                is_ing: np.ndarray, is_real: np.ndarray, model: str = "") -> pd.DataFrame:
    """Cosines over the vocabulary of the top prediction and top suppression neuron (one
    ``[2, d_vocab]`` product); ``strings``: :func:`token_strings` of the vocabulary."""
    from ..core.neurons import vocab_cosines

    tops = []
    for role in ROLES:
        top = neurons[(neurons["role"] == role) & (neurons["role_rank"] == 1)]
        if not top.empty:
            tops.append((role, int(top["layer"].iloc[0]), int(top["neuron"].iloc[0])))
    if not tops:
        return pd.DataFrame(columns=VOCAB_COLUMNS)
    cos = vocab_cosines(torch.stack([w_out[layer, neuron] for _, layer, neuron in tops]), w_u).double().numpy()
    real = np.flatnonzero(is_real)
    tokens = [strings[i] for i in real]
    frames = [
        pd.DataFrame(
            {
                "model": model,
                "role": role,
                "layer": layer,
                "neuron": neuron,
                "token_id": real.astype(np.int64),
                "token": tokens,
                "is_ing": is_ing[real],
                "cosine": cos[j, real],
            }
        )
        for j, (role, layer, neuron) in enumerate(tops)
    ]
    return pd.concat(frames, ignore_index=True)


def neuron_tables(engine, tokenizer, neurons: pd.DataFrame | None, settings: IngSettings,
                  model: str = "") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Weights only: ``(ing_neurons, vocab)``, the ing separation of every neuron with the
    selected prediction/suppression neurons (``NEURON_COLUMNS``), and the vocabulary cosines
    of the top prediction and top suppression neuron (``VOCAB_COLUMNS``).

    ``engine``: an :class:`~stages_of_inference.core.engine.Engine` over the model (its
    folded weights, :func:`stages_of_inference.core.neurons.folded_weights`); ``neurons``:
    the ``neurons`` rule's table (skew, kurtosis), so that they are not computed twice.
    A vocabulary without ing tokens gives two empty tables (logged).
    """
    from ..core.neurons import folded_weights

    w_out, w_u = folded_weights(engine)
    strings = token_strings(tokenizer, w_u.shape[1])  # decoded once: the mask and the vocabulary table
    is_ing, is_real = ing_mask(tokenizer, w_u.shape[1], strings)
    log.info("%s: %d of %d vocabulary tokens end in -ing", model, is_ing.sum(), is_real.sum())
    if not is_ing.any():
        log.warning("%s: no vocabulary token ends in -ing; Figure 10 will be empty for this model", model)
        return pd.DataFrame(columns=NEURON_COLUMNS), pd.DataFrame(columns=VOCAB_COLUMNS)
    table = select_neurons(ing_neuron_table(w_out, w_u, is_ing, is_real, model, moments_table=neurons),
                           settings.n_neurons, settings.require_type, model)
    for role in ROLES:
        top = table[(table["role"] == role) & (table["role_rank"] == 1)]
        if len(top):
            r = top.iloc[0]
            log.info("%s: top %s neuron L%dN%d, ing separation %.2f (type %s)", model, role, r["layer"],
                     r["neuron"], r["ing_separation"], r["type"])
    return table, vocab_table(w_out, w_u, table, strings, is_ing, is_real, model)


# -- activations ------------------------------------------------------------------------


@torch.no_grad()
def collect_activations(engine, prompts: Sequence[Sequence[int]], neurons: Sequence[tuple[int, int]],
                        is_ing: np.ndarray, batch_size: int = 16):
    """Last-position ``blocks.{L}.mlp.hook_post`` activations of ``neurons`` ``[n, m]``,
    and the model's top-1 next token ``[n]`` and probability on ing tokens ``[n]``.

    ``engine``: a :class:`~stages_of_inference.core.engine.Engine`. One pass per batch
    (prompts of one batch have one length); the unembedding runs at the last position only.
    Out-of-memory halves the batch (:func:`~stages_of_inference.core.engine.batched`).
    """
    from ..core.engine import batched, hook_name

    by_layer: dict[int, list[int]] = {}
    for j, (layer, neuron) in enumerate(neurons):
        by_layer.setdefault(int(layer), []).append(j)
    index = {layer: torch.tensor([neurons[j][1] for j in cols]) for layer, cols in by_layer.items()}
    acts = np.zeros((len(prompts), len(neurons)), dtype=np.float32)
    top1 = np.zeros(len(prompts), dtype=np.int64)
    p_ing = np.zeros(len(prompts), dtype=np.float64)
    ing = torch.as_tensor(is_ing)  # [d_vocab], the logits' last dimension

    def run(start: int, stop: int) -> None:
        batch = [list(p) for p in prompts[start:stop]]
        if len({len(p) for p in batch}) != 1:
            raise ValueError("prompts of one batch must have the same length")
        captured: dict[int, torch.Tensor] = {}

        def capture(layer):
            def hook(post):
                captured[layer] = post[:, -1, index[layer].to(post.device)].detach().float().cpu()

            return hook

        ids = torch.tensor(batch, dtype=torch.long, device=engine.device)
        logits = engine.forward(ids, [(hook_name(layer, "mlp.hook_post"), capture(layer)) for layer in by_layer],
                                positions=slice(-1, None))
        last = logits[:, -1].float().cpu()
        probs = last.softmax(-1)
        for layer, cols in by_layer.items():
            acts[start:stop, cols] = captured[layer].numpy()
        top1[start:stop] = last.argmax(-1).numpy()
        p_ing[start:stop] = probs[:, ing].sum(-1).double().numpy()

    batched(len(prompts), batch_size, run)
    return acts, top1, p_ing


def selected_neurons(ing_neurons: pd.DataFrame) -> pd.DataFrame:
    """The neurons with a role, in the order they join the ensembles."""
    return ing_neurons[ing_neurons["role"].notna()].sort_values("order")


def prompt_activations(engine, tokenizer, documents: Iterable[str], ing_neurons: pd.DataFrame,
                       settings: IngSettings, model: str = "") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ing prompt set with the model's own predictions (``PREDICTION_COLUMNS``), and the
    selected neurons' last-position activations as a long table (``ACTIVATION_COLUMNS``:
    one row per prompt and neuron, prompt-major, neurons in ``order``).

    With fewer than ``min_prompts`` positives or no selected neuron nothing is run: the
    prediction columns are empty (NaN) and the activation table has no rows (logged).
    """
    prompts = build_prompts(documents, tokenizer, settings, model)
    selected = selected_neurons(ing_neurons)
    n_pos = int(prompts["label"].sum())
    if n_pos < settings.min_prompts or selected.empty:
        log.warning("%s: %d -ing prompts (casestudies.ing.min_prompts = %d) and %d selected neurons; "
                    "no probes for this model (a larger corpus gives more -ing words)", model, n_pos,
                    settings.min_prompts, len(selected))
        for col in PREDICTION_COLUMNS:
            prompts[col] = pd.Series(dtype=object)
        return prompts, pd.DataFrame(columns=ACTIVATION_COLUMNS)
    is_ing, _ = ing_mask(tokenizer, engine.d_vocab)
    pairs = [(int(r.layer), int(r.neuron)) for r in selected.itertuples()]
    acts, top1, p_ing = collect_activations(engine, prompts["input_ids"].tolist(), pairs, is_ing,
                                            settings.batch_size)
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
    return prompts, long


# -- probes -----------------------------------------------------------------------------


def fit_probes(prompts: pd.DataFrame, activations: pd.DataFrame, neurons: pd.DataFrame, seed: int = 0,
               model: str = "") -> pd.DataFrame:
    """Single-neuron and ensemble probes plus the model's own accuracy (module docstring).
    Raises ``ValueError`` when a split lacks positive or negative prompts."""
    from ..core.probes import probe_accuracy

    selected = selected_neurons(neurons)
    wide = activations.pivot_table(index="prompt_id", columns=["layer", "neuron"], values="activation")
    prompts = prompts.set_index("prompt_id").loc[wide.index]
    y = prompts["label"].to_numpy().astype(int)
    train = (prompts["split"] == "train").to_numpy()
    test = ~train
    if len(np.unique(y[train])) < 2 or len(np.unique(y[test])) < 2:
        raise ValueError("both splits need positive and negative prompts")
    cols = [(int(r.layer), int(r.neuron)) for r in selected.itertuples()]
    x = wide[cols].to_numpy()
    rows = []

    def add(probe, col_index, **extra):
        xs = x[:, col_index]
        tr, te = probe_accuracy(xs[train], y[train], xs[test], y[test], seed=seed)
        rows.append({"model": model, "probe": probe, "n_neurons": len(col_index), "train_accuracy": tr,
                     "test_accuracy": te, "n_train": int(train.sum()), "n_test": int(test.sum()), **extra})

    for j, r in enumerate(selected.itertuples()):
        add("single", [j], order=int(r.order), layer=int(r.layer), neuron=int(r.neuron), role=r.role,
            type=r.type, ing_separation=float(r.ing_separation))
    roles = selected["role"].to_numpy()
    for n in range(1, len(cols) + 1):
        add("ensemble", list(range(n)), order=n)
    for role in ROLES:
        members = np.flatnonzero(roles == role)
        for n in range(1, len(members) + 1):
            add(f"ensemble_{role}", members[:n].tolist(), order=n, role=role)
    says = prompts["model_says_ing"].to_numpy().astype(int)
    rows.append({"model": model, "probe": "model_top1", "n_neurons": 0,
                 "train_accuracy": float((says[train] == y[train]).mean()),
                 "test_accuracy": float((says[test] == y[test]).mean()),
                 "n_train": int(train.sum()), "n_test": int(test.sum())})
    exact = prompts["model_top1_correct"].to_numpy()
    pos_test = test & (y == 1)
    rows.append({"model": model, "probe": "model_top1_exact_on_ing", "n_neurons": 0,
                 "train_accuracy": float(exact[train & (y == 1)].mean()),
                 "test_accuracy": float(exact[pos_test].mean()),
                 "n_train": int((train & (y == 1)).sum()), "n_test": int(pos_test.sum())})
    return pd.DataFrame(rows).reindex(columns=PROBE_COLUMNS)


def probe_table(prompts: pd.DataFrame, activations: pd.DataFrame, ing_neurons: pd.DataFrame, seed: int = 0,
                model: str = "") -> pd.DataFrame:
    """:func:`fit_probes`, or an empty table (``PROBE_COLUMNS``, logged) when there are no
    activations or a split lacks one of the labels."""
    try:
        if activations.empty:
            raise ValueError("no activations")
        probes = fit_probes(prompts, activations, ing_neurons, seed, model)
    except ValueError as exc:
        log.warning("%s: no probes (%s)", model, exc)
        return pd.DataFrame(columns=PROBE_COLUMNS)
    single = probes[probes["probe"] == "single"]["test_accuracy"]
    ensemble = probes[probes["probe"] == "ensemble"]["test_accuracy"]
    own = probes.loc[probes["probe"] == "model_top1", "test_accuracy"].iloc[0]
    log.info("%s: held-out accuracy: single neurons %.3f-%.3f (best), full ensemble %.3f, model top-1 %.3f",
             model, single.min(), single.max(), ensemble.iloc[-1], own)
    return probes
