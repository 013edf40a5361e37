import numpy as np
import pytest
import torch

import engines
from engines import EngineError
from fgsl import weights
from tests.conftest import randomise_adapters


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
    assert d["device"].startswith("cpu")


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
