"""The ONNX Runtime backend (engines.onnx_backend) on real ONNX Runtime: agreement with torch,
the streaming graphs on real faces, providers and threads, and the DFT check.

Measured here (tiny preset, real face clips, CPU provider): ORT's decode_window(encode_chunk)
vs torch ``infer`` max abs diff about 1e-6 on scores and offsets (both FIFM forms); asserted
at 1e-5, the streaming issue's bound.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

import engines
from engines import EngineError, onnx_backend
from engines.export import export_engine_dir
from engines.onnx_backend import OnnxEngine
from engines.base import stream_infer
from engines.torch_backend import TorchEngine
from fgsl import weights
from fgsl.config import preset
from fgsl.data.video import normalise, read_centre_crops, resample_indices
from fgsl.decode import decode
from fgsl.model import build
from tests.conftest import randomise_adapters, real_face_clips, real_face_frame_count, shared_video
from tests.test_export import assert_same_intervals

HAS_CUDA_EP = "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.fixture(scope="module")
def model():
    m = build(preset("tiny"), seed=1)
    randomise_adapters(m, seed=2)
    return m


@pytest.fixture(scope="module")
def run_dir(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    weights.save(model, folder, trained=True)
    return folder


@pytest.fixture(scope="module")
def engine_dirs(run_dir, tmp_path_factory):
    """``engine_dirs(form)`` -> an engine folder of the trained tiny weights, built once per form."""
    memo = {}

    def get(form: str):
        if form not in memo:
            memo[form] = tmp_path_factory.mktemp(f"engine-{form}")
            export_engine_dir(run_dir, memo[form], fifm=form)
        return memo[form]

    return get


@pytest.fixture(scope="module")
def face_clips(model):
    """Two 32-frame windows (two chunks each) of a real face video at 32 px, normalised."""
    return real_face_clips(model.cfg, [8, real_face_frame_count(model.cfg) - model.cfg.window_frames])


def max_diff(a, b) -> float:
    return max(float(np.abs(a[k] - b[k]).max()) for k in b)


@pytest.mark.parametrize("form", ["conv", "dft"])
def test_all_three_graphs_agree_with_torch(form, model, engine_dirs, face_clips):
    engine = OnnxEngine.from_dir(engine_dirs(form))
    ref = TorchEngine(model)
    assert max_diff(engine.infer(face_clips), ref.infer(face_clips)) <= 1e-4
    chunks = np.ascontiguousarray(face_clips[:, :, :16])
    enc, enc_ref = engine.encode_chunk(chunks), ref.encode_chunk(chunks)
    assert enc["final"].shape == enc_ref["final"].shape and enc["taps"].shape == enc_ref["taps"].shape
    assert max_diff(enc, enc_ref) <= 1e-4
    final, taps = TorchEngine(model).model.encode_window(torch.from_numpy(face_clips))
    dec = engine.decode_window(final.numpy(), taps.numpy())
    assert max_diff(dec, ref.decode_window(final.numpy(), taps.numpy())) <= 1e-4
    assert all(v.dtype == np.float32 for out in (enc, dec) for v in out.values())


@pytest.mark.parametrize("form", ["conv", "dft"])
def test_streaming_graphs_on_real_faces_equal_the_torch_whole_model(form, model, engine_dirs, face_clips):
    engine = OnnxEngine.from_dir(engine_dirs(form))
    streamed = stream_infer(engine, face_clips)
    whole = TorchEngine(model).infer(face_clips)
    for key in ("scores", "offsets"):
        assert np.abs(streamed[key] - whole[key]).max() <= 1e-5, key
    assert_same_intervals(decode(streamed, model.cfg, threshold=0.0), decode(whole, model.cfg, threshold=0.0))


def test_describe_reports_the_provider_a_real_session_runs_and_threads(engine_dirs):
    engine = OnnxEngine.from_dir(engine_dirs("conv"), intra_op_threads=1, inter_op_threads=2)
    d = engine.describe()
    assert d["backend"] == "onnxruntime" and d["precision"] == "fp32" and d["fifm_form"] == "conv"
    assert d["provider"] == "CPUExecutionProvider" == engine.session("decode_window").get_providers()[0]
    assert d["device"].startswith("cpu (onnxruntime CPUExecutionProvider, 1 intra-op threads")
    assert d["input_shape"] == ["B", 3, 32, 32, 32] and d["preset"] == "tiny"
    options = engine.session("decode_window").get_session_options()
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 2
    assert options.execution_mode == ort.ExecutionMode.ORT_PARALLEL


def test_sessions_are_created_only_for_graphs_that_run(engine_dirs, face_clips):
    engine = OnnxEngine.from_dir(engine_dirs("conv"))
    engine.encode_chunk(np.ascontiguousarray(face_clips[:1, :, :16]))
    assert set(engine._sessions) == {"encode_chunk"}


def test_inputs_are_checked_like_every_engine(engine_dirs):
    engine = OnnxEngine.from_dir(engine_dirs("conv"))
    with pytest.raises(EngineError, match=r"clips must be \[B, 3, 32, 32, 32\]"):
        engine.infer(np.zeros((1, 3, 16, 32, 32), np.float32))
    with pytest.raises(EngineError, match="float32"):
        engine.encode_chunk(np.zeros((1, 3, 16, 32, 32), np.float64))


def test_plugin_form_is_refused_with_a_clear_reason(run_dir, tmp_path):
    export_engine_dir(run_dir, tmp_path, fifm="plugin", graphs=("decode_window",))
    with pytest.raises(EngineError, match="FIFM form 'plugin' is the TensorRT custom op fgsl::FIFMFilter; ONNX Runtime "
                                          "cannot run it"):
        OnnxEngine.from_dir(tmp_path)


def test_dft_check_accepts_this_onnxruntime(monkeypatch, model):
    monkeypatch.setattr(onnx_backend, "_dft_checked", {})
    diff = onnx_backend.check_dft(["CPUExecutionProvider"], model.cfg.neck_dim, model.cfg.tokens)
    assert 0 <= diff <= onnx_backend.DFT_TOLERANCE


def test_an_onnxruntime_with_a_wrong_dft_is_refused(monkeypatch, engine_dirs):
    folder = engine_dirs("dft")
    monkeypatch.setattr(onnx_backend, "_dft_checked", {})
    real = onnx_backend._run_probe
    # an ORT whose DFT is off by 10 %: the right shape and the wrong numbers
    monkeypatch.setattr(onnx_backend, "_run_probe", lambda data, x, providers: real(data, x, providers) * 0.9)
    with pytest.raises(EngineError, match=r"computes DFT wrongly here .*build with --fifm conv"):
        OnnxEngine.from_dir(folder)

    def broken(data, x, providers):
        raise RuntimeError("NOT_IMPLEMENTED : Could not find an implementation for DFT(17)")

    monkeypatch.setattr(onnx_backend, "_run_probe", broken)
    with pytest.raises(EngineError, match="cannot run FIFM's DFT form .*NOT_IMPLEMENTED"):
        OnnxEngine.from_dir(folder)

    def silent(data, x, providers):
        raise MemoryError  # no message: named once, not "(MemoryError: MemoryError)"

    monkeypatch.setattr(onnx_backend, "_run_probe", silent)
    with pytest.raises(EngineError, match=r"cannot run FIFM's DFT form \(MemoryError\); build with --fifm conv$"):
        OnnxEngine.from_dir(folder)
    OnnxEngine.from_dir(engine_dirs("conv"))  # the conv form never needs the check


@pytest.mark.skipif(HAS_CUDA_EP, reason="this onnxruntime has a CUDA provider")
def test_cuda_without_a_cuda_provider_is_a_clear_error(engine_dirs):
    with pytest.raises(EngineError, match="has no CUDAExecutionProvider .*install onnxruntime-gpu"):
        OnnxEngine.from_dir(engine_dirs("conv"), device="cuda")


@pytest.mark.skipif(HAS_CUDA_EP, reason="this onnxruntime has a CUDA provider")
def test_auto_device_runs_an_engine_folder_on_the_cpu_when_its_graphs_cannot_use_the_gpu(engine_dirs, monkeypatch, capsys):
    """A GPU machine (as ``auto`` sees it) with a CPU-only onnxruntime: the folder opens on the CPU."""
    monkeypatch.setattr(engines, "resolve_device", lambda device: "cuda" if device == "auto" else device)
    engine = engines.open(engine_dirs("conv"), device="auto")
    assert engine.describe()["device"].startswith("cpu")
    assert "engine not run on cuda (" in capsys.readouterr().err
    with pytest.raises(EngineError, match="has no CUDAExecutionProvider"):  # asked for the GPU: no quiet fallback
        engines.open(engine_dirs("conv"), device="cuda")


@pytest.mark.skipif(HAS_CUDA_EP, reason="this onnxruntime has a CUDA provider")
def test_auto_device_with_a_named_backend_that_cannot_use_the_gpu(run_dir, monkeypatch):
    monkeypatch.setattr(engines, "resolve_device", lambda device: "cuda" if device == "auto" else device)
    engine = engines.open(run_dir, backend="onnxruntime", device="auto")  # weights folder, CPU-only onnxruntime
    assert engine.describe()["backend"] == "onnxruntime" and engine.describe()["device"].startswith("cpu")
    try:
        import tensorrt  # noqa: F401
    except ImportError:  # nor can TensorRT run on the CPU: the GPU's reason is the error
        with pytest.raises(EngineError, match="the tensorrt backend needs tensorrt: install the 'trt' extra"):
            engines.open(run_dir, backend="tensorrt", device="auto")


@pytest.mark.skipif(not (HAS_CUDA_EP and torch.cuda.is_available()), reason="no CUDA device with onnxruntime-gpu here")
def test_cuda_provider_with_io_binding_matches_cpu(engine_dirs, face_clips):  # pragma: no cover - GPU machines
    gpu = OnnxEngine.from_dir(engine_dirs("conv"), device="cuda")
    assert gpu.describe()["provider"] == "CUDAExecutionProvider"
    assert max_diff(gpu.infer(face_clips), OnnxEngine.from_dir(engine_dirs("conv")).infer(face_clips)) <= 1e-3
    assert max_diff(stream_infer(gpu, face_clips), gpu.infer(face_clips)) <= 1e-4


def test_untrained_engine_folders_are_refused_unless_allowed(model, tmp_path):
    export_engine_dir(model, tmp_path, trained=False, graphs=("decode_window",))
    with pytest.raises(weights.WeightsError, match="untrained"):
        engines.open(tmp_path)
    assert engines.open(tmp_path, allow_untrained=True).describe()["backend"] == "onnxruntime"


def test_open_picks_onnxruntime_for_weights_and_honours_explicit_backends(run_dir, engine_dirs, tmp_path, face_clips,
                                                                         model):
    auto = engines.open(run_dir, cache_dir=tmp_path)
    assert auto.describe()["backend"] == "onnxruntime" and auto.describe()["source"] == str(run_dir)
    assert max_diff(auto.infer(face_clips), TorchEngine(model).infer(face_clips)) <= 1e-4
    assert engines.open(run_dir, backend="torch").describe()["backend"] == "torch"
    assert engines.open(run_dir, backend="onnxruntime", cache_dir=tmp_path).describe()["backend"] == "onnxruntime"
    assert isinstance(engines.open(engine_dirs("conv")), OnnxEngine)
    with pytest.raises(EngineError, match="holds compiled graphs; open the weights folder for the torch backend"):
        engines.open(engine_dirs("conv"), backend="torch")


@pytest.mark.slow
def test_realtime_preset_on_real_faces_agrees_in_both_forms(tmp_path):
    """The live default (ViT-S, 64-frame windows of 112 px): whole model and streaming path."""
    model = build(preset("realtime"), seed=0)
    randomise_adapters(model)
    cfg = model.cfg
    video = read_centre_crops(shared_video("liveportrait_d6_expressions.mp4"), cfg.image_size)
    frames = video.frames[resample_indices(video.count, video.fps, cfg.fps)]
    clips = np.stack([normalise(frames[s : s + cfg.window_frames]) for s in (0, 300)])
    whole = TorchEngine(model).infer(clips)
    for form in ("conv", "dft"):
        export_engine_dir(model, tmp_path / form, fifm=form, trained=False)
        engine = OnnxEngine.from_dir(tmp_path / form, allow_untrained=True)
        assert max_diff(engine.infer(clips), whole) <= 1e-4
        streamed = stream_infer(engine, clips)
        assert max_diff(streamed, whole) <= 1e-5
        assert_same_intervals(decode(streamed, cfg, threshold=0.0), decode(whole, cfg, threshold=0.0))
