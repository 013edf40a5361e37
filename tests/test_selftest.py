"""``python -m engines.selftest``: real runs of every variant this machine has (tiny preset)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from engines import build as build_cli
from engines import selftest
from engines.base import EngineError, stream_infer
from engines.onnx_backend import OnnxEngine
from engines.torch_backend import TorchEngine


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = selftest.main(["--preset", "tiny", "--batches", "1,2", "--repeats", "2", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_json_report_checks_and_times_every_variant_and_says_what_it_skipped(capsys):
    code, out, err = run(capsys, "--json")
    assert code == 0, out
    report = json.loads(out.strip().splitlines()[-1])
    assert {"device", "checks", "timings", "skipped"} <= set(report)
    names = [c["name"] for c in report["checks"]]
    for variant in ("onnxruntime fp32 cpu (fifm conv)", "onnxruntime fp32 cpu (fifm dft)"):
        assert f"{variant}: infer vs torch fp32" in names
        assert f"{variant}: encode_chunk+decode_window vs torch fp32" in names
    for check in report["checks"]:
        assert check["ok"] is True and 0 <= check["max_abs_diff"] <= check["tolerance"]
    fp32 = [c for c in report["checks"] if " fp32 cpu" in c["name"]]
    assert fp32 and all(c["max_abs_diff"] <= 1e-4 for c in fp32)
    # fp32 on a GPU runs cuDNN's TF32 convolutions: held to the TF32 bound (measured 1e-3 on an H100).
    on_gpu = [c for c in report["checks"] if " fp32 cuda" in c["name"]]
    assert all(c["tolerance"] == selftest.TOLERANCE["tf32"] for c in on_gpu)
    assert bool(on_gpu) == torch.cuda.is_available()
    timed = {(t["variant"], t["batch"]) for t in report["timings"]}
    assert {("torch fp32 cpu", 1), ("torch fp32 cpu", 2), ("onnxruntime fp32 cpu (fifm conv)", 2)} <= timed
    for t in report["timings"]:
        assert {"backend", "precision", "batch", "p50_ms", "p95_ms", "windows_per_s"} <= set(t)
        assert 0 < t["p50_ms"] <= t["p95_ms"] and t["windows_per_s"] > 0 and t["runs"] == 2
    skipped = {s["name"]: s["reason"] for s in report["skipped"]}
    if not torch.cuda.is_available():
        assert skipped["tensorrt fp32 cuda (fifm plugin)"] == skipped["tensorrt int8 cuda"] == NO_GPU_FOR_TENSORRT
        assert report["device"]["note"] == "no CUDA device: CPU part only" and "no CUDA device: CPU part only" in out
        assert skipped["torch fp32 cuda"] == "no CUDA device"
    assert "all checks passed" in out and "p50 ms/win" in out


def test_a_disagreeing_backend_fails_the_run(capsys, monkeypatch):
    real_variants, real_infer = selftest.variants, OnnxEngine.infer
    # torch and ONNX Runtime conv on the CPU only, and an ONNX Runtime that is off by 0.01
    monkeypatch.setattr(selftest, "variants", lambda *a: [v for v in real_variants(*a)
                                                          if v.device == "cpu" and "dft" not in v.name
                                                          and v.precision == "fp32"])

    def off(self, clips):
        out = real_infer(self, clips)
        return {k: v + 0.01 for k, v in out.items()}

    monkeypatch.setattr(OnnxEngine, "infer", off)
    code, out, _ = run(capsys, "--json", "--batches", "1", "--repeats", "1")
    report = json.loads(out.strip().splitlines()[-1])
    assert code == 1 and report["ok"] is False and "SOME CHECKS FAILED" in out
    failed = [c for c in report["checks"] if not c["ok"]]
    assert [c["name"] for c in failed] == ["onnxruntime fp32 cpu (fifm conv): infer vs torch fp32"]
    assert failed[0]["max_abs_diff"] == pytest.approx(0.01, abs=1e-4)


def test_bad_batches_are_one_error_line(capsys):
    code, _, err = run(capsys, "--batches", "1,x")
    assert code == 2 and err.strip() == "error: --batches must be comma-separated positive integers, got '1,x'"


@pytest.mark.parametrize("value, words", [("nan", "must be a finite number"), ("-1", "must be a positive number"),
                                          ("0", "must be a positive number")])
def test_max_seconds_must_be_a_positive_number(value, words, capsys, monkeypatch):
    monkeypatch.setattr(selftest, "selftest", lambda *a, **k: pytest.fail("ran with a bad --max-seconds"))
    with pytest.raises(SystemExit) as info:
        selftest.main(["--max-seconds", value])
    assert info.value.code == 2
    assert f"argument --max-seconds: {words}, got '{value}'" in capsys.readouterr().err


def test_stream_infer_is_the_whole_model_on_torch():
    model = selftest.selftest_model("tiny")
    clips = selftest.random_clips(model.cfg, 2)
    engine = TorchEngine(model)
    whole, streamed = engine.infer(clips), stream_infer(engine, clips)
    for key in whole:
        np.testing.assert_allclose(streamed[key], whole[key], atol=1e-5)
    assert any(a.up.weight.abs().sum() > 0 for a in model.iga.adapters)  # adapters take part


def test_build_verifies_against_the_selftests_fp32_bound(tmp_path, monkeypatch):
    """engines.build refuses an fp32 build by the self-test's bound itself, not a copy of it."""
    from engines.export import export_engine_dir
    from fgsl.config import preset
    from fgsl.model import build

    assert selftest.TOLERANCE["fp32"] == 1e-4  # the bound
    model = build(preset("tiny", window_frames=16), seed=0)
    export_engine_dir(model, tmp_path, trained=False)
    assert max(build_cli.verify(model, tmp_path, "fp32").values()) <= 1e-4
    monkeypatch.setitem(selftest.TOLERANCE, "fp32", -1.0)  # a bound nothing meets
    with pytest.raises(EngineError, match=r"disagrees with torch \(max abs diff .* > -1\); not using it"):
        build_cli.verify(model, tmp_path, "fp32")


NO_GPU_FOR_TENSORRT = "no CUDA device (TensorRT objects are never created without one)"


def test_tensorrt_variants_ask_for_the_gpu_before_importing_tensorrt(tmp_path, monkeypatch):
    """Without a GPU, tensorrt is not imported at all (its CUDA libraries would load for nothing);
    with one, a missing tensorrt is the shared install line."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # not installed, as far as Python can tell
    reasons = {v.name: v.skip for v in selftest.tensorrt_variants(None, tmp_path, cuda=False)}
    assert set(reasons.values()) == {NO_GPU_FOR_TENSORRT} and len(reasons) == 4
    reasons = {v.name: v.skip for v in selftest.tensorrt_variants(None, tmp_path, cuda=True)}
    assert set(reasons.values()) == {"the tensorrt backend needs tensorrt: install the 'trt' extra (pip install "
                                     "'fgsl-spotter[trt]') on a machine with an NVIDIA GPU and driver"}
