"""The Triton model repository: one model per graph, configs that Triton's proto parses."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from engines.build import main as build_main
from engines.triton import MODEL_NAMES, read_config
from engines.base import EngineError


def test_build_writes_a_repository_that_parses_back(tmp_path, capfd):
    code = build_main(["--allow-untrained", "--preset", "tiny", "--backend", "onnxruntime", "--out",
                       str(tmp_path / "engine"), "--triton-repo", str(tmp_path / "repo"), "--triton-max-batch", "16"])
    err = capfd.readouterr().err
    assert code == 0, err
    assert "Triton model repository" in err
    for graph, name in MODEL_NAMES.items():
        config = read_config(tmp_path / "repo" / name / "config.pbtxt")
        assert config.name == name and config.platform == "onnxruntime_onnx" and config.max_batch_size == 16
        assert config.dynamic_batching.max_queue_delay_microseconds > 0
        session = ort.InferenceSession(str(tmp_path / "repo" / name / "1" / "model.onnx"))
        # The config's tensors are the ONNX graph's, with the batch axis left out.
        declared = {t.name: list(t.dims) for t in config.input}
        actual = {i.name: list(i.shape[1:]) for i in session.get_inputs()}
        assert declared == actual, graph
        assert [t.name for t in config.output] == [o.name for o in session.get_outputs()]
    # The whole-model graph in the repository runs.
    clips = np.zeros([1] + list(read_config(tmp_path / "repo" / "fgsl" / "config.pbtxt").input[0].dims), np.float32)
    scores, offsets = ort.InferenceSession(str(tmp_path / "repo" / "fgsl" / "1" / "model.onnx")).run(None, {"clips": clips})
    assert scores.shape[0] == 1 and offsets.shape[-1] == 2


def test_a_broken_config_is_refused(tmp_path):
    bad = tmp_path / "config.pbtxt"
    bad.write_text('name: "fgsl"\nmax_batch_size: "many"\n')
    with pytest.raises(EngineError, match="not a valid Triton model configuration"):
        read_config(bad)
