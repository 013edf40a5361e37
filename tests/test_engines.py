import copy

import numpy as np
import pytest
import torch

import engines
from engines import EngineError
from fgsl import weights
from tests.conftest import SAMPLE_VIDEO, randomise_adapters


@pytest.fixture
def folder(tmp_path, tiny_model):
    randomise_adapters(tiny_model)
    weights.save(tiny_model, tmp_path, trained=True)
    return tmp_path


def test_torch_engine_reproduces_the_model(folder, tiny_model):
    engine = engines.open(folder, backend="torch")
    clips = np.random.default_rng(0).standard_normal((3, 3, 16, 32, 32)).astype(np.float32)
    out = engine.infer(clips)
    with torch.no_grad():
        ref = tiny_model(torch.from_numpy(clips))
    assert set(out) == {"scores", "offsets"}
    for key in out:
        assert isinstance(out[key], np.ndarray) and out[key].dtype == np.float32
        np.testing.assert_allclose(out[key], ref[key].numpy(), atol=1e-6)
    d = engine.describe()
    assert d["backend"] == "torch" and d["precision"] == "fp32" and d["input_shape"] == ["B", 3, 16, 32, 32]
    assert d["device"].startswith("cpu") and d["source"] == str(folder)


def test_engine_inputs_are_checked(folder):
    engine = engines.open(folder, backend="torch")
    with pytest.raises(EngineError, match=r"clips must be \[B, 3, 16, 32, 32\]"):
        engine.infer(np.zeros((1, 3, 8, 32, 32), np.float32))
    with pytest.raises(EngineError, match="float32"):
        engine.infer(np.zeros((1, 3, 16, 32, 32), np.float64))


def test_open_refuses_unknown_backends_missing_paths_and_untrained_weights(folder, tmp_path, tiny_model):
    with pytest.raises(EngineError, match="unknown backend 'tensorflow'"):
        engines.open(folder, backend="tensorflow")
    with pytest.raises(EngineError, match="no such weights folder"):
        engines.open(tmp_path / "missing")
    untrained = tmp_path / "untrained"
    weights.save(tiny_model, untrained, trained=False)
    with pytest.raises(weights.WeightsError, match="untrained"):
        engines.open(untrained)
    assert engines.open(untrained, allow_untrained=True).cfg.name == "tiny"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_torch_engine_on_cuda_matches_cpu(folder):
    clips = np.random.default_rng(1).standard_normal((2, 3, 16, 32, 32)).astype(np.float32)
    cpu = engines.open(folder).infer(clips)
    gpu = engines.open(folder, device="cuda").infer(clips)
    for key in cpu:
        np.testing.assert_allclose(cpu[key], gpu[key], atol=1e-3)


def test_engine_device_auto_is_the_gpu_only_where_torch_sees_one(folder):
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert engines.resolve_device("auto") == want
    assert engines.resolve_device("cpu") == "cpu"
    engine = engines.open(folder, backend="torch", device="auto")
    assert engine.describe()["device"].startswith(want)
    for bad in ("tpu", "gpu0", ""):
        with pytest.raises(EngineError, match=r"^unknown engine device .*; choose auto, cpu, cuda or cuda:N$"):
            engines.resolve_device(bad)  # without torch's list of twenty device types


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device exists here")
def test_asking_for_a_gpu_that_is_not_there_is_one_line(folder, capsys):
    from fgsl.infer import main

    with pytest.raises(EngineError, match=r"^engine device 'cuda': .*; use the CPU \(--engine-device cpu\)$"):
        engines.open(folder, backend="torch", device="cuda")
    with pytest.raises(EngineError, match="engine device 'cuda:1'"):
        engines.open_model(engines.open(folder, backend="torch").model, device="cuda:1")
    assert main(["--weights", str(folder), "--engine-device", "cuda", "--videos", str(SAMPLE_VIDEO)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: engine device 'cuda': ") and err.count("\n") == 1


def test_torch_engine_on_the_models_device_runs_that_model(tiny_model):
    engine = engines.open_model(tiny_model, backend="torch", device="cpu")
    assert engine.model is tiny_model  # no copy (and no second set of weights) on the same device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_torch_engine_on_the_gpu_leaves_the_callers_model_on_the_cpu(tiny_model):
    engine = engines.open_model(tiny_model, backend="torch", device="cuda")
    assert next(engine.model.parameters()).is_cuda
    assert all(not p.is_cuda for p in tiny_model.parameters())
    clips = np.random.default_rng(3).standard_normal((1, 3, 16, 32, 32)).astype(np.float32)
    with torch.no_grad():
        tiny_model(torch.from_numpy(clips))  # still runs where it was


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_torch_engine_runs_a_model_already_on_the_gpu_in_place(tiny_model):
    on_gpu = copy.deepcopy(tiny_model).to("cuda:0")
    engine = engines.open_model(on_gpu, backend="torch", device="cuda")
    assert engine.model is on_gpu and engine.device == torch.device("cuda:0")
    clips = np.random.default_rng(4).standard_normal((2, 3, 16, 32, 32)).astype(np.float32)
    want = engines.open_model(tiny_model, backend="torch", device="cpu").infer(clips)
    for key, value in engine.infer(clips).items():
        np.testing.assert_allclose(value, want[key], atol=5e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_auto_engine_device_runs_the_torch_backend_on_the_gpu(folder):
    engine = engines.open(folder, device="auto")
    d = engine.describe()
    assert d["device"].startswith("cuda") and d["backend"] in ("torch", "onnxruntime", "tensorrt")
    clips = np.random.default_rng(2).standard_normal((3, 3, 16, 32, 32)).astype(np.float32)
    cpu = engines.open(folder, backend="torch", device="cpu")
    for key, value in engine.infer(clips).items():
        np.testing.assert_allclose(value, cpu.infer(clips)[key], atol=1e-3)
    chunks = clips[:, :, :16]
    gpu_feats, cpu_feats = engine.encode_chunk(chunks), cpu.encode_chunk(chunks)
    np.testing.assert_allclose(gpu_feats["final"], cpu_feats["final"], atol=1e-3)


def test_chunks_are_checked_like_clips(folder):
    engine = engines.open(folder, backend="torch")
    with pytest.raises(EngineError, match=r"^chunks must be \[B, 3, 16, 32, 32\] with B >= 1, got \[1, 3, 8, 32, 32\]$"):
        engine.encode_chunk(np.zeros((1, 3, 8, 32, 32), np.float32))
    with pytest.raises(EngineError, match=r"^chunks must be float32 \(ImageNet-normalised\), got float64$"):
        engine.encode_chunk(np.zeros((1, 3, 16, 32, 32)))
    with pytest.raises(EngineError, match=r"^clips must be a numpy array, got list$"):
        engine.infer([])


def test_split_and_join_chunks_keep_clip_and_time_order():
    """The one NumPy cut of clips into encode_chunk's chunks, and the join of their features."""
    from engines.base import join_chunks, split_chunks

    b, t, s = 2, 48, 4
    clips = np.arange(b * 3 * t * s * s, dtype=np.float32).reshape(b, 3, t, s, s)
    chunks, n = split_chunks(clips)
    assert n == 3 and chunks.shape == (b * n, 3, 16, s, s) and chunks.flags.c_contiguous
    for i in range(b):
        for j in range(n):
            np.testing.assert_array_equal(chunks[i * n + j], clips[i, :, 16 * j:16 * (j + 1)])
    steps, taps, d = 2, 3, 5  # features that say where they came from: (chunk, tap, step)
    final = np.array([[[c * 10 + k] * d for k in range(steps)] for c in range(b * n)], np.float32)
    tapped = np.array([[[[c * 100 + q * 10 + k] * d for k in range(steps)] for q in range(taps)]
                       for c in range(b * n)], np.float32)
    joined, joined_taps = join_chunks(final, tapped, n)
    assert joined.shape == (b, n * steps, d) and joined_taps.shape == (b, taps, n * steps, d)
    for i in range(b):
        for j in range(n):
            for k in range(steps):
                assert joined[i, j * steps + k, 0] == (i * n + j) * 10 + k
                for q in range(taps):
                    assert joined_taps[i, q, j * steps + k, 0] == (i * n + j) * 100 + q * 10 + k


def test_stream_infer_is_infer(folder):
    """decode_window over encode_chunk (what a TensorRT engine with only the streaming pair runs) is infer."""
    from engines.base import stream_infer

    engine = engines.open(folder, backend="torch")
    clips = np.random.default_rng(3).standard_normal((3, 3, 16, 32, 32)).astype(np.float32)
    whole, streamed = engine.infer(clips), stream_infer(engine, clips)
    for key in whole:
        np.testing.assert_allclose(streamed[key], whole[key], atol=1e-5)
