"""Hard confusion counts from the fused pass and the metrics on them: against explicit per-class
comparisons (NumPy reference), the DIBE paper's Table 1, closed-form identities and edge cases."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import medseg_ext
from medseg_ext.reference import losses as ref
from helpers import region_cases


@settings(max_examples=40)
@given(region_cases(max_elems=3000, max_classes=10))
def test_counts_from_logits_match_reference(case):
    z, y = case.numpy()
    got = medseg_ext.confusion_counts(case.logits, case.labels, **case.kwargs())
    assert got.dtype == torch.int64
    B, C = z.shape[:2]
    if case.activation == "softmax":
        pred = z.reshape(B, C, -1).argmax(1)
        want = ref.confusion_counts(pred, y.reshape(B, -1), C, case.ignore_index)
    else:
        p = 0.5 * (1 + np.tanh(0.5 * z.reshape(B, C, -1)))
        if C == 1:  # binary: class 0 of the counts is the foreground (label 1)
            want = ref.confusion_counts((p[:, 0] > 0.5).astype(np.int64), y.reshape(B, -1), 2, case.ignore_index)[:, 1:]
        else:  # one-vs-rest per channel
            yy = y.reshape(B, -1)
            want = np.stack([ref.confusion_counts((p[:, c] > 0.5).astype(np.int64),
                                                  np.where(yy == case.ignore_index, -1, (yy == c).astype(np.int64))
                                                  if case.ignore_index is not None else (yy == c).astype(np.int64),
                                                  2, -1 if case.ignore_index is not None else None)[:, 1]
                             for c in range(C)], axis=1)
    if case.reduction_unit == "batch":
        want = want.sum(0, keepdims=True)
    np.testing.assert_array_equal(got.numpy(), want)


@settings(max_examples=30)
@given(st.integers(0, 10_000), st.integers(1, 6), st.booleans())
def test_counts_from_label_maps(seed, C, ignore):
    rng = np.random.default_rng(seed)
    pred = rng.integers(0, C, size=(3, 5, 4))
    target = rng.integers(0, C, size=(3, 5, 4))
    ii = None
    if ignore:
        ii = 99
        target[0, 0] = 99
    got = medseg_ext.confusion_from_labels(torch.from_numpy(pred), torch.from_numpy(target), C, ignore_index=ii)
    np.testing.assert_array_equal(got.numpy(), ref.confusion_counts(pred, target, C, ii))
    # argmax of one-hot "logits" gives the same counts through the fused kernel
    logits = torch.nn.functional.one_hot(torch.from_numpy(pred), C).movedim(-1, 1).double() * 5
    if C > 1:
        got2 = medseg_ext.confusion_counts(logits, torch.from_numpy(target), ignore_index=ii)
        assert torch.equal(got2, got)


def test_oii_reproduces_paper_table_1():
    # seeds-losses.md §2.3: TP:FP:FN rows and the recomputed OII (row 3 is a typo in the paper)
    rows = [(2, .5, .5, .0635), (2, 1, 1, .1257), (2, 3, 3, .3440), (2, 5, 1, -.8438), (2, 4, 2, -.5627),
            (2, 2, 4, .5627), (2, 1, 5, .8438), (2, 1, 2, .4570), (2, 1, .5, -.3965), (2, 1, .2, -.7800)]
    c = torch.tensor([[tp, fp, fn, 0] for tp, fp, fn, _ in rows], dtype=torch.float64)
    np.testing.assert_allclose(medseg_ext.oii(c).numpy(), [r[3] for r in rows], atol=6e-4)
    np.testing.assert_allclose(medseg_ext.iou(c).numpy(), [tp / (tp + fp + fn) for tp, fp, fn, _ in rows])
    np.testing.assert_allclose(medseg_ext.precision(c).numpy(), [tp / (tp + fp) for tp, fp, fn, _ in rows])


def test_oii_edge_cases_and_properties():
    c = torch.tensor([[5, 0, 3, 0], [5, 3, 0, 0], [5, 0, 0, 0], [0, 2, 1, 0], [0, 0, 0, 9]])
    out = medseg_ext.oii(c)
    assert out[:4].tolist() == [1.0, -1.0, 0.0, 1.0] and math.isnan(out[4])
    # antisymmetric under FP <-> FN away from FP = FN, and scale-invariant
    rng = np.random.default_rng(0)
    for _ in range(50):
        tp, fp, fn = rng.integers(1, 100, 3)
        if fp == fn:
            continue
        a = medseg_ext.oii(torch.tensor([[tp, fp, fn, 0]]))
        b = medseg_ext.oii(torch.tensor([[tp, fn, fp, 0]]))
        s = medseg_ext.oii(torch.tensor([[7 * tp, 7 * fp, 7 * fn, 0]]))
        assert float(a) == pytest.approx(-float(b)) and float(a) == pytest.approx(float(s))
        assert -1 <= float(a) <= 1


def test_metric_identities():
    rng = np.random.default_rng(1)
    c = torch.from_numpy(rng.integers(0, 50, size=(20, 4)))
    i, d = medseg_ext.iou(c), medseg_ext.dice_score(c)
    torch.testing.assert_close(d, 2 * i / (1 + i))
    tp, fp, fn, tn = c.double().unbind(-1)
    n = tp + fp + fn + tn
    po, pe = (tp + tn) / n, ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / n ** 2
    torch.testing.assert_close(medseg_ext.cohen_kappa(c), (po - pe) / (1 - pe))
    torch.testing.assert_close(medseg_ext.accuracy(c), po)
    torch.testing.assert_close(medseg_ext.specificity(c), tn / (tn + fp))
    torch.testing.assert_close(medseg_ext.recall(c), tp / (tp + fn))
    # perfect agreement: κ = 1, IoU = Dice = 1; empty class: the empty policy decides
    perfect = torch.tensor([[4, 0, 0, 6]])
    assert float(medseg_ext.cohen_kappa(perfect)) == 1.0 and float(medseg_ext.iou(perfect)) == 1.0
    empty = torch.tensor([[0, 0, 0, 10]])
    assert math.isnan(float(medseg_ext.iou(empty)))
    assert float(medseg_ext.iou(empty, empty="one")) == 1.0 and float(medseg_ext.dice_score(empty, "zero")) == 0.0
    m = medseg_ext.segmentation_metrics(c)
    assert set(m) == {"iou", "dice", "precision", "recall", "specificity", "accuracy", "kappa", "oii"}
    with pytest.raises(ValueError, match="empty"):
        medseg_ext.iou(c, empty="ignore")
    with pytest.raises(ValueError, match="counts"):
        medseg_ext.iou(torch.zeros(3, 3))


def test_oii_guided_alpha_follows_the_paper_trace():
    # DIBE App. B, DIBE_Dis on SegNet: alpha 0.5 gives OII 0.475 (> 0.4: raise alpha), 0.7 gives 0.322 (stop)
    trace = {0.5: 0.475, 0.7: 0.322}
    seen = []

    def train_and_validate(alpha):
        seen.append(alpha)
        target = trace[round(alpha, 6)]
        # counts with FP < FN whose OII is the traced value: solve for FN at TP = 1000, FP = 100
        lo, hi = 100.0, 1e6
        for _ in range(200):
            mid = (lo + hi) / 2
            o = float(medseg_ext.oii(torch.tensor([[1000.0, 100.0, mid, 0.0]], dtype=torch.float64)))
            lo, hi = (lo, mid) if o > target else (mid, hi)
        return 1000, 100, round(lo)

    alpha, history = medseg_ext.oii_guided_alpha(train_and_validate, log=None)
    assert seen == [0.5, 0.7] and alpha == 0.7 and len(history) == 2
    assert history[1]["oii"] == pytest.approx(0.322, abs=2e-3)
    with pytest.raises(ValueError, match="low, high"):
        medseg_ext.oii_guided_alpha(train_and_validate, low=0.9, high=0.1)


def test_bad_inputs():
    with pytest.raises(ValueError, match="threshold"):
        medseg_ext.confusion_counts(torch.randn(1, 1, 4), torch.zeros(1, 4, dtype=torch.int64), activation="sigmoid",
                                    threshold=0.0)
    with pytest.raises(ValueError, match="pred"):
        medseg_ext.confusion_from_labels(torch.zeros(2, 3, dtype=torch.int64), torch.zeros(2, 4, dtype=torch.int64), 2)
    with pytest.raises(ValueError, match="target"):
        medseg_ext.confusion_from_labels(torch.zeros(2, 3, dtype=torch.int64), torch.full((2, 3), 5), 2)
