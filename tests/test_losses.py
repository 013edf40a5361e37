import math

import pytest
import torch

from fgsl.losses import FGSLLoss, assign_targets, diou_loss_1d, sigmoid_focal_loss
from fgsl.model import build


def test_focal_loss_matches_its_formula():
    logits = torch.tensor([2.0, -1.0])
    targets = torch.tensor([1.0, 1.0])
    p = torch.sigmoid(logits)
    want = sum(0.25 * -math.log(pi) * (1 - pi) ** 2 for pi in p.tolist())
    assert sigmoid_focal_loss(logits, targets).item() == pytest.approx(want, rel=1e-5)
    neg = sigmoid_focal_loss(torch.tensor([0.0]), torch.tensor([0.0])).item()
    assert neg == pytest.approx(0.75 * math.log(2) * 0.25, rel=1e-5)


def test_diou_is_zero_for_a_perfect_match_and_grows_with_misalignment():
    gt = torch.tensor([[2.0, 3.0]])
    assert diou_loss_1d(gt, gt).item() == pytest.approx(0.0, abs=1e-7)
    # pred (1, 1) vs gt (2, 3): inter 2, union 5, IoU 0.4; enclosing 5; rho = 0.5*(1-1-3+2) = -0.5
    assert diou_loss_1d(torch.tensor([[1.0, 1.0]]), gt).item() == pytest.approx(1 - 0.4 + (0.5 / 5) ** 2)


def test_targets_put_a_short_event_on_the_fine_level_with_centre_sampling(tiny_cfg):
    t = assign_targets(tiny_cfg, [torch.tensor([[4.0, 9.0]])], [torch.tensor([2])])
    pos = t.positive[0].nonzero().flatten().tolist()
    assert pos and all(i < 8 for i in pos)  # level 0 only: a 6-frame event
    # points inside 1.5 strides (3 frames) of the centre 6.5: centres 4.5, 6.5, 8.5
    assert pos == [2, 3, 4]
    assert torch.all(t.classes[0, pos, 2] == 1) and t.classes[0].sum() == len(pos)
    assert torch.allclose(t.offsets[0, 3], torch.tensor([(6.5 - 4) / 2, (9 - 6.5) / 2]))
    empty = assign_targets(tiny_cfg, [torch.zeros(0, 2)], [torch.zeros(0)])
    assert not empty.positive.any()


def test_training_on_one_window_reduces_the_loss(tiny_cfg):
    torch.manual_seed(0)
    model = build(tiny_cfg).train()
    clips = torch.randn(2, 3, 16, 32, 32)
    targets = assign_targets(tiny_cfg, [torch.tensor([[4.0, 9.0]]), torch.zeros(0, 2)], [torch.tensor([1]), torch.zeros(0)])
    criterion = FGSLLoss(init_normaliser=3.0)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = criterion(model(clips), targets)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
