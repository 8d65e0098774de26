"""Metrics against hand computations."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from stages_of_inference.core.metrics import Reference, compare, entropy_bits, kl_nats, summarise


def logits_of(probs):
    return torch.log(torch.tensor(probs, dtype=torch.float64))


def test_entropy_in_bits():
    assert entropy_bits(torch.log(torch.full((8,), 1 / 8))).item() == pytest.approx(3.0)
    p = [0.5, 0.25, 0.25]
    assert entropy_bits(logits_of(p)).item() == pytest.approx(1.5)


def test_kl_in_nats_by_hand():
    p, q = [0.5, 0.25, 0.25], [0.25, 0.5, 0.25]
    want = 0.5 * math.log(0.5 / 0.25) + 0.25 * math.log(0.25 / 0.5) + 0.25 * math.log(1.0)
    assert kl_nats(logits_of(p), logits_of(q)).item() == pytest.approx(want)
    assert kl_nats(logits_of(p), logits_of(p)).item() == pytest.approx(0.0, abs=1e-12)


def test_compare_by_hand():
    # one sequence, two scored positions, vocabulary of 3
    base = torch.tensor([[[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]]])
    inter = torch.tensor([[[0.0, 1.0, 2.0], [0.0, 0.0, 3.0]]])
    targets = torch.tensor([[0, -1]])  # position 0 has next token 0; position 1 has none
    has = targets >= 0
    ref = Reference.from_logits(base, targets, has)
    m = compare(ref, inter, targets, has)
    pb = torch.softmax(base, -1)[0, 0]
    pi = torch.softmax(inter, -1)[0, 0]
    kl = float((pb * (pb / pi).log()).sum())
    assert m["kl"][0, 0].item() == pytest.approx(kl, rel=1e-5)
    assert m["kl"][0, 1].item() == pytest.approx(0.0, abs=1e-6)
    assert m["top1_agree"].tolist() == [[0.0, 1.0]]
    h = lambda p: float(-(p * p.log2()).sum())  # noqa: E731
    assert m["entropy_change"][0, 0].item() == pytest.approx(h(pi) - h(pb), rel=1e-5)
    assert m["loss"][0, 0].item() == pytest.approx(-math.log(pi[0].item()), rel=1e-5)
    assert m["loss_change"][0, 0].item() == pytest.approx(math.log(pb[0].item() / pi[0].item()), rel=1e-5)
    assert m["correct_base"][0, 0].item() == 1.0 and m["correct"][0, 0].item() == 0.0
    assert math.isnan(m["loss"][0, 1].item()) and math.isnan(m["correct"][0, 1].item())


def test_summarise_mean_and_standard_error():
    df = pd.DataFrame({"model": "m", "kind": "drop", "layer": 0, "kl": [1.0, 2.0, 3.0, 6.0],
                       "correct": [1.0, 0.0, np.nan, 1.0]})
    out = summarise(df, columns=("kl", "correct")).iloc[0]
    assert out.kl_mean == pytest.approx(3.0)
    assert out.kl_se == pytest.approx(np.std([1, 2, 3, 6], ddof=1) / 2)
    assert out.correct_mean == pytest.approx(2 / 3)  # NaN (no next token) skipped
    assert out.correct_se == pytest.approx(np.std([1, 0, 1], ddof=1) / math.sqrt(3))
