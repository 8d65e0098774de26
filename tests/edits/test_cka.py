"""CKA with the unbiased HSIC: against the U-statistic computed from its definition over
4-tuples of samples (independent of eq. 3's closed form), planted cases, and the study's
CKA table against residuals from plain transformers (``output_hidden_states`` plus a hook
for the last block: HF's last hidden state is after the final norm)."""
import numpy as np
import pytest
import torch

from stages_of_inference.core.engine import Engine
from stages_of_inference.edits.cka import CKAAccumulator, hsic_matrix
from stages_of_inference.edits.compute import edits_study

from hand import cka_by_hand, deeper_model, hand_residuals, hsic_u_statistic


def test_hsic_equals_the_u_statistic():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 9, 5, generator=g, dtype=torch.float64)  # 3 layers, 9 samples
    x[1] = x[0] @ torch.randn(5, 5, generator=g, dtype=torch.float64) + 0.3 * x[1]
    got = hsic_matrix(x).numpy()
    grams = [(x[a] @ x[a].T).numpy() for a in range(3)]
    want = np.array([[hsic_u_statistic(grams[a], grams[b]) for b in range(3)] for a in range(3)])
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def biased_cka(x, y):
    """The biased (centred-Gram) CKA, which is positive for independent features: the
    wrong definition the planted test below tells apart."""
    n = x.shape[0]
    h = np.eye(n) - 1.0 / n
    k, l = h @ x @ x.T @ h, h @ y @ y.T @ h  # noqa: E741 - the Gram matrices K and L
    return float((k * l).sum() / np.sqrt((k * k).sum() * (l * l).sum()))


def test_planted_cases():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 32, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(32, 32, generator=g, dtype=torch.float64))
    independent = torch.randn(64, 32, generator=g, dtype=torch.float64)
    acc = CKAAccumulator()
    acc.add(torch.stack([x, x.clone(), 3.0 * x @ q, independent])[:, None].float())
    cka = acc.cka().numpy()
    np.testing.assert_allclose(cka[0, 1], 1.0, atol=1e-6)  # identical layers
    np.testing.assert_allclose(cka[0, 2], 1.0, atol=1e-6)  # a rotation and a scale change nothing
    np.testing.assert_allclose(np.diag(cka), 1.0, atol=1e-9)
    assert abs(cka[0, 3]) < 0.1  # independent random features: near 0 (unbiased)
    assert biased_cka(x.numpy(), independent.numpy()) > 0.2  # the biased estimator is not
    np.testing.assert_allclose(cka, cka.T, atol=1e-12)


def test_documents_average_hsic_not_cka():
    """The fork averages HSIC over documents and divides once (not a mean of per-document CKAs)."""
    g = torch.Generator().manual_seed(2)
    docs = torch.randn(2, 2, 12, 6, generator=g)  # layers x documents x tokens x features
    docs[1, 1] = docs[0, 1] * 0.1 + torch.randn(12, 6, generator=g)
    acc = CKAAccumulator()
    acc.add(docs)
    h = [hsic_matrix(docs[:, d]) for d in range(2)]
    mean = (h[0] + h[1]) / 2
    want = mean[0, 1] / (mean[0, 0] * mean[1, 1]).sqrt()
    torch.testing.assert_close(acc.cka()[0, 1], want)
    per_doc = sum(h[d][0, 1] / (h[d][0, 0] * h[d][1, 1]).sqrt() for d in range(2)) / 2
    assert abs(float(per_doc - want)) > 1e-3


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
@torch.no_grad()
def test_cka_table_equals_plain_transformers(bpe_tokenizer, arch):
    hf = deeper_model(arch, bpe_tokenizer, n_layers=4)
    ids = torch.randint(3, 500, (2, 10), generator=torch.Generator().manual_seed(3))
    first = 1
    res = edits_study(Engine(hf), ids, first, "m", dict(n_sequences=2, seq_len=10, window_max=1,
                                                         painters_kinds=[], repeat_widths=[], repeat_spans=[]))
    xs, normed = hand_residuals(hf, ids)
    after = [[xs[a + 1, d, first:].double().numpy() for d in range(2)] for a in range(4)]
    want = cka_by_hand(after)
    got = np.zeros((4, 4))
    got[res.cka["layer_a"], res.cka["layer_b"]] = res.cka["cka"]
    np.testing.assert_allclose(got, want, atol=1e-6)
    # the pitfall: HF's last hidden state is normed, so a CKA on it differs
    pitfall = [*after[:3], [normed[d, first:].double().numpy() for d in range(2)]]
    assert np.abs(cka_by_hand(pitfall) - want).max() > 1e-3
    assert set(res.cka["documents"]) == {2} and set(res.cka["tokens_per_document"]) == {9}
