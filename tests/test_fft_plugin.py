"""The FIFM FFT plugin (engines.plugins.fifm_fft): its kernel against the torch FIFM, the ONNX
contract it implements, and its TensorRT registration.

What runs where: the kernel runs here on CPU (and on CUDA where a GPU exists) against
``fgsl.fifm``'s frequency form (rFFT -> Lorentzian two-peak response -> irFFT) and against a
float64 NumPy reference for complex filters, on odd and even lengths, within 1e-5. The
plugin-form ONNX written by ``engines.export`` runs here in ONNX's reference evaluator with
the kernel as the ``fgsl::FIFMFilter`` op, against the torch model. The registration with
``tensorrt.plugin`` runs against a stand-in module that enforces the decorators' documented
signature rules (TensorRT cannot be installed here); the real registration and a real
engine run only where ``tensorrt`` and a GPU exist (skipped otherwise, with the reason).
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import types
import typing

import numpy as np
import pytest
import torch

import fgsl.fifm as fifm_module
from engines.plugins import fifm_fft
from engines.plugins.fifm_fft import (
    AUTOTUNE_TYPES, FIFMFilterError, ONNX_DOMAIN, OP_TYPE, PLUGIN_ID, PLUGIN_NAMESPACE, block_responses,
    fifm_fft_filter, fifm_fft_filter_numpy, register_plugin,
)
from fgsl.config import preset
from fgsl.fifm import ResonantFilter, cosine_basis, filter_conv_form, filter_frequency_form
from fgsl.model import build
from tests.conftest import randomise_adapters

LENGTHS = (1, 2, 7, 8, 15, 16, 31, 33, 64)
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def random_filter(channels: int, seed: int) -> ResonantFilter:
    """A ResonantFilter with random (trained-looking) peaks, quality and gains."""
    g = torch.Generator().manual_seed(seed)
    f = ResonantFilter(channels)
    with torch.no_grad():
        f.f_cls_raw.copy_(torch.randn((), generator=g))
        f.f_loc_raw.copy_(torch.randn((), generator=g))
        f.q_raw.copy_(torch.randn((), generator=g))
        f.gain_main.copy_(torch.randn(channels, generator=g))
        f.gain_side.copy_(torch.randn(channels, generator=g))
    return f


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("to_cls", [True, False])
def test_kernel_equals_torch_fifm_frequency_form(length: int, to_cls: bool) -> None:
    channels = 6
    x = torch.randn(3, channels, length, generator=torch.Generator().manual_seed(length))
    with torch.no_grad():
        response = random_filter(channels, seed=length).response(length, to_cls)
        want = filter_frequency_form(x, response)
        got = fifm_fft_filter(x, response, torch.zeros_like(response))
        got_real = fifm_fft_filter(x, response)
    assert got.dtype == torch.float32 and got.shape == x.shape
    assert (got - want).abs().max().item() <= 1e-5
    assert (got_real - want).abs().max().item() <= 1e-5


@pytest.mark.parametrize("length", LENGTHS)
def test_kernel_complex_filter_against_numpy_float64(length: int) -> None:
    rng = np.random.default_rng(length)
    x = rng.standard_normal((2, 5, length)).astype(np.float32)
    re = rng.standard_normal((5, length // 2 + 1)).astype(np.float32)
    im = rng.standard_normal((5, length // 2 + 1)).astype(np.float32)
    want = np.fft.irfft(np.fft.rfft(x.astype(np.float64), axis=-1) * (re + 1j * im), n=length, axis=-1)
    got = fifm_fft_filter_numpy(x, re, im)
    assert got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-5
    got64 = fifm_fft_filter(torch.from_numpy(x.astype(np.float64)), torch.from_numpy(re), torch.from_numpy(im))
    assert got64.dtype == torch.float64 and np.abs(got64.numpy() - want).max() <= 1e-12


@pytest.mark.parametrize("length", [9, 16])
def test_kernel_equals_circular_convolution_form(length: int) -> None:
    """irfft(H rfft(x)) == x circularly convolved with irfft(H): the engines' conv form."""
    channels = 4
    x = torch.randn(2, channels, length, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        response = random_filter(channels, seed=2).response(length, True)
        conv = filter_conv_form(x, response @ cosine_basis(length))
    assert (fifm_fft_filter(x, response) - conv).abs().max().item() <= 1e-5


def test_kernel_out_buffer_and_half_precision() -> None:
    x = torch.randn(2, 3, 12)
    response = torch.rand(3, 7)
    out = torch.empty_like(x)
    assert fifm_fft_filter(x, response, out=out) is out
    assert torch.allclose(out, filter_frequency_form(x, response), atol=1e-5)
    half = fifm_fft_filter(x.half(), response.half())
    assert half.dtype == torch.float16
    assert (half.float() - filter_frequency_form(x.half().float(), response.half().float())).abs().max() < 1e-2


def test_kernel_refuses_bad_shapes_in_one_line() -> None:
    x = torch.randn(2, 3, 8)
    with pytest.raises(FIFMFilterError, match=r"response_re must be \[C, L//2\+1\] = \[3, 5\]"):
        fifm_fft_filter(x, torch.zeros(3, 4))
    with pytest.raises(FIFMFilterError, match="response_im"):
        fifm_fft_filter(x, torch.zeros(3, 5), torch.zeros(2, 5))
    with pytest.raises(FIFMFilterError, match=r"x must be \[\.\.\., C, L\]"):
        fifm_fft_filter(torch.randn(8), torch.zeros(1, 5))
    with pytest.raises(FIFMFilterError, match="output buffer"):
        fifm_fft_filter(x, torch.zeros(3, 5), out=torch.empty(2, 3, 9))


def test_whole_model_with_the_kernel_as_fifm_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    """The FGSL forward with every FIFM filter computed by the plugin kernel equals the model."""
    cfg = preset("tiny", window_frames=16)
    model = build(cfg, seed=0)
    randomise_adapters(model)
    clips = torch.randn(2, 3, 16, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = model(clips)
        calls = []

        def kernel(x: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
            calls.append(tuple(x.shape))
            return fifm_fft_filter(x, response, torch.zeros_like(response))

        monkeypatch.setattr(fifm_module, "filter_frequency_form", kernel)
        got = model(clips)
    assert len(calls) == 2 * cfg.fifm_blocks
    for key in ("scores", "offsets"):
        assert (got[key] - want[key]).abs().max().item() <= 1e-5


def test_plugin_form_onnx_runs_with_the_kernel_and_equals_torch(tmp_path) -> None:
    """``engines.export`` plugin form: the node contract, its initializers, and its numbers.

    The exported graph is run by ONNX's reference evaluator with the kernel as the custom op
    (ONNX Runtime cannot run it): the whole model equals torch, so the plugin's inputs and
    semantics are what FIFM computes.
    """
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator
    from onnx.reference.op_run import OpRun

    from engines.export import export_onnx

    cfg = preset("tiny")
    model = build(cfg, seed=0)
    randomise_adapters(model)
    path = export_onnx(model, tmp_path / "model.onnx", graph="model", fifm="plugin")
    proto = onnx.load(str(path))
    nodes = [n for n in proto.graph.node if n.op_type == OP_TYPE]
    assert len(nodes) == 2 * cfg.fifm_blocks
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    expected = block_responses(model)
    for node in nodes:
        assert node.domain == ONNX_DOMAIN and len(node.input) == 3 and len(node.output) == 1
        assert {a.name: a.s.decode() for a in node.attribute} == {"plugin_namespace": PLUGIN_NAMESPACE}
        re, im = inits[node.input[1]], inits[node.input[2]]
        assert re.shape == (cfg.neck_dim, cfg.tokens // 2 + 1) and re.dtype == np.float32
        assert not im.any()
        assert any(np.allclose(re, e[k], atol=1e-6) for e in expected for k in e)

    class FIFMFilter(OpRun):
        op_domain = ONNX_DOMAIN

        def _run(self, x, response_re, response_im, plugin_namespace=None):  # noqa: ANN001, ANN202
            return (fifm_fft_filter_numpy(x, response_re, response_im),)

    clips = torch.randn(2, 3, cfg.window_frames, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(0))
    got = ReferenceEvaluator(proto, new_ops=[FIFMFilter]).run(None, {"clips": clips.numpy()})
    with torch.no_grad():
        want = model(clips)
    assert np.abs(got[0] - want["scores"].numpy()).max() <= 1e-4
    assert np.abs(got[1] - want["offsets"].numpy()).max() <= 1e-4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here: the CUDA (cuFFT) run needs a GPU")
@pytest.mark.parametrize("length", [15, 64])
def test_kernel_on_cuda_equals_cpu_fifm(length: int) -> None:
    x = torch.randn(4, 32, length)
    response = random_filter(32, seed=length).response(length, False).detach()
    want = filter_frequency_form(x, response)
    got = fifm_fft_filter(x.cuda(), response.cuda(), torch.zeros_like(response).cuda())
    assert got.is_cuda and (got.cpu() - want).abs().max().item() <= 1e-5
    stream = torch.cuda.Stream()
    out = torch.empty_like(x).cuda()
    with torch.cuda.stream(stream):
        fifm_fft_filter(x.cuda(), response.cuda(), None, out=out)
    stream.synchronize()
    assert (out.cpu() - want).abs().max().item() <= 1e-5


# ---------------------------------------------------------------------------------------
# Registration with tensorrt.plugin
# ---------------------------------------------------------------------------------------

class _FakeTensorDesc:
    def __init__(self, shape: tuple[int, ...], dtype: str = "FP32") -> None:
        self.shape, self.dtype = shape, dtype

    def like(self) -> "_FakeTensorDesc":
        return _FakeTensorDesc(self.shape, self.dtype)


class _FakeTensor:
    def __init__(self, value: torch.Tensor) -> None:
        self.value = value


class _FakeAutoTune:
    def __init__(self, io_types: str, layouts: str = "LINEAR") -> None:
        self.io_types, self.layouts = io_types, layouts


def _fake_trtp() -> types.ModuleType:
    """A stand-in for ``tensorrt.plugin`` that enforces the decorators' documented rules.

    ``register``: every argument annotated, TensorDesc inputs first (checked with
    ``issubclass``, as TensorRT does, so string annotations fail), a TensorDesc return;
    ``impl``: arguments exactly (inputs..., outputs, stream); ``autotune``: (inputs...,
    outputs), returning AutoTuneCombinations (trt_plugin_register/impl/autotune reference).
    """
    mod = types.ModuleType("tensorrt.plugin")
    mod.TensorDesc, mod.Tensor, mod.AutoTuneCombination = _FakeTensorDesc, _FakeTensor, _FakeAutoTune
    mod.registry = {}

    def register(plugin_id: str):  # noqa: ANN202
        namespace, _, name = plugin_id.partition("::")
        assert namespace and name and "." not in namespace + name and namespace not in ("", "trt", "tensorrt", "std")

        def deco(fn):  # noqa: ANN001, ANN202
            sig = inspect.signature(fn)
            tensors = []
            for pname, param in sig.parameters.items():
                assert param.annotation is not inspect.Parameter.empty, f"{pname} has no annotation"
                assert issubclass(param.annotation, _FakeTensorDesc), f"{pname}: {param.annotation!r}"
                tensors.append(pname)
            assert issubclass(sig.return_annotation, _FakeTensorDesc)
            mod.registry[plugin_id] = {"desc": fn, "inputs": tensors}
            return fn
        return deco

    def impl(plugin_id: str):  # noqa: ANN202
        def deco(fn):  # noqa: ANN001, ANN202
            entry = mod.registry[plugin_id]
            assert list(inspect.signature(fn).parameters) == entry["inputs"] + ["outputs", "stream"]
            hints = typing.get_type_hints(fn)
            assert typing.get_origin(hints["outputs"]) is tuple and hints["stream"] is int
            entry["impl"] = fn
            return fn
        return deco

    def autotune(plugin_id: str):  # noqa: ANN202
        def deco(fn):  # noqa: ANN001, ANN202
            entry = mod.registry[plugin_id]
            assert list(inspect.signature(fn).parameters) == entry["inputs"] + ["outputs"]
            entry["autotune"] = fn
            return fn
        return deco

    mod.register, mod.impl, mod.autotune = register, impl, autotune
    return mod


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed here: registration is tested for real below")
def test_register_without_tensorrt_returns_false_with_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fifm_fft, "_registered", False)
    assert register_plugin() is False
    assert "tensorrt.plugin cannot be imported" in (fifm_fft.unavailable_reason() or "")
    assert not fifm_fft.is_registered()


def test_registration_against_the_plugin_api_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """register/autotune/impl pass TensorRT's signature rules; impl runs the kernel (here on CPU)."""
    trtp = _fake_trtp()
    package = types.ModuleType("tensorrt")
    package.plugin = trtp
    monkeypatch.setitem(sys.modules, "tensorrt", package)
    monkeypatch.setitem(sys.modules, "tensorrt.plugin", trtp)
    monkeypatch.setattr(fifm_fft, "_registered", False)
    # The impl views TensorRT's device buffers through torch.as_tensor(..., device="cuda") on
    # TensorRT's stream; here the stand-in tensors hold CPU torch tensors.
    monkeypatch.setattr(fifm_fft, "_as_torch", lambda t: t.value)
    streams = []
    monkeypatch.setattr(fifm_fft, "_on_stream", lambda s: streams.append(s) or torch.no_grad())
    assert register_plugin() is True and register_plugin() is True  # idempotent
    entry = trtp.registry[PLUGIN_ID]
    assert entry["inputs"] == ["x", "response_re", "response_im"]
    desc = entry["desc"](_FakeTensorDesc((4, 32, 16)), _FakeTensorDesc((32, 9)), _FakeTensorDesc((32, 9)))
    assert desc.shape == (4, 32, 16)
    combos = entry["autotune"](None, None, None, (None,))
    assert [c.io_types for c in combos] == [AUTOTUNE_TYPES]
    assert len(AUTOTUNE_TYPES.split(",")) == 4  # x, response_re, response_im, y
    x = torch.randn(4, 32, 16)
    response = random_filter(32, seed=5).response(16, True).detach()
    out = torch.empty_like(x)
    entry["impl"](_FakeTensor(x), _FakeTensor(response), _FakeTensor(torch.zeros_like(response)), (_FakeTensor(out),), 1234)
    assert streams == [1234]
    assert (out - filter_frequency_form(x, response)).abs().max().item() <= 1e-5
    monkeypatch.setattr(fifm_fft, "_registered", False)


@pytest.mark.skipif(not HAS_TENSORRT, reason="tensorrt is not installed (it cannot be installed on these machines)")
def test_real_tensorrt_registration() -> None:
    assert register_plugin() is True
    import tensorrt.plugin as trtp

    assert fifm_fft.is_registered() and callable(trtp.impl)


@pytest.mark.skipif(not (HAS_TENSORRT and torch.cuda.is_available()),
                    reason="needs tensorrt and a CUDA GPU (neither exists on these machines)")
def test_real_tensorrt_engine_with_the_plugin_equals_torch(tmp_path) -> None:
    """The FIFM filter alone, exported in plugin form, built and run by TensorRT."""
    from engines.export import filter_probe
    from engines.trt import BatchRange, build_engine

    data, x, want = filter_probe(32, 64, form="plugin")
    onnx_path = tmp_path / "probe.onnx"
    onnx_path.write_bytes(data)
    info = build_engine(onnx_path, tmp_path / "probe.engine", batch=BatchRange(2, 2, 2))
    assert info["fifm_plugin"] is True
    import tensorrt as trt

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine((tmp_path / "probe.engine").read_bytes())
    context = engine.create_execution_context()
    xin = torch.from_numpy(x).cuda()
    y = torch.empty_like(xin)
    context.set_input_shape("x", tuple(xin.shape))
    context.set_tensor_address("x", xin.data_ptr())
    context.set_tensor_address("y", y.data_ptr())
    stream = torch.cuda.Stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    assert np.abs(y.cpu().numpy() - want).max() <= 1e-4
