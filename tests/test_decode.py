import numpy as np
import pytest
import torch

from fgsl.decode import Interval, decode, point_layout, soft_nms


def _empty(cfg, batch=1):
    return {
        "scores": np.full((batch, cfg.num_points, cfg.num_classes), -10.0, np.float32),
        "offsets": np.zeros((batch, cfg.num_points, 2), np.float32),
    }


def test_point_layout_covers_each_level(tiny_cfg):
    centres, strides = point_layout(tiny_cfg)
    assert len(centres) == tiny_cfg.num_points == 8 + 4 + 2 + 1
    assert centres[:3].tolist() == [0.5, 2.5, 4.5]  # level 0: 2 frames per point
    assert strides[8] == 4 and centres[8] == 1.5  # level 1: 4 frames per point


def test_a_confident_point_decodes_to_its_interval(tiny_cfg):
    out = _empty(tiny_cfg)
    out["scores"][0, 3, 1] = 5.0  # level 0, point 3: centre frame 6.5, class "positive"
    out["offsets"][0, 3] = [1.5, 2.0]  # 3 frames back, 4 frames ahead
    [[found]] = decode(out, tiny_cfg)
    assert found == Interval(onset=3.5, apex=6.5, offset=10.5, label=1, score=pytest.approx(1 / (1 + np.exp(-5))))


def test_decode_of_a_real_forward_gives_valid_intervals(tiny_model, tiny_cfg):
    with torch.no_grad():
        raw = tiny_model(torch.randn(2, 3, 16, 32, 32))
    out = {k: v.numpy() for k, v in raw.items()}
    results = decode(out, tiny_cfg, threshold=0.0)
    assert len(results) == 2
    for intervals in results:
        assert intervals, "threshold 0 must keep candidates"
        scores = [iv.score for iv in intervals]
        assert scores == sorted(scores, reverse=True)
        for iv in intervals:
            assert 0 <= iv.onset <= iv.apex <= iv.offset <= tiny_cfg.window_frames - 1
            assert 0 <= iv.label < tiny_cfg.num_classes and 0 < iv.score <= 1


def test_soft_nms_decays_overlaps_of_the_same_class_only():
    segs = np.array([[0, 10], [1, 10], [0, 10], [30, 40]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    labels = np.array([0, 0, 1, 0])
    kept = soft_nms(segs, scores, labels, sigma=0.5, min_score=0.001, limit=10)
    assert kept[0] == 0
    assert scores[1] == pytest.approx(0.8 * np.exp(-(0.9**2) / 0.5))  # IoU 0.9 with the winner
    assert scores[2] == pytest.approx(0.7) and scores[3] == pytest.approx(0.6)  # other class / no overlap


def test_wrong_output_shapes_are_refused(tiny_cfg):
    out = _empty(tiny_cfg)
    out["offsets"] = out["offsets"][:, :5]
    with pytest.raises(ValueError, match="expected scores"):
        decode(out, tiny_cfg)
