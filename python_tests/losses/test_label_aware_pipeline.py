"""The label-aware detection pipeline: assignment, box decoding, the mAP50 metric (hand-computed cases)
and a short end-to-end run with and without LA."""
import math

import pytest
import torch

pytest.importorskip("torchvision")

from medseg_ext.models.atss_head import TinyDetector  # noqa: E402
from medseg_ext.pipelines import label_aware as P  # noqa: E402


def test_assign_centre_sampling_and_smallest_box():
    points = torch.tensor([[10.0, 10.0], [30.0, 30.0], [50.0, 50.0], [21.0, 21.0]])
    boxes = torch.tensor([[0.0, 0, 20, 20], [15, 15, 45, 45], [18, 18, 24, 24]])
    labels = torch.tensor([0, 1, 2])
    lab, gt = P.assign(points, boxes, labels, stride=4, radius=1.5)
    # (10,10): centre of box 0; (30,30): centre of box 1; (50,50): outside all; (21,21): in boxes 1 and 2 near
    # the centre of box 2 (smallest area wins) but > 6 px from the centre of box 1
    assert lab.tolist() == [0, 1, P.NUM_CLASSES, 2]
    assert torch.equal(gt[3], boxes[2])


def test_decode_one_hot_bins():
    K = 9
    logits = torch.full((1, 4, K), -1e4)
    for side, d in enumerate([1, 2, 3, 4]):
        logits[0, side, d] = 0.0
    box = P.decode(torch.tensor([[20.0, 30.0]]), logits, stride=4)
    torch.testing.assert_close(box, torch.tensor([[16.0, 22.0, 32.0, 46.0]]))


def test_average_precision_hand_cases():
    gt_b = [torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])]
    gt_l = [torch.tensor([0]), torch.tensor([0, 1])]
    perfect = [(gt_b[0], torch.tensor([0.9]), torch.tensor([0])),
               (gt_b[1], torch.tensor([0.8, 0.7]), torch.tensor([0, 1]))]
    m, aps = P.average_precision_50(perfect, gt_b, gt_l, num_classes=3)
    assert aps == [1.0, 1.0] and m == 1.0  # class 2 has no ground truth: left out
    # class 0: a false positive ranked first, then both true positives: precision envelope 2/3 on (0, 1]
    fp_first = [(torch.tensor([[50.0, 50, 60, 60], [0, 0, 10, 10]]), torch.tensor([0.95, 0.9]), torch.tensor([0, 0])),
                (torch.tensor([[1.0, 1, 10, 10], [20, 20, 30, 30]]), torch.tensor([0.8, 0.7]), torch.tensor([0, 1]))]
    m, aps = P.average_precision_50(fp_first, gt_b, gt_l, num_classes=2)
    assert aps[0] == pytest.approx(2 / 3) and aps[1] == 1.0
    # a duplicate on the same ground truth is a false positive; a miss caps recall at 1/2
    dup = [(torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10]]), torch.tensor([0.9, 0.8]), torch.tensor([0, 0])),
           (torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64))]
    m, aps = P.average_precision_50(dup, gt_b[:1] + [gt_b[1][:1]], [gt_l[0], gt_l[1][:1]], num_classes=1)
    assert aps[0] == pytest.approx(0.5)


def test_detector_forward_with_and_without_la():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 32, 32)
    for la in (False, True):
        model = TinyDetector(3, label_aware=la)
        cls, bins, ctr = model(x, torch.randint(0, 4, (2, 8, 8)) if la else None)
        assert cls.shape == (2, 3, 8, 8) and bins.shape == (2, 36, 8, 8) and ctr.shape == (2, 1, 8, 8)


def test_short_run_trains_both_ways():
    res = P.run(steps=3, batch=2, n_train=8, n_val=4, seed=1, show_progress=False, out=lambda *_: None)
    for name in ("baseline", "label-aware"):
        m = res[name]["mAP50"]
        assert math.isnan(m) or 0.0 <= m <= 1.0
    images, boxes, labels = P.make_dataset(3, seed=2)
    assert images.shape == (3, 1, 64, 64) and all(len(b) == len(l) >= 2 for b, l in zip(boxes, labels))
    loss = P.detection_loss(TinyDetector(3), images, boxes, labels)
    assert torch.isfinite(loss.detach()) and float(loss.detach()) > 0
