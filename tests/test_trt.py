"""The TensorRT backend (engines.trt) as far as it can be tested without TensorRT or a GPU.

TensorRT cannot be installed on these machines and none has a GPU, so:

* the pure parts run for real: batch ranges, optimisation-profile shapes from exported ONNX
  files, precision detection (fp32 / fp16 / int8 / fp8 Q/DQ / the FIFM plugin) and its
  refusals, batch splitting, dtype mapping, atomic writes, the one-line errors when
  ``tensorrt`` or CUDA is missing (also through the CLI);
* the build and run code paths run against a stand-in ``tensorrt`` module that records every
  call, so the control flow (strongly typed network flag, parser errors, profile, timing cache
  read and written back, atomic engine + sidecar, name-based I/O, batch split/padding, the
  composed ``infer``) is exercised. The stand-in implements only what engines/trt.py calls,
  with the signatures of the TensorRT Python API reference; it proves nothing about TensorRT
  itself;
* tests with the real TensorRT are skipped with the reason unless ``tensorrt`` and a CUDA
  device exist.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from engines import cache as cache_mod
from engines import trt as trt_mod
from engines.base import EngineError
from engines.trt import (
    DEFAULT_BATCH, BatchRange, OnnxPrecision, TensorRTEngine, atomic_write, build_engine, check_precision,
    network_flags, onnx_input_shapes, onnx_precision, plan_build, profile_batch, profile_shapes, read_sidecar,
    split_batches, torch_dtype,
)
from fgsl.config import preset
from fgsl.model import build
from tests.conftest import randomise_adapters

onnx = pytest.importorskip("onnx")
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
CFG = preset("tiny")


@pytest.fixture(scope="module")
def tiny() -> Any:
    model = build(CFG, seed=0)
    randomise_adapters(model)
    return model


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory) -> dict[str, Path]:
    """The tiny model's three graphs (conv FIFM) and the plugin-form model graph, via engines.export."""
    from engines.export import export_onnx

    folder = tmp_path_factory.mktemp("onnx")
    out = {g: export_onnx(tiny, folder / f"{g}.onnx", graph=g, fifm="conv") for g in ("model", "encode_chunk",
                                                                                          "decode_window")}
    out["plugin"] = export_onnx(tiny, folder / "plugin.onnx", graph="model", fifm="plugin")
    out["static"] = export_onnx(tiny, folder / "static.onnx", graph="model", fifm="conv", batch=4)
    return out


# ---------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------

def test_batch_range_validation_and_parsing() -> None:
    assert BatchRange.parse("1,8,32") == BatchRange(1, 8, 32) == DEFAULT_BATCH
    assert BatchRange.parse("4") == BatchRange(4, 4, 4)
    assert BatchRange.parse("2,16") == BatchRange(2, 16, 16)
    for bad in ("0,1,2", "8,4,16", "1,2,3,4", "a,b"):
        with pytest.raises(EngineError, match="batch range"):
            BatchRange.parse(bad)


def test_profile_shapes_from_exported_graphs(exported: dict[str, Path]) -> None:
    t, s = CFG.window_frames, CFG.image_size
    d = CFG.backbone.embed_dim
    L, taps = CFG.tokens, len(CFG.iga_blocks)
    want = {
        "model": {"clips": (3, t, s, s)},
        "encode_chunk": {"chunks": (3, 16, s, s)},
        "decode_window": {"final": (L, d), "taps": (taps, L, d)},
    }
    batch = BatchRange(1, 8, 32)
    for graph, inputs in want.items():
        shapes = onnx_input_shapes(onnx.load(str(exported[graph])))
        assert set(shapes) == set(inputs)
        profiles = profile_shapes(shapes, batch)
        for name, rest in inputs.items():
            assert profiles[name] == ((1, *rest), (8, *rest), (32, *rest))
        assert profile_batch(profiles) == (1, 32)
    static = profile_shapes(onnx_input_shapes(onnx.load(str(exported["static"]))), batch)
    assert static["clips"] == ((4, 3, t, s, s),) * 3


def test_profile_refuses_dynamic_time_or_space() -> None:
    with pytest.raises(EngineError, match=r"input 'clips' .* dynamic dimension\(s\) \[2\]"):
        profile_shapes({"clips": [-1, 3, "T", 32, 32]})
    with pytest.raises(EngineError, match="no inputs"):
        profile_shapes({})
    with pytest.raises(EngineError, match="do not overlap"):
        profile_batch({"a": ((4, 1), (4, 1), (4, 1)), "b": ((1, 1), (2, 1), (2, 1))})


def test_split_batches() -> None:
    assert split_batches(5, 1, 32) == [(0, 5, 5)]
    assert split_batches(70, 1, 32) == [(0, 32, 32), (32, 64, 32), (64, 70, 6)]
    assert split_batches(3, 4, 4) == [(0, 3, 4)]  # padded up to the profile's minimum
    assert split_batches(9, 4, 4) == [(0, 4, 4), (4, 8, 4), (8, 9, 4)]
    with pytest.raises(EngineError):
        split_batches(0, 1, 4)


def test_torch_dtypes() -> None:
    assert torch_dtype("FLOAT") is torch.float32
    assert torch_dtype(types.SimpleNamespace(name="HALF")) is torch.float16
    assert torch_dtype("DataType.INT64") is torch.int64
    with pytest.raises(EngineError, match="not supported"):
        torch_dtype("INT4")


def test_network_flags_strongly_typed_where_the_enum_has_it() -> None:
    class Flag:
        STRONGLY_TYPED = 1  # TensorRT's value of the enum member

    assert network_flags(types.SimpleNamespace(NetworkDefinitionCreationFlag=Flag)) == 1 << 1
    assert network_flags(types.SimpleNamespace()) == 0  # a future release without the (deprecated) flag


def _qdq_model(zero_point_type: int) -> Any:
    """x -> QuantizeLinear -> DequantizeLinear -> y with a zero point of the given ONNX type."""
    from onnx import TensorProto, helper

    zp = helper.make_tensor("zp", zero_point_type, [], [0])
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [0.1])
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale", "zp"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "scale", "zp"], ["y"])]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 4])], [zp, scale])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def test_onnx_precision_detection(exported: dict[str, Path]) -> None:
    from onnx import TensorProto, helper

    fp32 = onnx_precision(onnx.load(str(exported["model"])))
    assert fp32 == OnnxPrecision((), False, False) and fp32.label == "fp32"
    cast = helper.make_model(helper.make_graph(
        [helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16),
         helper.make_node("Cast", ["h"], ["y"], to=TensorProto.FLOAT)], "cast",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]))
    assert onnx_precision(cast).label == "fp16"
    if importlib.util.find_spec("onnxconverter_common") is not None:  # engines.export's fp16 path
        from engines.export import to_fp16

        half = onnx_precision(onnx.load_from_string(to_fp16(exported["model"].read_bytes())))
        assert half.label == "fp16" and not half.qdq
    assert onnx_precision(onnx.load(str(exported["plugin"]))).plugin is True
    assert onnx_precision(_qdq_model(TensorProto.INT8)).label == "int8"
    assert onnx_precision(_qdq_model(TensorProto.FLOAT8E4M3FN)).label == "fp8"
    uint8 = onnx_precision(_qdq_model(TensorProto.UINT8))
    assert uint8.qdq == ("uint8",) and uint8.label == "uint8"  # (was "fp32": no type it knew)
    assert OnnxPrecision(("int8", "uint8"), False, False).label == "int8"


def test_check_precision_explains_strong_typing() -> None:
    fp32, int8 = OnnxPrecision((), False, False), OnnxPrecision(("int8",), True, False)
    assert check_precision("auto", fp32) == "fp32"
    assert check_precision("int8", int8) == "int8"
    with pytest.raises(EngineError, match=r"fp32 model, not int8: .*strongly typed.*calib.quantize --mode int8"):
        check_precision("int8", fp32, "m.onnx")
    with pytest.raises(EngineError, match=r"not fp16: .*ModelOpt AutoCast"):
        check_precision("fp16", fp32)
    with pytest.raises(EngineError, match=r"uint8 Q/DQ nodes, which TensorRT cannot build"):
        check_precision("auto", OnnxPrecision(("uint8",), False, False))
    with pytest.raises(EngineError, match="unknown precision"):
        check_precision("int4", fp32)


def test_plan_build_reads_the_file_without_tensorrt(exported: dict[str, Path], tmp_path: Path) -> None:
    plan = plan_build(exported["decode_window"], "fp32", BatchRange(1, 4, 8))
    assert plan.precision == "fp32" and plan.profiles["final"][2][0] == 8
    with pytest.raises(EngineError, match="no such ONNX file"):
        plan_build(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not protobuf" * 10)
    with pytest.raises(EngineError, match="not an ONNX model"):
        plan_build(bad)
    empty = tmp_path / "empty.onnx"  # any bytes parse as a protobuf message without fields
    empty.write_bytes(b"")
    with pytest.raises(EngineError, match=r"not an ONNX model \(empty graph\)"):
        plan_build(empty)
    with pytest.raises(EngineError, match=r"not fp16"):
        plan_build(exported["model"], "fp16")


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "sub" / "model.engine"
    atomic_write(target, b"old")
    atomic_write(target, b"new contents")
    assert target.read_bytes() == b"new contents"

    def boom(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(cache_mod.os, "replace", boom)  # trt writes through engines.cache.atomic_write
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, b"half")
    assert target.read_bytes() == b"new contents"
    assert [p.name for p in target.parent.iterdir()] == ["model.engine"]  # no temporary left behind


# ---------------------------------------------------------------------------------------
# Missing TensorRT / CUDA: one clear line
# ---------------------------------------------------------------------------------------

@pytest.fixture
def no_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import tensorrt`` fail even where it is installed."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


MISSING = ("the tensorrt backend needs tensorrt: install the 'trt' extra (pip install 'fgsl-spotter[trt]') on a "
           "machine with an NVIDIA GPU and driver, or use --backend onnxruntime")


def test_missing_tensorrt_is_one_line(no_tensorrt: None, exported: dict[str, Path], tmp_path: Path) -> None:
    import engines

    with pytest.raises(EngineError) as info:
        trt_mod.import_tensorrt()
    assert str(info.value) == MISSING
    with pytest.raises(EngineError, match="^the tensorrt backend needs tensorrt: "):
        build_engine(exported["model"], tmp_path / "m.engine")
    with pytest.raises(EngineError, match="^the tensorrt backend needs tensorrt: "):
        TensorRTEngine(CFG, {"model": b"plan"})
    assert not (tmp_path / "m.engine").exists()
    # The one gate before TensorRT work (engines.open's auto order, engines.build): the same line,
    # as the error type auto passes over; a CPU device is refused before TensorRT is imported.
    with pytest.raises(engines.BackendUnavailable) as gate:
        engines.tensorrt_backend("cuda")
    assert str(gate.value) == MISSING
    with pytest.raises(engines.BackendUnavailable, match="tensorrt needs a CUDA device, not 'cpu'"):
        engines.tensorrt_backend("cpu")


def test_tensorrt_whose_libraries_do_not_load_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed tensorrt whose CUDA libraries are missing raises OSError at import."""
    import importlib

    real = importlib.import_module

    def import_module(name: str, package: str | None = None) -> Any:
        if name == "tensorrt":
            raise OSError("libnvinfer.so.10: cannot open shared object file")
        return real(name, package)

    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    monkeypatch.setattr(importlib, "import_module", import_module)
    with pytest.raises(EngineError, match=r"^TensorRT is installed but its libraries cannot be loaded \(libnvinfer"):
        trt_mod.import_tensorrt()


def test_cli_help_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        trt_mod.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 1,8,32)" in text and "(default: cuda)" in text and "(default: auto)" in text


def test_too_old_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="8.6.1"))
    with pytest.raises(EngineError, match=r"TensorRT 8\.6\.1 is too old: .* >= 10"):
        trt_mod.import_tensorrt()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device exists here")
def test_no_gpu_is_one_line() -> None:
    with pytest.raises(EngineError, match=r"^the tensorrt backend needs an NVIDIA GPU: "):
        trt_mod.require_cuda("cuda")
    with pytest.raises(EngineError, match="runs on a CUDA device, not 'cpu'"):
        trt_mod.require_cuda("cpu")


def test_cli_errors_are_one_line(no_tensorrt: None, exported: dict[str, Path], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert trt_mod.main(["--onnx", str(tmp_path / "nope.onnx"), "--out", str(tmp_path / "x.engine")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'nope.onnx'}: no such ONNX file"]
    assert trt_mod.main(["--onnx", str(exported["model"]), "--out", str(tmp_path / "x.engine")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: python -m engines.trt needs tensorrt: install the 'trt' extra")
    # engines.trt has no --backend flag: the way out names the command that has one.
    assert err[0].endswith("without TensorRT, `python -m engines.build --backend onnxruntime` makes an engine folder "
                           "that ONNX Runtime runs")
    assert trt_mod.main(["--onnx", str(exported["model"]), "--out", str(tmp_path / "x.engine"),
                         "--precision", "int8"]) == 2
    assert "fp32 model, not int8" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# The build and run code paths against a stand-in tensorrt module
# ---------------------------------------------------------------------------------------

class _DType:
    def __init__(self, name: str) -> None:
        self.name = name


def _read(ptr: int, shape: tuple[int, ...], dtype: torch.dtype) -> np.ndarray:
    n = int(np.prod(shape))
    if dtype == torch.float16:
        raw = np.ctypeslib.as_array((ctypes.c_uint16 * n).from_address(ptr)).view(np.float16)
    else:
        raw = np.ctypeslib.as_array((ctypes.c_float * n).from_address(ptr))
    return raw.reshape(shape).astype(np.float32)


def _write(ptr: int, value: np.ndarray) -> None:
    value = np.ascontiguousarray(value, np.float32)
    ctypes.memmove(ptr, value.ctypes.data, value.nbytes)


class FakeTRT(types.ModuleType):
    """Only what engines/trt.py calls, named as in the TensorRT Python API; records the calls.

    Plans are ``b"graph:<name>"``; running one calls ``functions[name]`` (NumPy in, NumPy out)
    on the host memory behind the tensor addresses (CPU tensors stand in for device buffers).
    """

    def __init__(self, functions: dict[str, Any], io: dict[str, tuple[list[str], list[str]]],
                 batch: tuple[int, int], input_dtype: str = "FLOAT") -> None:
        super().__init__("tensorrt")
        self.__version__ = "10.99.0"
        self.calls: list[tuple[Any, ...]] = []
        self.functions, self.io, self.batch, self.input_dtype = functions, io, batch, input_dtype
        #: What a build returns: ``None`` fails it; by default ``b"graph:<stem of the parsed ONNX file>"``.
        self.build_result: bytes | None = b""
        self.parsed = ""
        self.parse_ok = True
        fake = self

        class Logger:
            VERBOSE, WARNING = "verbose", "warning"

            def __init__(self, level: str) -> None:
                fake.calls.append(("Logger", level))

        class Flag:
            STRONGLY_TYPED = 1

        class TensorIOMode:
            INPUT, OUTPUT = "input", "output"

        class MemoryPoolType:
            WORKSPACE = "workspace"

        self.Logger, self.NetworkDefinitionCreationFlag = Logger, Flag
        self.TensorIOMode, self.MemoryPoolType = TensorIOMode, MemoryPoolType
        self.Builder, self.OnnxParser, self.Runtime = self._builder, self._parser, self._runtime

    # -- build side
    def _builder(self, logger: Any) -> Any:
        fake = self

        class Network:
            inputs: list[Any] = []

            @property
            def num_inputs(self) -> int:
                return len(self.inputs)

            def get_input(self, i: int) -> Any:
                return self.inputs[i]

        network = Network()
        network.inputs = []

        class Cache:
            def __init__(self, data: bytes) -> None:
                self.data = data

            def serialize(self) -> bytes:
                return self.data + b"+tuned"

        class Config:
            builder_optimization_level = None

            def set_memory_pool_limit(self, pool: str, size: int) -> None:
                fake.calls.append(("set_memory_pool_limit", pool, size))

            def add_optimization_profile(self, profile: Any) -> None:
                fake.calls.append(("add_optimization_profile", dict(profile.shapes)))

            def create_timing_cache(self, data: bytes) -> Any:
                fake.calls.append(("create_timing_cache", bytes(data)))
                return None if data == b"damaged" else Cache(bytes(data))

            def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> bool:
                self.cache = cache
                fake.calls.append(("set_timing_cache", cache.data, ignore_mismatch))
                return True

            def get_timing_cache(self) -> Any:
                return self.cache

        class Profile:
            def __init__(self) -> None:
                self.shapes: dict[str, tuple[Any, ...]] = {}

            def set_shape(self, name: str, lo: Any, opt: Any, hi: Any) -> None:
                self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

        def create_network(flags: int) -> Any:
            fake.calls.append(("create_network", flags))
            return network

        def build_serialized_network(net: Any, config: Any) -> Any:
            fake.calls.append(("build_serialized_network", config.builder_optimization_level))
            plan = fake.build_result if fake.build_result != b"" else f"graph:{fake.parsed}".encode()
            return None if plan is None else memoryview(plan)

        return types.SimpleNamespace(create_network=create_network, create_builder_config=Config,
                                     create_optimization_profile=Profile,
                                     build_serialized_network=build_serialized_network)

    def _parser(self, network: Any, logger: Any) -> Any:
        fake = self
        error = types.SimpleNamespace(desc=lambda: "Unsupported operator", node_name=lambda: "/model/x/Foo",
                                      node_operator=lambda: "Foo")

        def parse_from_file(path: str) -> bool:
            fake.calls.append(("parse_from_file", path))
            fake.parsed = Path(path).stem
            for name, shape in onnx_input_shapes(onnx.load(path, load_external_data=False)).items():
                network.inputs.append(types.SimpleNamespace(
                    name=name, shape=tuple(-1 if isinstance(d, str) else d for d in shape)))
            return fake.parse_ok

        return types.SimpleNamespace(parse_from_file=parse_from_file, num_errors=0 if self.parse_ok else 2,
                                     get_error=lambda i: error)

    # -- run side
    def _runtime(self, logger: Any) -> Any:
        fake = self

        def deserialize(plan: bytes) -> Any:
            if not plan.startswith(b"graph:"):
                return None
            return FakeEngine(fake, plan[6:].decode())

        return types.SimpleNamespace(deserialize_cuda_engine=deserialize)


class FakeEngine:
    def __init__(self, trt: FakeTRT, graph: str) -> None:
        self.trt, self.graph = trt, graph
        self.inputs, self.outputs = trt.io[graph]
        self.names = self.inputs + self.outputs

    @property
    def num_io_tensors(self) -> int:
        return len(self.names)

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_mode(self, name: str) -> str:
        return "input" if name in self.inputs else "output"

    def get_tensor_dtype(self, name: str) -> _DType:
        return _DType(self.trt.input_dtype if name in self.inputs else "FLOAT")

    def get_tensor_profile_shape(self, name: str, profile: int) -> tuple[tuple[int, ...], ...]:
        lo, hi = self.trt.batch
        return ((lo, 1), (hi, 1), (hi, 1))

    def create_execution_context(self) -> Any:
        return FakeContext(self)


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.batches: list[int] = []

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        lo, hi = self.engine.trt.batch
        self.shapes[name] = tuple(shape)
        return lo <= shape[0] <= hi

    def set_tensor_address(self, name: str, ptr: int) -> None:
        self.addresses[name] = ptr

    def _outputs(self) -> dict[str, np.ndarray]:
        e = self.engine
        dtype = torch.float16 if e.trt.input_dtype == "HALF" else torch.float32
        arrays = {n: _read(self.addresses[n], self.shapes[n], dtype) for n in e.inputs}
        return e.trt.functions[e.graph](arrays)

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._outputs()[name].shape)

    def execute_async_v3(self, stream: int) -> bool:
        self.batches.append(self.shapes[self.engine.inputs[0]][0])
        for name, value in self._outputs().items():
            _write(self.addresses[name], value)
        return True


def _torch_functions(model: Any) -> dict[str, Any]:
    def run(fn: Any, *names: str) -> Any:
        def call(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            with torch.no_grad():
                out = fn(*(torch.from_numpy(arrays[n]) for n in names))
            if isinstance(out, tuple):
                out = {"final": out[0], "taps": out[1]}
            return {k: v.numpy() for k, v in out.items()}
        return call

    return {"model": run(model, "clips"), "encode_chunk": run(model.encode_chunk, "chunks"),
            "decode_window": run(model.decode_window, "final", "taps")}


IO = {"model": (["clips"], ["scores", "offsets"]), "encode_chunk": (["chunks"], ["final", "taps"]),
      "decode_window": (["final", "taps"], ["scores", "offsets"])}


@pytest.fixture
def fake_trt(monkeypatch: pytest.MonkeyPatch, tiny: Any) -> FakeTRT:
    """Install the stand-in as ``tensorrt``; CUDA calls become no-ops on CPU tensors."""
    fake = FakeTRT(_torch_functions(tiny), IO, batch=(1, 3))
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(trt_mod, "require_cuda", lambda device="cuda": torch.device("cpu"))
    monkeypatch.setattr(trt_mod, "gpu_info", lambda dev: {"gpu": "Stand-in GPU", "compute_capability": "9.0"})
    monkeypatch.setattr(torch.cuda, "device", lambda dev: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    stream = types.SimpleNamespace(cuda_stream=7, synchronize=lambda: None)
    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: stream)
    return fake


def test_build_engine_control_flow(fake_trt: FakeTRT, exported: dict[str, Path], tmp_path: Path) -> None:
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old-cache")
    engine_path = tmp_path / "out" / "model.engine"
    info = build_engine(exported["model"], engine_path, batch=BatchRange(1, 2, 4), timing_cache=cache,
                        workspace_mb=256, optimization_level=4)
    calls = fake_trt.calls
    assert ("create_network", 1 << 1) in calls  # STRONGLY_TYPED
    assert ("parse_from_file", str(exported["model"])) in calls
    profile = next(c[1] for c in calls if c[0] == "add_optimization_profile")
    t, s = CFG.window_frames, CFG.image_size
    assert profile == {"clips": ((1, 3, t, s, s), (2, 3, t, s, s), (4, 3, t, s, s))}
    assert ("set_memory_pool_limit", "workspace", 256 << 20) in calls
    assert ("set_timing_cache", b"old-cache", False) in calls
    assert ("build_serialized_network", 4) in calls
    assert engine_path.read_bytes() == b"graph:model"
    assert cache.read_bytes() == b"old-cache+tuned"  # written back after the build
    sidecar = read_sidecar(engine_path)
    assert sidecar == info
    assert info["precision"] == "fp32" and info["tensorrt"] == "10.99.0" and info["gpu"] == "Stand-in GPU"
    assert info["profile"]["clips"][2] == [4, 3, t, s, s] and info["fifm_plugin"] is False
    assert json.loads((tmp_path / "out" / "model.engine.json").read_text())["onnx"] == "model.onnx"


def test_build_engine_failures_are_one_line(fake_trt: FakeTRT, exported: dict[str, Path], tmp_path: Path) -> None:
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"damaged")
    fake_trt.build_result = None
    with pytest.raises(EngineError, match="TensorRT could not build an engine"):
        build_engine(exported["model"], tmp_path / "a.engine", timing_cache=cache, log=lambda m: None)
    assert ("create_timing_cache", b"") in fake_trt.calls  # a damaged cache is replaced, not fatal
    assert not (tmp_path / "a.engine").exists()
    fake_trt.parse_ok = False
    with pytest.raises(EngineError, match=r"ONNX parser failed: Unsupported operator \(node /model/x/Foo Foo\); "
                                          r"Unsupported operator .*"):
        build_engine(exported["model"], tmp_path / "b.engine")


def test_build_plugin_onnx_needs_the_python_plugin_api(fake_trt: FakeTRT, exported: dict[str, Path],
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from engines.plugins import fifm_fft

    monkeypatch.setattr(fifm_fft, "_registered", False)
    with pytest.raises(EngineError, match=r"uses the FIFM plugin fgsl::FIFMFilter but tensorrt.plugin cannot be "
                                          r"imported .*--fifm conv"):
        build_engine(exported["plugin"], tmp_path / "p.engine")
    monkeypatch.setattr(trt_mod, "register_plugin", lambda: True)
    info = build_engine(exported["plugin"], tmp_path / "p.engine")
    assert info["fifm_plugin"] is True


def test_engine_runs_the_protocol_by_tensor_name(fake_trt: FakeTRT, tiny: Any) -> None:
    """All three graphs; batches above the profile maximum (3) are split; results equal torch."""
    from engines.torch_backend import TorchEngine

    engine = TensorRTEngine(CFG, {g: f"graph:{g}".encode() for g in IO}, source="stand-in")
    ref = TorchEngine(tiny)
    g = np.random.default_rng(0)
    clips = g.standard_normal((5, 3, CFG.window_frames, CFG.image_size, CFG.image_size)).astype(np.float32)
    got, want = engine.infer(clips), ref.infer(clips)
    for key in ("scores", "offsets"):
        assert np.abs(got[key] - want[key]).max() <= 1e-5
    assert engine._graphs["model"].context.batches == [3, 2]
    chunks = clips[:, :, :16]
    enc, enc_ref = engine.encode_chunk(np.ascontiguousarray(chunks)), ref.encode_chunk(np.ascontiguousarray(chunks))
    assert np.abs(enc["taps"] - enc_ref["taps"]).max() <= 1e-5
    final, taps = ref.model.encode_window(torch.from_numpy(clips))
    dec = engine.decode_window(final.detach().numpy(), taps.detach().numpy())
    assert np.abs(dec["scores"] - want["scores"]).max() <= 1e-5
    d = engine.describe()
    assert d["backend"] == "tensorrt" and d["batch_range"] == [1, 3] and "Stand-in GPU" in d["device"]
    assert "TensorRT 10.99.0" in d["device"] and d["graphs"] == list(IO)
    with pytest.raises(EngineError, match=r"clips must be \[B, 3"):
        engine.infer(clips[:, :, :16])


def test_engine_infer_composes_the_streaming_pair_and_pads_small_batches(fake_trt: FakeTRT, tiny: Any) -> None:
    """Only encode_chunk + decode_window built (as engines.open does): infer == torch; a profile
    with minimum batch 2 gets a padded batch of 1; half-precision inputs are converted."""
    from engines.torch_backend import TorchEngine

    fake_trt.batch = (2, 8)
    fake_trt.input_dtype = "HALF"
    engine = TensorRTEngine(CFG, {"encode_chunk": b"graph:encode_chunk", "decode_window": b"graph:decode_window"},
                            precision="fp16")
    clips = np.random.default_rng(1).standard_normal(
        (1, 3, CFG.window_frames, CFG.image_size, CFG.image_size)).astype(np.float32)
    got = engine.infer(clips)
    want = TorchEngine(tiny).infer(clips.astype(np.float16).astype(np.float32))
    assert got["scores"].shape == want["scores"].shape
    assert np.abs(got["scores"] - want["scores"]).max() <= 5e-2  # the final/taps hop through float16
    assert engine._graphs["decode_window"].context.batches == [2]  # 1 window padded to the minimum 2
    assert engine.describe()["precision"] == "fp16"


def test_engine_refusals(fake_trt: FakeTRT, tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="cannot load this model engine"):
        TensorRTEngine(CFG, {"model": b"not a plan"})
    with pytest.raises(EngineError, match="no such TensorRT engine file"):
        TensorRTEngine(CFG, {"model": tmp_path / "missing.engine"})
    with pytest.raises(EngineError, match="needs the model graph or both"):
        TensorRTEngine(CFG, {"encode_chunk": b"graph:encode_chunk"})
    with pytest.raises(EngineError, match="graphs among"):
        TensorRTEngine(CFG, {"whole": b"graph:model"})
    engine = TensorRTEngine(CFG, {"model": b"graph:model"})
    with pytest.raises(EngineError, match="has no encode_chunk graph"):
        engine.encode_chunk(np.zeros((1, 3, 16, CFG.image_size, CFG.image_size), np.float32))


def test_engine_reads_its_precision_from_the_sidecars(fake_trt: FakeTRT, exported: dict[str, Path],
                                                       tmp_path: Path) -> None:
    """Plans given as files and no precision: the sidecars build_engine wrote beside them say it."""
    plan = tmp_path / "engines" / "model.engine"
    build_engine(exported["model"], plan)
    engine = TensorRTEngine(CFG, {"model": plan})
    assert engine.precision == "fp32" and engine.describe()["precision"] == "fp32"


def test_engines_open_runs_a_tensorrt_engine_folder(fake_trt: FakeTRT, tiny: Any, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """What engines.build --backend tensorrt writes, opened the one way engines are opened from a
    path (engines.open): every graph's plan, checked against the manifest, runs as torch does."""
    import engines
    from engines.build import build_tensorrt
    from engines.export import export_engine_dir
    from engines.torch_backend import TorchEngine

    monkeypatch.setattr(engines, "resolve_device", lambda device: device)  # no GPU here: "cuda" taken as is
    folder = tmp_path / "engine"
    export_engine_dir(tiny, folder, trained=True, backend="tensorrt")
    assert set(build_tensorrt(folder, "fp32")["plans"]) == set(IO)
    engine = engines.open(folder, backend="tensorrt", device="cuda")
    d = engine.describe()
    assert d["backend"] == "tensorrt" and d["precision"] == "fp32" and d["fifm_form"] == "conv"
    assert d["source"] == str(folder) and d["graphs"] == list(IO)
    clips = np.random.default_rng(2).standard_normal(
        (2, 3, CFG.window_frames, CFG.image_size, CFG.image_size)).astype(np.float32)
    ref = TorchEngine(tiny)
    got, want = engine.infer(clips), ref.infer(clips)
    assert np.abs(got["scores"] - want["scores"]).max() <= 1e-5
    enc = engine.encode_chunk(np.ascontiguousarray(clips[:, :, :16]))
    assert np.abs(enc["final"] - ref.encode_chunk(np.ascontiguousarray(clips[:, :, :16]))["final"]).max() <= 1e-5
    (folder / "decode_window.engine").write_bytes(b"graph:decode_window, altered")
    with pytest.raises(EngineError, match=r"decode_window.engine: altered .*rebuild it"):
        engines.open(folder, backend="tensorrt", device="cuda")


# ---------------------------------------------------------------------------------------
# The real thing (where TensorRT and a GPU exist)
# ---------------------------------------------------------------------------------------

@pytest.mark.skipif(not (HAS_TENSORRT and torch.cuda.is_available()),
                    reason="needs tensorrt and a CUDA GPU (neither exists on these machines)")
@pytest.mark.slow
def test_real_tensorrt_engines_equal_torch(exported: dict[str, Path], tiny: Any, tmp_path: Path) -> None:
    from engines.torch_backend import TorchEngine

    plans = {}
    for graph in ("model", "encode_chunk", "decode_window"):
        plans[graph] = tmp_path / f"{graph}.engine"
        build_engine(exported[graph], plans[graph], batch=BatchRange(1, 4, 8), timing_cache=tmp_path / "cache")
    engine = TensorRTEngine(CFG, plans)
    clips = np.random.default_rng(0).standard_normal(
        (10, 3, CFG.window_frames, CFG.image_size, CFG.image_size)).astype(np.float32)
    want = TorchEngine(tiny).infer(clips)
    got = engine.infer(clips)
    assert np.abs(got["scores"] - want["scores"]).max() <= 1e-3
    plugin_plan = tmp_path / "plugin.engine"
    build_engine(exported["plugin"], plugin_plan)
    got = TensorRTEngine(CFG, {"model": plugin_plan}).infer(clips)
    assert np.abs(got["scores"] - want["scores"]).max() <= 1e-3


def test_module_imports_no_tensorrt() -> None:
    """Importing the backend (and the plugin module) never imports tensorrt."""
    code = ("import sys, engines.trt, engines.plugins.fifm_fft; "
            "assert 'tensorrt' not in sys.modules, sorted(m for m in sys.modules if 'tensorrt' in m)")
    import subprocess

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr

