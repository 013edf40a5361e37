"""``calib.quantize`` failures leave an earlier ``--out`` as it was, and are one line.

Real ONNX Runtime quantiser, real files: a one-node model the stand-in has nothing to quantise
in, and a small real calibration file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import calib.quantize as quantize_mod
from calib import CalibError
from calib.collect import CalibrationSet, save
from fgsl.config import preset


@pytest.fixture(scope="module")
def relu_onnx(tmp_path_factory) -> Path:
    """A model of one Relu node inside the encoder scope: nothing the stand-in quantises."""
    clips = helper.make_tensor_value_info("clips", TensorProto.FLOAT, ["B", 3, 32, 32, 32])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 3, 32, 32, 32])
    graph = helper.make_graph([helper.make_node("Relu", ["clips"], ["y"], name="/encoder/Relu")], "g", [clips], [out])
    path = tmp_path_factory.mktemp("relu") / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture(scope="module")
def small_calib(tmp_path_factory) -> Path:
    cfg = preset("tiny")
    crops = np.random.default_rng(0).integers(0, 255, (2, cfg.window_frames, 32, 32, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("calib") / "c.npz"
    frames = np.tile(np.arange(cfg.window_frames), (2, 1))
    save(CalibrationSet(crops, np.zeros(2, int), np.arange(2), frames, ["a.mp4"], cfg), path)
    return path


@pytest.mark.parametrize("method", ["entropy", "max"])
@pytest.mark.parametrize("link", [False, True])
def test_a_model_with_nothing_to_quantise_is_refused_and_keeps_the_earlier_out(
        method, link, relu_onnx, small_calib, tmp_path, capsys):
    """Entropy calibration ended in ONNX Runtime's "Histogram has not been collected" traceback;
    max calibration replaced the earlier --out, then deleted it (a symlinked one too)."""
    keep = tmp_path / "keep.onnx"
    keep.write_bytes(b"an earlier good output")
    out = keep
    if link:
        out = tmp_path / "link.onnx"
        os.symlink(keep, out)
    code = quantize_mod.main(["--onnx", str(relu_onnx), "--data", str(small_calib), "--out", str(out),
                              "--tool", "onnxruntime", "--method", method])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {relu_onnx}: nothing to quantise: scope 'encoder' selects no Conv/ConvTranspose/MatMul/Gemm node; "
        "try --scope all"]
    assert keep.read_bytes() == b"an earlier good output" and out.is_symlink() == link
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["keep.onnx"] + (["link.onnx"] if link else []))


def test_an_output_without_qdq_keeps_the_earlier_out(relu_onnx, small_calib, tmp_path, monkeypatch):
    """The check of the quantiser's output runs before it replaces --out."""
    keep = tmp_path / "keep.onnx"
    keep.write_bytes(b"an earlier good output")
    monkeypatch.setattr(quantize_mod, "refuse_nothing_to_quantise", lambda *args: None)  # let max calibration run
    with pytest.raises(CalibError, match="nothing was quantised"):
        quantize_mod.quantize_file(relu_onnx, small_calib, keep, tool="onnxruntime", method="max")
    assert keep.read_bytes() == b"an earlier good output"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.onnx"]


def test_the_onnxruntime_quantisers_own_failure_is_one_line(relu_onnx, small_calib, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(quantize_mod, "refuse_nothing_to_quantise", lambda *args: None)  # reach ORT's entropy error
    code = quantize_mod.main(["--onnx", str(relu_onnx), "--data", str(small_calib), "--out", str(tmp_path / "q.onnx"),
                              "--tool", "onnxruntime"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: {relu_onnx}: ONNX Runtime's quantiser failed (")
    assert list(tmp_path.iterdir()) == []
