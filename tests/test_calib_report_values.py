"""``calib.report`` on a quantised model whose outputs overflow: valid JSON, and said in words."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import calib.report as report_mod
from engines.export import export_onnx
from fgsl.config import preset
from fgsl.model import build
from tests.test_calib_outputs import small_calib  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def fp32(tmp_path_factory) -> Path:
    return export_onnx(build(preset("tiny"), seed=0), tmp_path_factory.mktemp("fp32") / "model.onnx")


def scaled(fp32: Path, factor: float, path: Path) -> Path:
    """``fp32`` with its scores multiplied by ``factor`` (inf or NaN: an overflowing quantised model)."""
    proto = onnx.load(str(fp32))
    for node in proto.graph.node:
        node.output[:] = ["scores.raw" if out == "scores" else out for out in node.output]
    proto.graph.initializer.append(numpy_helper.from_array(np.array(factor, np.float32), "factor"))
    proto.graph.node.append(helper.make_node("Mul", ["scores.raw", "factor"], ["scores"]))
    onnx.save(proto, str(path))
    return path


@pytest.mark.parametrize("factor", [float("inf"), float("nan")])
def test_a_quantized_model_whose_outputs_are_not_finite(factor, fp32, small_calib, tmp_path, capsys):  # noqa: F811
    """--json wrote Infinity/NaN (not JSON), and "windows identical 1" when neither model gave an interval."""
    broken = scaled(fp32, factor, tmp_path / "q.onnx")
    assert report_mod.main(["--fp32", str(fp32), "--quantized", str(broken), "--data", str(small_calib),
                            "--json", "--threshold", "0.99"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1], parse_constant=lambda name: pytest.fail(f"{name} in the JSON line"))
    scores = result["raw"]["scores"]
    assert scores["max_abs_diff"] is None and scores["quantized_not_finite"] == int(np.prod([2, 30, 4]))
    assert result["raw"]["offsets"]["quantized_not_finite"] == 0
    assert result["intervals"]["windows_identical"] is None  # no interval on either side: nothing compared
    text = "\n".join(out[:-1])
    assert "the quantized scores are not finite: 240 inf/NaN values" in text
    assert "windows identical n/a" in text


def test_a_model_beside_someone_elses_manifest_json_is_reported(fp32, small_calib, tmp_path):  # noqa: F811
    """A web app's manifest.json was read as an engine manifest: "not an FGSL engine manifest"."""
    other = tmp_path / "other"
    other.mkdir()
    model = other / "model.onnx"
    model.write_bytes(fp32.read_bytes())
    (other / "manifest.json").write_text('{"name": "my web app"}')
    result = report_mod.report(model, model, small_calib)
    assert result["threshold"] == preset("tiny").score_threshold  # from the model's own fgsl.config metadata
    assert result["raw"]["scores"]["max_abs_diff"] == 0.0
