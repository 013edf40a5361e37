"""The Triton model repository: one model per graph, configs that Triton's proto parses."""

from __future__ import annotations

import json
import sys

import numpy as np
import onnxruntime as ort
import pytest

from engines.base import EngineError
from engines.build import main as build_main
from engines.export import export_engine_dir
from engines.triton import MODEL_NAMES, read_config, write_repository
from fgsl.config import preset
from fgsl.model import build


def test_build_writes_a_repository_that_parses_back(tmp_path, capfd):
    code = build_main(["--allow-untrained", "--preset", "tiny", "--backend", "onnxruntime", "--out",
                       str(tmp_path / "engine"), "--triton-repo", str(tmp_path / "repo"), "--triton-max-batch", "16"])
    err = capfd.readouterr().err
    assert code == 0, err
    assert "Triton model repository" in err
    manifest = json.loads((tmp_path / "engine" / "manifest.json").read_text())  # what was built, said once
    assert (manifest["source"], manifest["trained"], manifest["crops"]) == ("untrained preset 'tiny'", False, None)
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


@pytest.mark.parametrize("failing", ["config.pbtxt", "model.onnx"])
def test_a_rewrite_that_fails_leaves_the_repository_as_it_was(failing, tmp_path, monkeypatch):
    """Configs and models are replaced whole: a failed rewrite keeps the old file, leaves no temporary."""
    import os

    engine = tmp_path / "engine"
    export_engine_dir(build(preset("tiny", window_frames=16), seed=0), engine, graphs=("decode_window",))
    repo = tmp_path / "repo"
    (config,) = write_repository(engine, repo, max_batch=8)
    before = {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    assert sorted(p.name for p in before) == ["config.pbtxt", "model.onnx"]
    real_replace = os.replace

    def full_disk(src, dst):
        if os.path.basename(dst) == failing:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr("fgsl.files.os.replace", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        write_repository(engine, repo, max_batch=16)
    assert {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()} == before
    assert read_config(config).max_batch_size == 8


def test_reading_configs_without_tritonclient_is_one_line(tmp_path, monkeypatch):
    for name in ("tritonclient", "tritonclient.grpc", "tritonclient.grpc.model_config_pb2"):
        monkeypatch.setitem(sys.modules, name, None)  # not installed, as far as Python can tell
    with pytest.raises(EngineError) as info:
        read_config(tmp_path / "config.pbtxt")
    assert str(info.value) == ("reading Triton configs needs tritonclient: pip install 'tritonclient[grpc]' "
                               "(part of the 'dev' extra)")


@pytest.mark.parametrize("args, line", [
    ([], "error: engines.build --triton-repo needs tritonclient: pip install 'tritonclient[grpc]' (part of the 'dev' "
         "extra)"),
    (["--backend", "tensorrt", "--fifm", "plugin"],
     "error: --triton-repo serves the ONNX graphs with Triton's ONNX Runtime backend, which cannot run --fifm plugin; "
     "use conv or dft"),
])
def test_build_refuses_a_triton_repo_it_cannot_finish_before_exporting(args, line, tmp_path, capsys, monkeypatch):
    """The repository's configs are parsed back with tritonclient at the end of the build, and
    plugin graphs are refused there: both are known before minutes of export, so asked first."""
    import engines.build as build_cli

    if not args:
        for name in ("tritonclient", "tritonclient.grpc", "tritonclient.grpc.model_config_pb2"):
            monkeypatch.setitem(sys.modules, name, None)  # not installed, as far as Python can tell
    monkeypatch.setattr(build_cli, "load_source", lambda *a, **k: pytest.fail("the weights were loaded for export"))
    monkeypatch.setattr(build_cli, "tensorrt_backend", lambda *a: pytest.fail("TensorRT was asked for"))
    code = build_main(["--allow-untrained", "--preset", "tiny", "--backend", "onnxruntime", "--out",
                       str(tmp_path / "engine"), "--triton-repo", str(tmp_path / "repo"), *args])
    assert (code, capsys.readouterr().err.strip().splitlines()) == (2, [line])
    assert list(tmp_path.iterdir()) == []  # neither the engine folder nor the repository
