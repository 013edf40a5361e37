"""Calibration: windows collected through the live pipeline, quantisation, and the FP32 report.

* ``calib.collect`` runs here for real: the shipped sample video goes through
  capture -> MediaPipe face tracker -> buffers (``realtime.pipeline.Pipeline``) with the tiny
  preset; the saved windows, normalised on load, must equal ``FGSLSpotter.clips`` of the
  windows the pipeline produced.
* ``calib.quantize`` with NVIDIA ModelOpt (the product path) runs only where
  ``nvidia-modelopt`` imports (skipped otherwise, with the reason; the dev environment does
  not install it). Its one-line refusal without ModelOpt is tested everywhere.
* The report (``calib.report``) is tested on an INT8 Q/DQ model made by the **ONNX Runtime
  stand-in** (``--tool onnxruntime``: ``onnxruntime.quantization.quantize_static``), because
  ModelOpt is not installed here; ModelOpt remains the product path. The weights are the
  tiny preset's random ones, so the numbers check the plumbing, not the model's accuracy.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest

from calib import CalibError
from calib import collect as collect_mod
from calib import quantize as quantize_mod
from calib import report as report_mod
from calib.collect import collect, collect_windows, load, save
from fgsl.cli import check_output_suffix
from fgsl.config import preset
from fgsl.model import build
from realtime.spotters.fgsl import window_clips
from tests.conftest import SAMPLE_VIDEO, randomise_adapters

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
CFG = preset("tiny")  # 32-frame windows of 32 px crops
HAS_MODELOPT = importlib.util.find_spec("modelopt") is not None


@pytest.fixture(scope="module")
def collected() -> tuple[list[tuple[int, Any]], dict]:
    """All windows of the sample video (72 frames, one face), through the live pipeline."""
    return collect_windows([SAMPLE_VIDEO], CFG, count=100, progress=False)


@pytest.fixture(scope="module")
def calib_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("calib") / "calib.npz"
    save(collect([SAMPLE_VIDEO], CFG, count=100, progress=False), path)
    return path


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory) -> Path:
    from engines.export import export_onnx

    model = build(CFG, seed=0)
    randomise_adapters(model)
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx", graph="model", fifm="conv")


# ---------------------------------------------------------------------------------------
# collect
# ---------------------------------------------------------------------------------------

def test_windows_come_through_the_live_pipeline(collected: tuple[list[tuple[int, Any]], dict]) -> None:
    samples, stats = collected
    assert stats["frames"] == 72 and stats["face_frames"] == 72
    # 72 frames at 30 fps, windows of 32 model frames every 8 (a quarter window), the last
    # one when the stream ends: the buffer's own schedule.
    assert stats["candidate_windows"] == len(samples) == 6
    starts = [int(w.indices[0]) for _, w in samples]
    assert starts == sorted(starts) and starts[:5] == [0, 8, 16, 24, 32]
    # The tracker makes the crops the live FGSL spotter asks for (ALIGNED_CROP px, shrunk to the
    # model's 32 with INTER_AREA when the clips are made), not model-size crops of its own.
    from fgsl.data.aligned import ALIGNED_CROP

    for _, window in samples:
        assert window.crops.shape == (32, ALIGNED_CROP, ALIGNED_CROP, 3) and window.crops.dtype == np.uint8


def test_saved_windows_normalise_exactly_as_the_fgsl_spotter(collected, tmp_path: Path) -> None:
    samples, stats = collected
    data = collect([SAMPLE_VIDEO], CFG, count=100, progress=False)
    path = save(data, tmp_path / "c.npz")
    loaded = load(path)
    assert len(loaded) == 6 and loaded.videos == [SAMPLE_VIDEO.name] and loaded.cfg == CFG
    want = window_clips([w for _, w in samples], CFG)
    assert want.shape == (6, 3, 32, 32, 32) and want.dtype == np.float32
    assert np.array_equal(loaded.clips(), want)
    assert np.array_equal(loaded.indices, np.stack([w.indices for _, w in samples]))
    chunks = loaded.chunks()
    assert chunks.shape == (12, 3, 16, 32, 32)
    assert np.array_equal(chunks[1], want[0][:, 16:32]) and np.array_equal(chunks[2], want[1][:, :16])
    assert loaded.stats["candidate_windows"] == stats["candidate_windows"]


def test_sample_is_seeded_and_uniform(collected) -> None:
    a = collect([SAMPLE_VIDEO], CFG, count=3, seed=1, progress=False)
    b = collect([SAMPLE_VIDEO], CFG, count=3, seed=1, progress=False)
    assert len(a) == 3 and np.array_equal(a.indices, b.indices) and np.array_equal(a.crops, b.crops)
    starts = a.indices[:, 0]
    assert list(starts) == sorted(starts)
    # Other seeds, other samples: 3 of the 6 windows can be picked 20 ways, so four uniform seeded
    # samples are all the same only with chance (1/20)^3, and then reach no more than 3 windows.
    # A sample that ignored the seed would always repeat. (How evenly: the test below.)
    candidates = {int(w.indices[0]) for _, w in collected[0]}
    picked = [tuple(starts)] + [tuple(collect([SAMPLE_VIDEO], CFG, count=3, seed=seed, progress=False).indices[:, 0])
                                for seed in (2, 3, 4)]
    reached = {int(s) for p in picked for s in p}
    assert len(set(picked)) > 1 and reached <= candidates and len(reached) > 3, picked


def test_recorder_keeps_each_window_with_equal_chance() -> None:
    """The pipeline's recorder on 6 windows, 3 kept, over 2000 seeds: a uniform sample keeps each
    window half the time (binomial sd 0.011; 0.05 is 4.5 sd) and every one of the 20 subsets."""
    kept = []
    for seed in range(2000):
        recorder = collect_mod._Recorder(CFG, count=3, stride=8, seed=seed)  # noqa: SLF001
        recorder.process([SimpleNamespace(number=i, repeats_last=False) for i in range(6)])  # (only stored)
        kept.append(tuple(sorted(window.number for _, window in recorder.samples)))
    share = np.bincount(np.concatenate(kept), minlength=6) / len(kept)
    assert np.all(np.abs(share - 0.5) < 0.05), share
    assert len(set(kept)) == 20


def test_cli_collect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c.npz"
    assert collect_mod.main(["--videos", str(SAMPLE_VIDEO), "--out", str(out), "--preset", "tiny", "--count", "4",
                             "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"{out}: 4 windows of 32 frames at 32 px (preset 'tiny')" in err and "72 with a face" in err
    assert len(load(out)) == 4


def test_cli_collect_reads_a_frame_folder_at_the_given_fps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--help promises folders of numbered frames; such a folder has no frame rate, so --fps gives it."""
    frames = tmp_path / "frames"
    frames.mkdir()
    cap = cv2.VideoCapture(str(SAMPLE_VIDEO))
    for i in range(40):
        ok, image = cap.read()
        assert ok
        cv2.imwrite(str(frames / f"{i:04d}.png"), image)
    cap.release()
    out = tmp_path / "c.npz"
    base = ["--videos", str(frames), "--out", str(out), "--preset", "tiny", "--count", "2", "--quiet"]
    assert collect_mod.main(base) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {frames}: a folder of frames has no frame rate "
                                                            "of its own; pass it with --fps"]
    assert collect_mod.main([*base, "--fps", "30"]) == 0
    assert "40 frames read, 40 with a face" in capsys.readouterr().err and len(load(out)) == 2
    with pytest.raises(SystemExit):
        collect_mod.main([*base, "--fps", "nan"])
    assert "argument --fps: must be a finite number" in capsys.readouterr().err


def _blank_video(path: Path, frames: int = 20) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (96, 64))
    for i in range(frames):
        writer.write(np.full((64, 96, 3), 40 + i, np.uint8))
    writer.release()
    return path


def test_cli_collect_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blank = _blank_video(tmp_path / "blank.mp4")
    assert collect_mod.main(["--videos", str(blank), "--out", str(tmp_path / "c.npz"), "--preset", "tiny",
                             "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: no face found in any of the 1 video(s) (20 frames read): calibration needs windows of "
                   "tracked faces"]
    assert not (tmp_path / "c.npz").exists()
    assert collect_mod.main(["--videos", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "c.npz"), "--quiet"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {tmp_path / 'nope.mp4'}: no such video file "
                                                            "or frame folder"]
    assert collect_mod.main(["--videos", str(blank), "--out", "x.npz", "--preset", "huge"]) == 2
    assert "unknown preset 'huge'" in capsys.readouterr().err
    assert collect_mod.main(["--videos", str(blank), "--out", "x.npz", "--weights", str(tmp_path)]) == 2
    assert "neither a weights folder (config.json) nor an engine folder" in capsys.readouterr().err
    copy = tmp_path / "v.mp4"
    copy.write_bytes(blank.read_bytes())
    assert collect_mod.main(["--videos", str(copy), "--out", str(copy), "--preset", "tiny", "--quiet"]) == 2
    assert f"error: --out {copy} would overwrite --videos {copy}; write it elsewhere" in capsys.readouterr().err
    assert copy.read_bytes() == blank.read_bytes()


def test_collect_takes_the_config_of_an_engine_folder(tmp_path: Path) -> None:
    """``--weights`` may name an engine folder (``engines.build``), as everywhere else."""
    from engines.export import export_engine_dir

    model = build(preset("tiny", score_threshold=0.1), seed=0)
    export_engine_dir(model, tmp_path / "engine", graphs=("model",), trained=True)
    assert collect_mod.config_from_args(None, str(tmp_path / "engine")) == model.cfg


def test_load_refuses_other_files(tmp_path: Path, calib_file: Path) -> None:
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CalibError, match="damaged calibration file"):
        load(garbage)
    other = tmp_path / "other.npz"
    np.savez(other, clips=np.zeros((1, 2)))
    with pytest.raises(CalibError, match="not a calibration file from python -m calib.collect"):
        load(other)
    with pytest.raises(CalibError, match="no such calibration file"):
        load(tmp_path / "missing.npz")
    data = load(calib_file)
    data.crops = data.crops[:, :16]
    save(data, tmp_path / "short.npz")
    with pytest.raises(CalibError, match=r"crops must be \[N, 32, 32, 32, 3\]"):
        load(tmp_path / "short.npz")


# ---------------------------------------------------------------------------------------
# quantize
# ---------------------------------------------------------------------------------------

def test_quantize_without_modelopt_is_one_line(fp32_onnx: Path, calib_file: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "modelopt", None)
    for mode in ("int8", "fp8", "fp16"):
        assert quantize_mod.main(["--onnx", str(fp32_onnx), "--data", str(calib_file), "--mode", mode,
                                  "--out", str(tmp_path / "q.onnx")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: calib.quantize --mode {mode} needs modelopt: pip install "
                                                   "'fgsl-spotter[calib]' (nvidia-modelopt[onnx])")
        assert ("--tool onnxruntime" in err[0]) == (mode == "int8")  # the stand-in makes int8 only
    assert not (tmp_path / "q.onnx").exists() and list(tmp_path.iterdir()) == []


def test_missing_onnxruntime_is_one_calib_line(fp32_onnx: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The shared probe (engines.extras), raised as calib's own error type."""
    monkeypatch.setitem(sys.modules, "onnxruntime.quantization", None)  # not installed, as far as Python can tell
    with pytest.raises(CalibError) as info:
        quantize_mod.quantize_onnxruntime(fp32_onnx, tmp_path / "q.onnx", {}, "max")
    assert str(info.value) == "calib.quantize --tool onnxruntime needs onnxruntime: pip install 'fgsl-spotter[onnx]'"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(CalibError) as info:
        report_mod.open_session(fp32_onnx, ["CPUExecutionProvider"])
    assert str(info.value) == "calib.report needs onnxruntime: pip install 'fgsl-spotter[onnx]'"


def test_report_sessions_run_with_the_engines_options(fp32_onnx: Path) -> None:
    options = report_mod.open_session(fp32_onnx, ["CPUExecutionProvider"], threads=2).get_session_options()
    assert options.intra_op_num_threads == 2 and options.log_severity_level == 3


def test_quantize_argument_errors(fp32_onnx: Path, calib_file: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    q = str(tmp_path / "q.onnx")
    assert quantize_mod.main(["--onnx", str(fp32_onnx), "--mode", "int8", "--out", q]) == 2
    assert "needs calibration data: --data calib.npz" in capsys.readouterr().err
    assert quantize_mod.main(["--onnx", str(fp32_onnx), "--data", str(calib_file), "--mode", "fp8",
                              "--tool", "onnxruntime", "--out", q]) == 2
    assert "fp8 and fp16 need ModelOpt" in capsys.readouterr().err
    assert quantize_mod.main(["--onnx", str(fp32_onnx), "--data", str(calib_file), "--out", str(fp32_onnx)]) == 2
    assert f"--out {fp32_onnx} would overwrite --onnx {fp32_onnx}; write it elsewhere" in capsys.readouterr().err
    assert quantize_mod.main(["--onnx", str(fp32_onnx), "--data", str(calib_file), "--out", str(calib_file)]) == 2
    assert f"--out {calib_file}: the quantised model is an ONNX file; name it *.onnx" in capsys.readouterr().err
    data_onnx = tmp_path / "calib.onnx"  # --data under an ONNX name is still an input
    data_onnx.write_bytes(calib_file.read_bytes())
    assert quantize_mod.main(["--onnx", str(fp32_onnx), "--data", str(data_onnx), "--out", str(data_onnx)]) == 2
    assert f"--out {data_onnx} would overwrite --data {data_onnx}" in capsys.readouterr().err


def test_quantize_refuses_an_already_quantised_model(ort_int8: tuple[Path, dict], calib_file: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = ort_int8
    assert quantize_mod.main(["--onnx", str(path), "--data", str(calib_file), "--tool", "onnxruntime",
                              "--out", str(tmp_path / "q2.onnx")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {path}: already quantised (int8 Q/DQ nodes); give the FP32 export (engines.build's model.onnx or "
        "encode_chunk.onnx, built without --precision fp16)"]
    assert not (tmp_path / "q2.onnx").exists()


@pytest.fixture(scope="module")
def fp16_onnx(tmp_path_factory) -> Path:
    """``fp32_onnx``'s weights as ``engines.build --precision fp16`` exports them (an engine
    folder's model.onnx: float16 weights and compute, float32 inputs and outputs)."""
    pytest.importorskip("onnxconverter_common")  # engines.export's fp16 path
    from engines.export import export_engine_dir

    model = build(CFG, seed=0)
    randomise_adapters(model)
    folder = tmp_path_factory.mktemp("e16") / "engine"
    export_engine_dir(model, folder, graphs=("model",), precision="fp16", trained=True)
    return folder / "model.onnx"


def test_quantize_and_report_refuse_an_fp16_model_as_fp32(fp16_onnx: Path, fp32_onnx: Path, calib_file: Path,
                                                          ort_int8: tuple[Path, dict], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """An FP16 export was quantised with exit status 0 into a model with float16 Q/DQ scales
    that ONNX Runtime then refused to load (``calib.report``: DequantizeLinear with a float16
    scale); as ``calib.report --fp32`` it was the reference without a word."""
    from engines.trt import onnx_precision

    assert onnx_precision(onnx.load(str(fp16_onnx))).label == "fp16"
    out = tmp_path / "q.onnx"
    assert quantize_mod.main(["--onnx", str(fp16_onnx), "--data", str(calib_file), "--tool", "onnxruntime",
                              "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {fp16_onnx}: an FP16 model (float16 tensors); give the FP32 export (engines.build's model.onnx or "
        "encode_chunk.onnx, built without --precision fp16)"]
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(CalibError, match="an FP16 model"):  # calib's own error for callers of the library
        quantize_mod.quantize_file(fp16_onnx, None, out, mode="fp16")
    int8, _ = ort_int8
    for folder_or_file in (fp16_onnx, fp16_onnx.parent):  # report takes an engine folder for its model.onnx
        assert report_mod.main(["--fp32", str(folder_or_file), "--quantized", str(int8),
                                "--data", str(calib_file)]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [
            f"error: --fp32 {fp16_onnx} is an FP16 model (float16 tensors), not FP32: give the FP32 export "
            "(engines.build's model.onnx or encode_chunk.onnx, built without --precision fp16) as --fp32"]
    assert report_mod.main(["--fp32", str(fp16_onnx), "--quantized", str(fp32_onnx), "--data", str(calib_file)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --fp32 {fp16_onnx} is an FP16 model (float16 tensors) and --quantized {fp32_onnx} is FP32: the two "
        f"are swapped; give --fp32 {fp32_onnx} --quantized {fp16_onnx}"]
    # The right way round it runs: FP16 is a quantised model like the others here.
    assert report_mod.report(fp32_onnx, fp16_onnx, calib_file)["raw"]["scores"]["max_abs_diff"] < 0.1


def test_report_refuses_fp32_and_quantized_swapped(fp32_onnx: Path, calib_file: Path, ort_int8: tuple[Path, dict],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The int8 model given as --fp32 and the FP32 one as --quantized: the report ran, exit
    status 0, with the roles reversed and no warning."""
    int8, _ = ort_int8
    assert report_mod.main(["--fp32", str(int8), "--quantized", str(fp32_onnx), "--data", str(calib_file)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --fp32 {int8} is already quantised (int8 Q/DQ nodes) and --quantized {fp32_onnx} is FP32: the two "
        f"are swapped; give --fp32 {fp32_onnx} --quantized {int8}"]
    with pytest.raises(CalibError, match=r"--fp32 .* is already quantised \(int8 Q/DQ nodes\), not FP32: give the "
                                         "FP32 export"):
        report_mod.report(int8, int8, calib_file)  # neither is FP32: no swap to suggest


def test_calib_help_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    for main, defaults in ((quantize_mod.main, ["(default: int8)", "(default: entropy)", "(default: cpu)"]),
                           (collect_mod.main, ["(default: 64)", "faces tracked at once (default: 4)"]),
                           (report_mod.main, ["windows per run (default: 4)"])):
        with pytest.raises(SystemExit):
            main(["--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert all(d in text for d in defaults), text


def test_calibration_inputs_must_fit_the_model(calib_file: Path, tmp_path: Path) -> None:
    from engines.export import export_onnx

    data = load(calib_file)
    with pytest.raises(CalibError, match=r"inputs are \['final', 'taps'\].*keep decode_window in fp32/fp16"):
        quantize_mod.calibration_inputs(["final", "taps"], data)
    chunks = quantize_mod.calibration_inputs(["chunks"], data, count=2)["chunks"]
    assert chunks.shape == (4, 3, 16, 32, 32)
    clips = data.clips(2)  # window by window, each window's chunks in time order (engines.base.split_chunks)
    assert np.array_equal(chunks[1], clips[0, :, 16:]) and np.array_equal(chunks[2], clips[1, :, :16])
    other = export_onnx(build(preset("tiny", window_frames=16), seed=0), tmp_path / "m16.onnx")
    with pytest.raises(CalibError, match=r"input clips is \[3, 16, 32, 32\], but the calibration windows are for "
                                          r"preset 'tiny' \(\[3, 32, 32, 32\]\)"):
        quantize_mod.quantize_file(other, calib_file, tmp_path / "q.onnx", tool="onnxruntime")


@pytest.fixture(scope="module")
def ort_int8(fp32_onnx: Path, calib_file: Path, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("q") / "model.int8.onnx"
    return out, quantize_mod.quantize_file(fp32_onnx, calib_file, out, mode="int8", method="entropy",
                                           tool="onnxruntime")


def test_onnxruntime_stand_in_makes_a_tensorrt_style_int8_qdq_model(ort_int8: tuple[Path, dict]) -> None:
    """Stand-in (ModelOpt is not installed here): symmetric int8 Q/DQ on the encoder only,
    a graph TensorRT's strongly typed build accepts as int8 (engines.trt.check_precision)."""
    from engines.trt import check_precision, onnx_precision

    path, info = ort_int8
    assert info["precision"] == "int8" and info["qdq"] == ["int8"] and info["calibration_inputs"] == 6
    from fgsl.files import FILE_MODE

    assert path.stat().st_mode & 0o777 == FILE_MODE  # not mkstemp's 0600: others serve and read it
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    proto = onnx.load(str(path))
    assert check_precision("int8", onnx_precision(proto)) == "int8"
    consumers = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    quantized = [c.name for n in proto.graph.node if n.op_type == "DequantizeLinear" for c in consumers.get(n.output[0], [])]
    assert quantized and all("encoder" in name for name in quantized)
    zero_points = [i for i in proto.graph.initializer if i.name.endswith("zero_point")]
    assert zero_points and all(not onnx.numpy_helper.to_array(z).any() for z in zero_points)  # symmetric


def test_report_compares_raw_outputs_and_intervals(fp32_onnx: Path, calib_file: Path, ort_int8: tuple[Path, dict],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Report on the ONNX Runtime stand-in's int8 model (see the module docstring)."""
    path, _ = ort_int8
    r = report_mod.report(fp32_onnx, path, calib_file, threshold=0.0)
    assert r["items"] == 6 and r["input"] == "clips"
    raw = r["raw"]
    assert set(raw) == {"scores", "offsets", "probabilities"}
    assert 0 < raw["scores"]["max_abs_diff"] < 0.5 and raw["scores"]["mean_abs_diff"] <= raw["scores"]["max_abs_diff"]
    # (No bound on the int8 model's top-1 agreement or identical windows: with random weights
    # nothing independent says how many argmaxes int8 may move. The same model must agree fully.)
    iv = r["intervals"]
    assert iv["windows"] == 6 and iv["fp32_intervals"] > 0
    assert 0.5 < iv["mean_iou"] <= 1
    same = report_mod.report(fp32_onnx, fp32_onnx, calib_file, threshold=0.0)
    assert same["raw"]["scores"]["max_abs_diff"] == 0 and same["intervals"]["windows_identical"] == 1.0
    assert same["raw"]["scores"]["top1_agreement"] == 1.0
    assert same["intervals"]["mean_iou"] == 1.0 and same["intervals"]["quantized_unmatched"] == 0
    assert report_mod.main(["--fp32", str(fp32_onnx), "--quantized", str(path), "--data", str(calib_file),
                            "--threshold", "0", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert "intervals at score >= 0" in "\n".join(out)
    last = json.loads(out[-1])
    assert last["intervals"]["windows"] == 6 and last["raw"]["offsets"]["max_abs_diff"] >= 0


def test_report_errors_are_one_line(fp32_onnx: Path, calib_file: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage" * 10)
    assert report_mod.main(["--fp32", str(fp32_onnx), "--quantized", str(bad), "--data", str(calib_file)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "bad.onnx" in err[0]


def test_report_refuses_unknown_providers_other_presets_and_bad_thresholds(
        fp32_onnx: Path, calib_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from engines.export import export_onnx

    base = ["--fp32", str(fp32_onnx), "--quantized", str(fp32_onnx), "--data", str(calib_file)]
    assert report_mod.main([*base, "--providers", "Bogus"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --providers: Bogus not available in this ONNX Runtime "
                                               "(available: ") and "CPUExecutionProvider" in err[0]
    other = export_onnx(build(preset("tiny", window_frames=16), seed=0), tmp_path / "m16.onnx")
    assert report_mod.main(["--fp32", str(other), "--quantized", str(other), "--data", str(calib_file)]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # was ONNX Runtime's InvalidArgument traceback
    assert err == [f"error: {other}: input clips is [3, 16, 32, 32], but the calibration windows are for preset "
                   "'tiny' ([3, 32, 32, 32]): collect them with the model's preset or weights"]
    with pytest.raises(SystemExit):
        report_mod.main([*base, "--threshold", "nan"])
    assert "argument --threshold: must be a score in [0, 1), got 'nan'" in capsys.readouterr().err


def test_report_refuses_a_quantised_model_of_other_weights(fp32_onnx: Path, calib_file: Path,
                                                          ort_int8: tuple[Path, dict], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Another network's differences would be reported as quantisation error."""
    from engines.export import export_onnx, read_metadata

    path, _ = ort_int8
    assert read_metadata(path)["fgsl.weights_sha256"] == read_metadata(fp32_onnx)["fgsl.weights_sha256"]
    other = build(CFG, seed=1)
    randomise_adapters(other)
    other_onnx = export_onnx(other, tmp_path / "other.onnx", graph="model", fifm="conv")
    assert report_mod.main(["--fp32", str(other_onnx), "--quantized", str(path), "--data", str(calib_file)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {path} was not made from {other_onnx}: they hold different "
                                               "weights (fgsl.weights_sha256 ")


def test_report_decodes_at_the_models_own_threshold(calib_file: Path, tmp_path: Path) -> None:
    """The threshold stored with the weights (in the export's fgsl.config), not the calibration
    file's preset default (0.3)."""
    from engines.export import export_onnx

    model = build(preset("tiny", score_threshold=0.05), seed=0)
    randomise_adapters(model)
    path = export_onnx(model, tmp_path / "model.onnx")
    assert load(calib_file).cfg.score_threshold == 0.3
    assert report_mod.report(path, path, calib_file)["threshold"] == 0.05
    assert report_mod.report(path, path, calib_file, threshold=0.5)["threshold"] == 0.5



def test_report_reads_a_tuned_engine_folders_threshold(calib_file: Path, tmp_path: Path) -> None:
    """After ``fgsl.tune --write`` on an engine folder the threshold lives in its manifest; the
    ONNX metadata keeps the export-time one (graphs are hashed and not rewritten)."""
    from engines.export import export_engine_dir, read_metadata
    from fgsl.tune import write_threshold

    model = build(preset("tiny", score_threshold=0.05), seed=0)
    randomise_adapters(model)
    folder = tmp_path / "engine"
    export_engine_dir(model, folder, graphs=("model",), trained=True)
    write_threshold(folder, 0.2)
    path = folder / "model.onnx"
    assert json.loads(read_metadata(path)["fgsl.config"])["score_threshold"] == 0.05
    assert report_mod.report(path, path, calib_file)["threshold"] == 0.2
    assert report_mod.report(folder, path, calib_file)["fp32"] == str(path)  # the folder names its model.onnx
    # A copy of the graph outside the folder has only its metadata to go by.
    alone = tmp_path / "alone.onnx"
    alone.write_bytes(path.read_bytes())
    assert report_mod.report(alone, alone, calib_file)["threshold"] == 0.05

def test_compare_intervals_matching() -> None:
    from fgsl.decode import Interval

    a = [[Interval(0, 2, 10, 1, 0.9), Interval(20, 22, 30, 0, 0.5)], []]
    b = [[Interval(0, 2, 10, 1, 0.8), Interval(25, 27, 30, 0, 0.4), Interval(40, 41, 42, 2, 0.3)], []]
    r = report_mod.compare_intervals(a, b)
    assert r["windows_identical"] == 0.5 and r["fp32_intervals"] == 2 and r["quantized_intervals"] == 3
    assert r["mean_iou"] == pytest.approx((1 + 0.5) / 2) and r["matched_at_0.5"] == 1.0
    assert r["quantized_unmatched"] == 1


@pytest.mark.skipif(not HAS_MODELOPT, reason="nvidia-modelopt is not installed (optional extra 'calib'; not in the "
                                             "dev environment)")
def test_modelopt_int8_on_real_face_windows(fp32_onnx: Path, calib_file: Path, tmp_path: Path) -> None:
    """The product path: ModelOpt ONNX PTQ (entropy) on the collected windows, then the report."""
    out = tmp_path / "model.int8.onnx"
    info = quantize_mod.quantize_file(fp32_onnx, calib_file, out, mode="int8", method="entropy", tool="modelopt")
    assert info["precision"] == "int8" and "int8" in info["qdq"]
    r = report_mod.report(fp32_onnx, out, calib_file, threshold=0.0)
    assert r["raw"]["scores"]["max_abs_diff"] < 0.5 and r["intervals"]["mean_iou"] > 0.5



def _fake_modelopt(monkeypatch: pytest.MonkeyPatch, write_qdq: bool = True) -> list[dict]:
    """Stand-in ``modelopt.onnx.quantization`` / ``modelopt.onnx.autocast`` recording the calls."""
    import types

    from onnx import TensorProto, helper

    calls: list[dict] = []

    def model(qdq: bool) -> Any:
        nodes = [helper.make_node("Identity", ["x"], ["y"])]
        inits = []
        if qdq:
            inits = [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]), helper.make_tensor("z", TensorProto.INT8, [], [0])]
            nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                     helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])

    def quantize(**kwargs: Any) -> None:
        calls.append(kwargs)
        onnx.save(model(write_qdq), kwargs["output_path"])

    def convert_to_mixed_precision(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return model(False)

    root, sub = types.ModuleType("modelopt"), types.ModuleType("modelopt.onnx")
    q, a = types.ModuleType("modelopt.onnx.quantization"), types.ModuleType("modelopt.onnx.autocast")
    q.quantize, a.convert_to_mixed_precision = quantize, convert_to_mixed_precision
    for name, mod in (("modelopt", root), ("modelopt.onnx", sub), ("modelopt.onnx.quantization", q),
                      ("modelopt.onnx.autocast", a)):
        monkeypatch.setitem(sys.modules, name, mod)
    return calls


def test_modelopt_is_called_as_documented(fp32_onnx: Path, calib_file: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The product path's call, against a stand-in ModelOpt (the real one is not installed here)."""
    calls = _fake_modelopt(monkeypatch)
    out = tmp_path / "q.onnx"
    info = quantize_mod.quantize_file(fp32_onnx, calib_file, out, mode="int8", method="max", eps=["cuda:0", "cpu"])
    (kw,) = calls
    assert kw["onnx_path"] == str(fp32_onnx) and kw["quantize_mode"] == "int8" and kw["calibration_method"] == "max"
    assert list(kw["calibration_data"]) == ["clips"] and kw["calibration_data"]["clips"].shape == (6, 3, 32, 32, 32)
    assert np.array_equal(kw["calibration_data"]["clips"], load(calib_file).clips())
    assert kw["calibration_eps"] == ["cuda:0", "cpu"] and kw["high_precision_dtype"] == "fp16"
    assert kw["nodes_to_quantize"] == [r".*encoder.*"] and kw["disable_mha_qdq"] is True
    assert kw["output_path"] != str(out) and Path(kw["output_path"]).parent == out.parent  # written, then renamed
    assert out.is_file() and info["precision"] == "int8" and info["scope"] == "encoder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.onnx"]
    quantize_mod.quantize_file(fp32_onnx, calib_file, out, mode="fp8", scope="all", attention=True)
    assert calls[-1]["nodes_to_quantize"] is None and calls[-1]["disable_mha_qdq"] is False
    quantize_mod.quantize_file(fp32_onnx, None, tmp_path / "h.onnx", mode="fp16")
    assert calls[-1]["low_precision_type"] == "fp16" and calls[-1]["keep_io_types"] is True


def test_quantize_reads_the_fp32_model_once(fp32_onnx: Path, calib_file: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Every check (inputs, already quantised, preset, scope) works on one parsed copy: a
    realtime export is hundreds of MB, and it used to be parsed four times before quantising.
    (The stand-in ModelOpt does not read it; the quantised output is read once, to check it.)"""
    _fake_modelopt(monkeypatch)
    real_load, read = onnx.load, []
    monkeypatch.setattr(onnx, "load", lambda f, *a, **k: read.append(Path(f)) or real_load(f, *a, **k))
    out = tmp_path / "q.onnx"
    info = quantize_mod.quantize_file(fp32_onnx, calib_file, out, mode="int8")
    assert info["precision"] == "int8" and read[0] == fp32_onnx and len(read) == 2
    assert read[1].parent == out.parent and read[1] != out  # checked before it replaced --out


def test_a_quantiser_that_quantises_nothing_is_refused(fp32_onnx: Path, calib_file: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_modelopt(monkeypatch, write_qdq=False)
    with pytest.raises(CalibError, match="nothing was quantised"):
        quantize_mod.quantize_file(fp32_onnx, calib_file, tmp_path / "q.onnx")
    assert not (tmp_path / "q.onnx").exists()


# ---------------------------------------------------------------------------------------
# outputs that would destroy an input; files that are not ONNX (audit #2, #18, #19, #31)
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def engine_dir(tmp_path_factory) -> Path:
    """A small engine folder (engines.export): a manifest and two of its three graphs."""
    from engines.export import export_engine_dir

    folder = tmp_path_factory.mktemp("eng") / "engine"
    export_engine_dir(build(CFG, seed=0), folder, graphs=("model", "decode_window"), trained=True)
    return folder


def _unchanged(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_collect_refuses_an_out_among_the_files_of_weights(engine_dir: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """``--out RUN/model.safetensors`` replaced the weights it was told to read with the .npz."""
    from fgsl import weights

    run = tmp_path / "run"
    weights.save(build(CFG, seed=0), run, trained=True)
    for folder, name in ((run, "model.safetensors"), (run, "config.json"), (engine_dir, "manifest.json"),
                         (engine_dir, "decode_window.onnx")):
        before = _unchanged(folder)
        out = folder / name
        assert collect_mod.main(["--videos", str(SAMPLE_VIDEO), "--weights", str(folder), "--out", str(out),
                                 "--count", "2", "--quiet"]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [
            f"error: --out {out} would overwrite --weights {out}; write it elsewhere"]
        assert _unchanged(folder) == before


def test_quantize_refuses_an_out_in_the_engine_folder_of_onnx(engine_dir: Path, calib_file: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """``--out ENG/manifest.json`` wrote ONNX bytes over the manifest of the engine ``--onnx`` is
    part of; the folder's other graphs are its inputs too."""
    before = _unchanged(engine_dir)
    for name in ("manifest.json", "decode_window.onnx"):
        out = engine_dir / name
        assert quantize_mod.main(["--onnx", str(engine_dir / "model.onnx"), "--data", str(calib_file),
                                  "--tool", "onnxruntime", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        if name == "manifest.json":  # its suffix is refused first
            assert err == [f"error: --out {out}: the quantised model is an ONNX file; name it *.onnx"]
        else:
            assert err == [f"error: --out {out} would overwrite --onnx's engine folder {out}; write it elsewhere"]
        assert _unchanged(engine_dir) == before
    # A new file beside them is fine; so is --onnx outside any engine folder.
    assert quantize_mod.engine_inputs(engine_dir / "model.onnx")[0] == ("--onnx's engine folder",
                                                                         engine_dir / "model.safetensors")
    assert quantize_mod.engine_inputs(calib_file.parent / "model.onnx") == []


def test_quantize_refuses_an_out_that_is_not_onnx_before_any_work(fp32_onnx: Path, calib_file: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """``--out q.json``: onnx picked JSON from the suffix and the run ended in a UnicodeDecodeError
    traceback after writing q.json."""
    monkeypatch.setattr(quantize_mod, "read_onnx", lambda path: pytest.fail("work started"))
    for name in ("q.json", "q", "q.onnx.tmp"):
        assert quantize_mod.main(["--onnx", str(fp32_onnx), "--data", str(calib_file), "--tool", "onnxruntime",
                                  "--out", str(tmp_path / name)]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [
            f"error: --out {tmp_path / name}: the quantised model is an ONNX file; name it *.onnx"]
    assert list(tmp_path.iterdir()) == []


def test_collect_refuses_an_out_that_is_not_npz_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """``--out c.json`` collected for a while, then wrote an .npz archive under a .json name
    (``calib.quantize`` already refused an ``--out`` not named *.onnx; the same check now)."""
    monkeypatch.setattr(collect_mod, "collect", lambda *a, **k: pytest.fail("work started"))
    for name in ("c.json", "c", "c.npz.tmp"):
        out = tmp_path / name
        assert collect_mod.main(["--videos", str(SAMPLE_VIDEO), "--preset", "tiny", "--out", str(out),
                                 "--quiet"]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [
            f"error: --out {out}: the calibration file is an .npz archive; name it *.npz"]
    assert list(tmp_path.iterdir()) == []
    check_output_suffix("--out", tmp_path / "C.NPZ", ".npz", "x")  # case does not matter


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this system")
def test_collect_writes_into_a_pipe_whatever_its_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A device or pipe is written into (``--out /dev/stdout``, docs): its name is no file's format."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    def stop(*args: Any, **kwargs: Any) -> None:
        raise CalibError("collection reached")

    monkeypatch.setattr(collect_mod, "collect", stop)
    assert collect_mod.main(["--videos", str(SAMPLE_VIDEO), "--preset", "tiny", "--out", str(fifo), "--quiet"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: collection reached"]


def test_calib_without_the_onnx_package_names_the_extra(fp32_onnx: Path, calib_file: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The line engines.build gives, not a ModuleNotFoundError traceback."""
    monkeypatch.setitem(sys.modules, "onnx", None)  # not installed, as far as Python can tell
    assert quantize_mod.main(["--onnx", str(fp32_onnx), "--data", str(calib_file), "--tool", "onnxruntime",
                              "--out", str(tmp_path / "q.onnx")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: calib.quantize needs onnx: pip install 'fgsl-spotter[onnx]'"]
    assert report_mod.main(["--fp32", str(fp32_onnx), "--quantized", str(fp32_onnx), "--data", str(calib_file)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: calib.report needs onnx: pip install 'fgsl-spotter[onnx]'"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content, reason", [(b"", "empty graph"), (b"\x00\x01\x02 not protobuf", "")],
                         ids=["empty", "garbage"])
def test_a_file_that_is_not_onnx_is_named_as_such(content: bytes, reason: str, fp32_onnx: Path, calib_file: Path,
                                                  tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 0-byte file parses as an empty ModelProto: it was reported as a model whose inputs are []."""
    bad = tmp_path / "zero.mp4"
    bad.write_bytes(content)
    assert quantize_mod.main(["--onnx", str(bad), "--data", str(calib_file), "--tool", "onnxruntime",
                              "--out", str(tmp_path / "q.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {bad}: not an ONNX model (" + reason), err
    for fp32, quantized in ((fp32_onnx, bad), (bad, fp32_onnx)):
        assert report_mod.main(["--fp32", str(fp32), "--quantized", str(quantized), "--data", str(calib_file)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {bad}: not an ONNX model (" + reason), err
    assert not (tmp_path / "q.onnx").exists()
    # calib's functions raise calib's error, which callers of the library catch
    with pytest.raises(CalibError, match="not an ONNX model"):
        quantize_mod.quantize_file(bad, calib_file, tmp_path / "q.onnx", tool="onnxruntime")
    with pytest.raises(CalibError, match="not an ONNX model"):
        report_mod.report(fp32_onnx, bad, calib_file)


def test_report_threads_are_bounded_by_the_machines_cpus(capsys):
    """``--threads 300`` on 2 cores ran for minutes instead of seconds: at most the usable CPUs."""
    from engines.machine import usable_cpus

    cpus = usable_cpus()
    with pytest.raises(SystemExit) as info:
        report_mod.main(["--fp32", "a.onnx", "--quantized", "b.onnx", "--data", "c.npz", "--threads", str(cpus + 1)])
    assert info.value.code == 2
    assert capsys.readouterr().err == f"error: argument --threads: must be at most {cpus}, got '{cpus + 1}'\n"
