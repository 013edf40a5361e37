"""TensorRT backend: build a serialized engine from ONNX, and run it with the Engine protocol.

Optional extra ``trt`` (``pip install 'fgsl-spotter[trt]'``, which pulls ``tensorrt>=10``).
Every ``tensorrt`` import is lazy, inside the functions that need it, so this module imports
on any machine; without TensorRT or without a CUDA GPU each entry point fails with one clear
:class:`~engines.base.EngineError` line, and no TensorRT object (logger aside, which is a
plain Python object) is created before a CUDA device has been found.

Build (:func:`build_engine`), written against the TensorRT Python API of the current releases
---------------------------------------------------------------------------------------------
1. ``trt.Builder(logger)``; ``builder.create_network(flags)`` with
   ``1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)``. TensorRT 10 opts in with
   that flag; TensorRT 11 builds every network strongly typed and accepts the flag but
   ignores it ("Deprecated in TensorRT 11.0. Strongly typed mode is always enabled", Builder
   reference, docs.nvidia.com/deeplearning/tensorrt/11.0.0/_static/python-api/infer/Core/
   Builder.html). :func:`network_flags` sets it when the enum has it.
2. ``trt.OnnxParser(network, logger).parse_from_file(path)`` (the parser reads external
   weight files beside the model); parser errors become one line naming the node.
3. Precision comes from the ONNX graph, never from builder flags: strongly typed networks
   refuse ``BuilderFlag.FP16``/``INT8`` in 10.x and 11.x removed those flags ("Strongly Typed
   Networks Are Now Required", TensorRT 10.x -> 11.x migration guide, and "Removed Python APIs
   and Replacements": ``BuilderFlag.FP16`` -> "Strong typing with ModelOpt AutoCast",
   ``BuilderFlag.INT8``/``FP8`` -> "Explicit quantization with Q/DQ nodes"). So an FP16 engine
   is built from an FP16 ONNX (``python -m calib.quantize --mode fp16``: ModelOpt AutoCast) and
   INT8/FP8 engines from a Q/DQ ONNX (``--mode int8|fp8``: ModelOpt PTQ).
   :func:`onnx_precision` reads which one a file is and :func:`check_precision` refuses a
   mismatch with the command that makes the right file.
4. One optimisation profile over the batch range (``builder.create_optimization_profile()``,
   ``profile.set_shape(name, min, opt, max)``, ``config.add_optimization_profile``): only the
   batch dimension is dynamic (T, H and W are fixed by the config), computed by the pure
   function :func:`profile_shapes`.
5. A timing cache file (``config.create_timing_cache(bytes)``,
   ``config.set_timing_cache(cache, ignore_mismatch=False)``, saved back with
   ``config.get_timing_cache().serialize()``) so rebuilding for another precision or batch
   range on the same GPU reuses the measured tactics. A damaged cache file is ignored (and
   replaced), not fatal.
6. ``builder.build_serialized_network(network, config)``; the plan is written atomically
   (temporary file in the same folder, fsync, ``os.replace``), with a JSON sidecar
   ``<engine>.json`` recording what it was built from and for (ONNX hash, precision, profile,
   TensorRT version, GPU and compute capability).

API reference used: docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/
(``Builder``, ``IBuilderConfig``, ``IOptimizationProfile``, ``ITimingCache``, ``Onnx
Parser``, ``ICudaEngine``, ``IExecutionContext``).

Run (:class:`TensorRTEngine`)
-----------------------------
``trt.Runtime(logger).deserialize_cuda_engine(plan)``, one ``IExecutionContext`` per graph,
name-based I/O: ``context.set_input_shape(name, shape)``, ``context.set_tensor_address(name,
ptr)`` for every input and output, ``context.execute_async_v3(stream)`` on a dedicated CUDA
stream. Device buffers are torch CUDA tensors (torch is a dependency anyway; no pycuda or
cuda-python needed), host<->device copies are queued on the same stream, and the stream is
synchronised once per call. Batches larger than the profile's maximum are split, smaller
than its minimum padded. The FIFM plugin (``engines.plugins.fifm_fft``) is registered before
any engine is deserialized: an engine built from a ``--fifm plugin`` ONNX calls back into it.

What has been run: nothing in this module that touches TensorRT. TensorRT cannot be
installed on the development machines and the GPU machine has none either; the pure parts
(profiles, precision detection, batch splitting, dtype mapping, error messages, atomic
writes) and the control flow of :func:`build_engine` against a stand-in ``tensorrt`` module
are tested (``tests/test_trt.py``); ``docs/tensorrt.md`` says exactly what.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fgsl.startup import quiet_exit, startup_imports

# Importing torch takes the first second or two: Ctrl-C then is no bug (fgsl.startup).
with startup_imports(__name__):
    import numpy as np

    from fgsl.config import FGSLConfig

    from .base import (GRAPHS, PRECISIONS, EngineError, check_chunks, check_clips, check_features, cuda_missing_reason,
                       read_onnx, resolve_device, stream_infer)
    from .cache import atomic_write, sha256_file
    from .extras import TRT_HINT, require
    from .plugins.fifm_fft import ONNX_DOMAIN, OP_TYPE, PLUGIN_ID, register_plugin, unavailable_reason

#: Oldest TensorRT this backend is written for (name-based I/O, strongly typed networks).
MIN_TENSORRT_MAJOR = 10
SIDECAR_FORMAT = "fgsl-tensorrt-engine"
#: The way out for commands with a ``--backend`` flag (engines.build, fgsl.infer, realtime.cam).
INSTALL_HINT = f"{TRT_HINT}, or use --backend onnxruntime"
#: The way out for ``python -m engines.trt``, which builds TensorRT engines only.
CLI_INSTALL_HINT = (f"{TRT_HINT}; without TensorRT, `python -m engines.build --backend onnxruntime` makes an "
                    "engine folder that ONNX Runtime runs")


# ---------------------------------------------------------------------------------------
# Availability (one clear line when something is missing)
# ---------------------------------------------------------------------------------------

def import_tensorrt(needed_by: str = "the tensorrt backend", hint: str = INSTALL_HINT) -> Any:
    """``import tensorrt``, or :class:`EngineError` saying what is missing and what to do
    (:func:`engines.extras.require`; ``needed_by`` and ``hint``: the command that needs
    TensorRT and its way out, in that command's words). Beyond the shared probe: TensorRT's
    CUDA libraries that cannot be loaded (``OSError``) and a TensorRT older than 10."""
    try:
        require(("tensorrt",), needed_by, hint)
    except OSError as exc:  # the Python package is there but its CUDA libraries are not loadable
        raise EngineError(f"TensorRT is installed but its libraries cannot be loaded ({exc}): "
                          "check the NVIDIA driver and CUDA libraries") from None
    import tensorrt as trt  # noqa: PLC0415 (optional dependency, imported lazily on purpose)

    version = str(getattr(trt, "__version__", "0"))
    if _major(version) < MIN_TENSORRT_MAJOR:
        raise EngineError(f"TensorRT {version} is too old: the tensorrt backend needs TensorRT >= "
                          f"{MIN_TENSORRT_MAJOR} (strongly typed networks, name-based I/O)")
    return trt


def _major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:
        return 0


def require_cuda(device: str = "cuda") -> Any:
    """The ``torch.device`` to run on, or :class:`EngineError` when there is no usable GPU.

    Buffers live in torch CUDA tensors, so a torch build without CUDA is as fatal as no GPU.
    """
    import torch  # noqa: PLC0415

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise EngineError(f"bad device {device!r} for the tensorrt backend ({exc})") from None
    if dev.type != "cuda":
        raise EngineError(f"the tensorrt backend runs on a CUDA device, not {device!r}")
    reason = cuda_missing_reason()
    if reason:
        raise EngineError(f"the tensorrt backend needs an NVIDIA GPU: {reason}")
    if dev.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(resolve_device(device))  # checks that GPU exists


def gpu_info(device: Any) -> dict[str, str]:
    """Name and compute capability of a CUDA ``torch.device`` (for sidecars and ``describe``)."""
    import torch  # noqa: PLC0415

    major, minor = torch.cuda.get_device_capability(device)
    return {"gpu": torch.cuda.get_device_name(device), "compute_capability": f"{major}.{minor}"}


# ---------------------------------------------------------------------------------------
# Pure helpers: batch range, profiles, precision, dtypes (tested without TensorRT)
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BatchRange:
    """The optimisation profile's batch sizes: ``min <= opt <= max`` (TensorRT tunes for ``opt``)."""

    min: int = 1
    opt: int = 8
    max: int = 32

    def __post_init__(self) -> None:
        if not (isinstance(self.min, int) and isinstance(self.opt, int) and isinstance(self.max, int)):
            raise EngineError(f"batch range must be whole numbers, got {self.min}, {self.opt}, {self.max}")
        if not 1 <= self.min <= self.opt <= self.max:
            raise EngineError(f"batch range must satisfy 1 <= min <= opt <= max, got min={self.min} "
                              f"opt={self.opt} max={self.max}")

    @classmethod
    def parse(cls, text: str) -> "BatchRange":
        """``"1,8,32"`` (min,opt,max), ``"8"`` (fixed) or ``"1,32"`` (opt = max)."""
        try:
            values = [int(v) for v in str(text).replace(":", ",").split(",") if v.strip()]
        except ValueError:
            raise EngineError(f"batch range {text!r} must be MIN,OPT,MAX (e.g. 1,8,32)") from None
        if len(values) == 1:
            return cls(values[0], values[0], values[0])
        if len(values) == 2:
            return cls(values[0], values[1], values[1])
        if len(values) == 3:
            return cls(*values)
        raise EngineError(f"batch range {text!r} must be MIN,OPT,MAX (e.g. 1,8,32)")


DEFAULT_BATCH = BatchRange(1, 8, 32)


def _is_dynamic(dim: Any) -> bool:
    return dim is None or isinstance(dim, str) or (isinstance(dim, (int, np.integer)) and dim < 0)


def profile_shapes(inputs: Mapping[str, Sequence[Any]], batch: BatchRange = DEFAULT_BATCH
                   ) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """``{input: (min_shape, opt_shape, max_shape)}`` for one optimisation profile.

    ``inputs`` maps each network input to its shape, a dynamic dimension written as ``-1``,
    ``None`` or a name (as ONNX and TensorRT report them). Only the first (batch) dimension may
    be dynamic: FGSL engines have T, H and W fixed by the config, so anything else is refused.
    An input exported with a fixed batch keeps it (its profile is that one shape), and then
    the batch range must contain it.
    """
    if not inputs:
        raise EngineError("the network has no inputs")
    out = {}
    for name, shape in inputs.items():
        shape = list(shape)
        if not shape:
            raise EngineError(f"input {name!r} is a scalar; FGSL engine inputs are batched tensors")
        late = [i for i, d in enumerate(shape[1:], start=1) if _is_dynamic(d)]
        if late:
            raise EngineError(f"input {name!r} {shape} has dynamic dimension(s) {late}: only the batch dimension "
                              "may be dynamic (T, H and W are fixed by the config; re-export the ONNX)")
        rest = tuple(int(d) for d in shape[1:])
        if _is_dynamic(shape[0]):
            out[name] = ((batch.min, *rest), (batch.opt, *rest), (batch.max, *rest))
        else:
            fixed = int(shape[0])
            out[name] = ((fixed, *rest),) * 3
    return out


def profile_batch(profiles: Mapping[str, tuple[Sequence[int], Sequence[int], Sequence[int]]]) -> tuple[int, int]:
    """(min, max) batch that every input's profile admits."""
    lo = max(int(p[0][0]) for p in profiles.values())
    hi = min(int(p[2][0]) for p in profiles.values())
    if lo > hi:
        raise EngineError(f"the inputs' batch ranges do not overlap ({lo} > {hi})")
    return lo, hi


def split_batches(n: int, lo: int, hi: int) -> list[tuple[int, int, int]]:
    """Cover ``n`` items with calls the profile admits: ``[(start, stop, padded_size)]``.

    Each call takes at most ``hi`` items; a last call shorter than ``lo`` is padded (by
    repeating its last item) to ``lo``, and the padding's outputs are dropped.
    """
    if n < 1:
        raise EngineError("an engine call needs at least one item")
    if not 1 <= lo <= hi:
        raise EngineError(f"bad batch range {lo}..{hi}")
    calls = []
    for start in range(0, n, hi):
        stop = min(start + hi, n)
        calls.append((start, stop, max(stop - start, lo)))
    return calls


def onnx_input_shapes(model: Any) -> dict[str, list[int | str]]:
    """Graph inputs (initializers excluded) -> shape, dynamic dims as their names (``str``) or ``-1``."""
    initializers = {i.name for i in model.graph.initializer}
    shapes: dict[str, list[int | str]] = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims: list[int | str] = []
        for d in value.type.tensor_type.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            else:
                dims.append(d.dim_param or -1)
        shapes[value.name] = dims
    return shapes


_QDQ_NAMES = {"INT8": "int8", "UINT8": "uint8", "FLOAT8E4M3FN": "fp8", "FLOAT8E4M3FNUZ": "fp8-fnuz",
              "FLOAT8E5M2": "fp8-e5m2", "FLOAT8E5M2FNUZ": "fp8-e5m2-fnuz", "INT4": "int4", "UINT4": "uint4",
              "FLOAT4E2M1": "fp4", "INT16": "int16", "UINT16": "uint16"}


def _element_types(model: Any) -> dict[str, int]:
    """Tensor name -> ONNX element type, from everything that declares one."""
    types: dict[str, int] = {}
    for init in model.graph.initializer:
        types[init.name] = int(init.data_type)
    for value in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
            types.setdefault(value.name, int(value.type.tensor_type.elem_type))
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.HasField("t"):
                    types[node.output[0]] = int(attr.t.data_type)
    return types


@dataclass(frozen=True)
class OnnxPrecision:
    """What precision an ONNX file will build into under strong typing."""

    qdq: tuple[str, ...]      #: quantized types of its Q/DQ nodes ("int8", "fp8", ...)
    float16: bool             #: has FLOAT16 (or BFLOAT16) tensors
    plugin: bool              #: uses the FIFM plugin node

    @property
    def label(self) -> str:
        """The quantized type that sets the build (fp8 before int8 ...; else the first other
        one, "uint8" say, which :func:`check_precision` refuses), else fp16 or fp32. A file with
        only uint8 Q/DQ was called "fp32" in calib.quantize's report."""
        for kind in ("fp8", "int8", "int4", "fp4", *self.qdq):
            if kind in self.qdq:
                return kind
        return "fp16" if self.float16 else "fp32"


def onnx_precision(model: Any) -> OnnxPrecision:
    """Read the precision from an ``onnx.ModelProto``: Q/DQ types, float16 tensors, plugin use."""
    from onnx import TensorProto  # noqa: PLC0415

    types = _element_types(model)
    qdq: set[str] = set()
    half = {TensorProto.FLOAT16, TensorProto.BFLOAT16}
    float16 = any(t in half for t in types.values())
    plugin = False
    for node in model.graph.node:
        if node.op_type == OP_TYPE and (node.domain == ONNX_DOMAIN or any(
                a.name == "plugin_namespace" and a.s.decode() == ONNX_DOMAIN for a in node.attribute)):
            plugin = True
        if node.op_type == "Cast":
            for attr in node.attribute:
                if attr.name == "to" and attr.i in half:
                    float16 = True
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        kind = None
        for attr in node.attribute:
            if attr.name == "output_dtype" and attr.i:
                kind = attr.i
        if kind is None and node.op_type == "DequantizeLinear" and node.input[0] in types:
            kind = types[node.input[0]]
        if kind is None and len(node.input) > 2 and node.input[2] and node.input[2] in types:
            kind = types[node.input[2]]
        if kind is None:
            kind = TensorProto.UINT8  # ONNX's default for QuantizeLinear without a zero point
        name = TensorProto.DataType.Name(kind)
        qdq.add(_QDQ_NAMES.get(name, name.lower()))
    return OnnxPrecision(tuple(sorted(qdq)), float16, plugin)


def check_precision(requested: str, found: OnnxPrecision, source: str = "the ONNX model") -> str:
    """The precision to record, or :class:`EngineError` when the file cannot give ``requested``.

    ``requested`` is one of :data:`PRECISIONS` or ``"auto"`` (take what the file is). TensorRT
    does not support unsigned 8-bit Q/DQ, so a file with it is refused whatever was asked.
    """
    if requested not in ("auto", *PRECISIONS):
        raise EngineError(f"unknown precision {requested!r}; choose auto or one of {', '.join(PRECISIONS)}")
    unsupported = sorted(set(found.qdq) - {"int8", "fp8", "int4", "fp4"})
    if unsupported:
        raise EngineError(f"{source} has {'/'.join(unsupported)} Q/DQ nodes, which TensorRT cannot build: quantize "
                          "with symmetric signed int8 or fp8 (python -m calib.quantize --mode int8|fp8)")
    label = found.label
    if requested in ("auto", label):
        return label
    how = {"fp32": "export the FP32 ONNX (python -m engines.build ... --precision fp32)",
           "fp16": "convert it with ModelOpt AutoCast first (python -m calib.quantize --mode fp16)",
           "int8": "quantize it with calibration data first (python -m calib.quantize --mode int8)",
           "fp8": "quantize it with calibration data first (python -m calib.quantize --mode fp8)"}[requested]
    raise EngineError(f"{source} is {'an' if label[0] in 'f' else 'a'} {label} model, not {requested}: TensorRT >= 10 builds strongly typed "
                      f"networks whose precision comes from the ONNX graph, not from builder flags; {how}")


def network_flags(trt: Any) -> int:
    """``create_network`` flags: STRONGLY_TYPED where the enum has it (10.x: needed, 11.x: ignored)."""
    flag = getattr(getattr(trt, "NetworkDefinitionCreationFlag", None), "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


_TORCH_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "UINT8": "uint8",
                 "INT32": "int32", "INT64": "int64", "BOOL": "bool", "FP8": "float8_e4m3fn"}


def torch_dtype(trt_dtype: Any) -> Any:
    """The torch dtype for a ``tensorrt.DataType`` (or its name, e.g. ``"HALF"``)."""
    import torch  # noqa: PLC0415

    name = trt_dtype if isinstance(trt_dtype, str) else getattr(trt_dtype, "name", str(trt_dtype))
    name = name.rsplit(".", 1)[-1].upper()
    if name not in _TORCH_DTYPES:
        raise EngineError(f"engine tensor type {name} is not supported as engine I/O")
    return getattr(torch, _TORCH_DTYPES[name])


# ---------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------

def sidecar_path(engine_path: str | Path) -> Path:
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def read_sidecar(engine_path: str | Path) -> dict[str, Any] | None:
    """The JSON written beside an engine by :func:`build_engine` (``None`` if absent or unreadable)."""
    path = sidecar_path(engine_path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == SIDECAR_FORMAT else None


# ---------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BuildPlan:
    """Everything decided before TensorRT is touched (pure; see :func:`plan_build`)."""

    onnx: str
    precision: str
    detail: OnnxPrecision
    profiles: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]
    batch: BatchRange
    optimization_level: int
    workspace_bytes: int | None


def plan_build(onnx_path: str | Path, precision: str = "auto", batch: BatchRange = DEFAULT_BATCH,
               optimization_level: int = 3, workspace_mb: int | None = None) -> BuildPlan:
    """Read the ONNX file and decide precision and profile; errors here need no GPU."""
    onnx_path = Path(onnx_path)
    model = read_onnx(onnx_path)
    detail = onnx_precision(model)
    label = check_precision(precision, detail, str(onnx_path))
    if not 0 <= int(optimization_level) <= 5:
        raise EngineError(f"builder optimization level must be 0..5, got {optimization_level}")
    if workspace_mb is not None and workspace_mb <= 0:
        raise EngineError(f"workspace must be a positive number of MiB, got {workspace_mb}")
    return BuildPlan(
        onnx=str(onnx_path), precision=label, detail=detail,
        profiles=profile_shapes(onnx_input_shapes(model), batch), batch=batch,
        optimization_level=int(optimization_level),
        workspace_bytes=None if workspace_mb is None else int(workspace_mb) << 20,
    )


def _parser_errors(parser: Any, limit: int = 3) -> str:
    lines = []
    for i in range(min(int(parser.num_errors), limit)):
        err = parser.get_error(i)
        text = err.desc() if hasattr(err, "desc") else str(err)
        where = []
        for attr in ("node_name", "node_operator"):
            fn = getattr(err, attr, None)
            value = fn() if callable(fn) else None
            if value:
                where.append(str(value))
        lines.append(f"{text}" + (f" (node {' '.join(where)})" if where else ""))
    more = int(parser.num_errors) - len(lines)
    return "; ".join(lines) + (f"; and {more} more" if more > 0 else "")


def _load_timing_cache(config: Any, path: Path | None, log: Any) -> Any:
    """Read the timing cache file into the config; a damaged or foreign one is replaced, not fatal."""
    data = b""
    if path is not None and path.is_file():
        data = path.read_bytes()
    cache = None
    if data:
        try:
            cache = config.create_timing_cache(data)
        except Exception:  # noqa: BLE001 (the binding may raise instead of returning None)
            cache = None
        if cache is None:
            log(f"warning: timing cache {path} is not usable by this TensorRT; starting a new one")
    if cache is None:
        cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def _init_builtin_plugins(trt: Any, logger: Any) -> None:
    """Register TensorRT's own plugin library (the ONNX parser falls back to it for some ops)."""
    init = getattr(trt, "init_libnvinfer_plugins", None)
    if init is not None:
        init(logger, "")


def build_engine(onnx_path: str | Path, engine_path: str | Path, *, precision: str = "auto",
                 batch: BatchRange = DEFAULT_BATCH, timing_cache: str | Path | None = None,
                 workspace_mb: int | None = None, optimization_level: int = 3, device: str = "cuda",
                 verbose: bool = False, log: Any = None) -> dict[str, Any]:
    """Build a serialized TensorRT engine from ``onnx_path`` into ``engine_path``; returns its sidecar.

    ``precision``: ``auto`` (what the ONNX is) or one of :data:`PRECISIONS`, checked against
    the file (:func:`check_precision`). ``batch``: the profile's batch range. ``timing_cache``:
    a file read if present and written back after the build. ``workspace_mb``: cap on the
    builder's workspace pool (default: TensorRT's, the GPU's memory). Raises
    :class:`EngineError` with one line for a missing TensorRT/GPU, a parser error, or a failed
    build.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    plan = plan_build(onnx_path, precision, batch, optimization_level, workspace_mb)
    trt = import_tensorrt()
    dev = require_cuda(device)
    if plan.detail.plugin and not register_plugin():
        raise EngineError(f"{onnx_path}: uses the FIFM plugin {PLUGIN_ID} but {unavailable_reason()}; it needs a "
                          "TensorRT with Python plugins (10.7 or later), or export with --fifm conv")
    import torch  # noqa: PLC0415

    engine_path = Path(engine_path)
    cache_path = None if timing_cache is None else Path(timing_cache)
    started = time.monotonic()
    with torch.cuda.device(dev):
        logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
        _init_builtin_plugins(trt, logger)
        builder = trt.Builder(logger)
        network = builder.create_network(network_flags(trt))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(plan.onnx)):
            raise EngineError(f"{plan.onnx}: TensorRT's ONNX parser failed: {_parser_errors(parser)}")
        config = builder.create_builder_config()
        config.builder_optimization_level = plan.optimization_level
        if plan.workspace_bytes is not None:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
        # The profile planned from the ONNX file's inputs (the parser keeps their names and
        # shapes), so it was checked before TensorRT or a GPU was needed.
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in plan.profiles.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
        _load_timing_cache(config, cache_path, log)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise EngineError(f"{plan.onnx}: TensorRT could not build an engine (see the TensorRT log above; "
                              "run with --verbose for the full log)")
        plan_bytes = bytes(memoryview(serialized))
        atomic_write(engine_path, plan_bytes)
        if cache_path is not None:
            atomic_write(cache_path, bytes(memoryview(config.get_timing_cache().serialize())))
    sidecar = {
        "format": SIDECAR_FORMAT,
        "version": 1,
        "onnx": Path(plan.onnx).name,
        "onnx_sha256": sha256_file(plan.onnx),
        "precision": plan.precision,
        "qdq": list(plan.detail.qdq),
        "float16": plan.detail.float16,
        "fifm_plugin": plan.detail.plugin,
        "profile": {name: [list(s) for s in shapes] for name, shapes in plan.profiles.items()},
        "batch": asdict(plan.batch),
        "optimization_level": plan.optimization_level,
        "tensorrt": str(trt.__version__),
        **gpu_info(dev),
        "engine_bytes": len(plan_bytes),
        "engine_sha256": hashlib.sha256(plan_bytes).hexdigest(),
        "build_s": round(time.monotonic() - started, 2),
    }
    atomic_write(sidecar_path(engine_path), (json.dumps(sidecar, indent=2) + "\n").encode())
    return sidecar


# ---------------------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------------------

class _Graph:
    """One deserialized engine with its execution context and I/O description."""

    def __init__(self, trt: Any, runtime: Any, name: str, plan: bytes, source: str) -> None:
        self.name = name
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise EngineError(f"{source}: TensorRT {trt.__version__} cannot load this {name} engine (built by another "
                              "TensorRT version or for another GPU, or the file is damaged): rebuild it")
        self.engine = engine
        self.context = engine.create_execution_context()
        if self.context is None:
            raise EngineError(f"{source}: TensorRT could not create an execution context (out of GPU memory?)")
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.dtypes: dict[str, Any] = {}
        for i in range(engine.num_io_tensors):
            tensor = engine.get_tensor_name(i)
            (self.inputs if engine.get_tensor_mode(tensor) == trt.TensorIOMode.INPUT else self.outputs).append(tensor)
            self.dtypes[tensor] = torch_dtype(engine.get_tensor_dtype(tensor))
        profiles = {t: tuple(tuple(s) for s in engine.get_tensor_profile_shape(t, 0)) for t in self.inputs}
        self.min_batch, self.max_batch = profile_batch(profiles)

    def run(self, arrays: Mapping[str, np.ndarray], device: Any, stream: Any) -> dict[str, np.ndarray]:
        import torch  # noqa: PLC0415

        missing = [t for t in self.inputs if t not in arrays]
        if missing:
            raise EngineError(f"{self.name} engine needs inputs {self.inputs}, got {sorted(arrays)}")
        n = len(next(iter(arrays.values())))
        parts: dict[str, list[np.ndarray]] = {t: [] for t in self.outputs}
        for start, stop, size in split_batches(n, self.min_batch, self.max_batch):
            with torch.cuda.device(device), torch.cuda.stream(stream):
                keep = []
                for tensor in self.inputs:
                    host = np.ascontiguousarray(arrays[tensor][start:stop])
                    if size > stop - start:
                        host = np.concatenate([host, np.repeat(host[-1:], size - (stop - start), axis=0)])
                    buf = torch.from_numpy(host).to(device=device, dtype=self.dtypes[tensor])
                    keep.append(buf)
                    if not self.context.set_input_shape(tensor, tuple(buf.shape)):
                        raise EngineError(f"{self.name} engine refused input {tensor} of shape {list(buf.shape)}")
                    self.context.set_tensor_address(tensor, int(buf.data_ptr()))
                outs = {}
                for tensor in self.outputs:
                    shape = tuple(self.context.get_tensor_shape(tensor))
                    if any(d < 0 for d in shape):
                        raise EngineError(f"{self.name} engine left output {tensor} with unknown shape {list(shape)}")
                    outs[tensor] = torch.empty(shape, dtype=self.dtypes[tensor], device=device)
                    self.context.set_tensor_address(tensor, int(outs[tensor].data_ptr()))
                if not self.context.execute_async_v3(stream.cuda_stream):
                    raise EngineError(f"TensorRT failed to run the {self.name} engine (see the TensorRT log above)")
                host_out = {t: v[: stop - start].float().cpu() for t, v in outs.items()}
            stream.synchronize()
            del keep
            for tensor, value in host_out.items():
                parts[tensor].append(value.numpy())
        return {t: np.concatenate(v) if len(v) > 1 else v[0] for t, v in parts.items()}


class TensorRTEngine:
    """The Engine protocol on TensorRT engines (one per graph: model, encode_chunk, decode_window).

    ``plans`` maps graph names to serialized engines (paths or bytes). ``infer`` uses the
    ``model`` graph, or, when only the streaming pair was built, runs ``encode_chunk`` on the
    clips' chunks and ``decode_window`` on the result (exactly ``FGSL.forward``'s composition).
    Not thread-safe for concurrent calls on one instance (one execution context per graph);
    calls are serialised with a lock.
    """

    backend = "tensorrt"

    def __init__(self, cfg: FGSLConfig, plans: Mapping[str, str | Path | bytes], *, device: str = "cuda",
                 source: str | None = None, precision: str | None = None, fifm_form: str | None = None,
                 verbose: bool = False) -> None:
        unknown = sorted(set(plans) - set(GRAPHS))
        if unknown or not plans:
            raise EngineError(f"TensorRT plans must be given for graphs among {', '.join(GRAPHS)}, got {sorted(plans)}")
        if "model" not in plans and not {"encode_chunk", "decode_window"} <= set(plans):
            raise EngineError("TensorRT engine folder needs the model graph or both encode_chunk and decode_window")
        blobs: dict[str, tuple[bytes, str]] = {}
        sidecars: dict[str, dict[str, Any]] = {}
        for graph, plan in plans.items():
            if isinstance(plan, (bytes, bytearray, memoryview)):
                blobs[graph] = (bytes(plan), f"{graph} engine")
                continue
            path = Path(plan)
            if not path.is_file():
                raise EngineError(f"{path}: no such TensorRT engine file")
            blobs[graph] = (path.read_bytes(), str(path))
            sidecars[graph] = read_sidecar(path) or {}
        trt = import_tensorrt()
        self.device = require_cuda(device)
        register_plugin()  # engines built from a --fifm plugin ONNX call back into it
        import torch  # noqa: PLC0415

        self.cfg = cfg
        self.source = source
        self._trt = trt
        self._lock = threading.Lock()
        with torch.cuda.device(self.device):
            self._logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
            _init_builtin_plugins(trt, self._logger)
            self._runtime = trt.Runtime(self._logger)
            self._stream = torch.cuda.Stream(self.device)
            self._graphs = {g: _Graph(trt, self._runtime, g, blob, where) for g, (blob, where) in blobs.items()}
        recorded = {s.get("precision") for s in sidecars.values() if s.get("precision")}
        self.precision = precision or (recorded.pop() if len(recorded) == 1 else "+".join(sorted(recorded)) or "unknown")
        self.fifm_form = fifm_form or ("plugin" if any(s.get("fifm_plugin") for s in sidecars.values()) else None)
        self._info = gpu_info(self.device)

    def close(self) -> None:
        """Free the execution contexts and engines before the runtime (TensorRT's required order)."""
        graphs = getattr(self, "_graphs", None)
        if graphs:
            for graph in graphs.values():
                graph.context = None
                graph.engine = None
            graphs.clear()
        self._runtime = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 (interpreter shutdown)
            pass

    # ------------------------------------------------------------------ protocol
    def _run(self, graph: str, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if graph not in self._graphs:
            raise EngineError(f"this TensorRT engine has no {graph} graph (built: {', '.join(self._graphs)})")
        with self._lock:
            return self._graphs[graph].run(arrays, self.device, self._stream)

    def _named(self, graph: str, values: Sequence[np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
        """Map arrays onto the engine's input names (by name if it uses ours, else in order)."""
        inputs = self._graphs[graph].inputs if graph in self._graphs else list(names)
        if set(inputs) == set(names):
            return dict(zip(names, values))
        if len(inputs) != len(values):
            raise EngineError(f"the {graph} engine has inputs {inputs}; expected {list(names)}")
        return dict(zip(inputs, values))

    def infer(self, clips: np.ndarray) -> dict[str, np.ndarray]:
        clips = check_clips(clips, self.cfg)
        if "model" in self._graphs:
            out = self._run("model", self._named("model", [clips], ["clips"]))
            return {"scores": out["scores"], "offsets": out["offsets"]}
        return stream_infer(self, clips)

    def encode_chunk(self, chunks: np.ndarray) -> dict[str, np.ndarray]:
        chunks = check_chunks(chunks, self.cfg)
        out = self._run("encode_chunk", self._named("encode_chunk", [chunks], ["chunks"]))
        return {"final": out["final"], "taps": out["taps"]}

    def decode_window(self, final: np.ndarray, taps: np.ndarray) -> dict[str, np.ndarray]:
        final, taps = check_features(final, taps, self.cfg)
        out = self._run("decode_window", self._named("decode_window", [final, taps], ["final", "taps"]))
        return {"scores": out["scores"], "offsets": out["offsets"]}

    def describe(self) -> dict[str, Any]:
        c = self.cfg
        first = next(iter(self._graphs.values()))
        return {
            "backend": self.backend,
            "precision": self.precision,
            "device": f"{self._info['gpu']} ({self.device}, sm {self._info['compute_capability']}), "
                      f"TensorRT {self._trt.__version__}",
            "input_shape": ["B", 3, c.window_frames, c.image_size, c.image_size],
            "preset": c.name,
            "fifm_form": self.fifm_form,
            "source": self.source,
            "graphs": list(self._graphs),
            "batch_range": [first.min_batch, first.max_batch],
        }


# ---------------------------------------------------------------------------------------
# CLI: python -m engines.trt --onnx model.onnx --out model.engine
# ---------------------------------------------------------------------------------------

def _iter_graph_onnx(folder: Path) -> Iterator[tuple[str, Path]]:
    for graph in GRAPHS:
        path = folder / f"{graph}.onnx"
        if path.is_file():
            yield graph, path


def main(argv: list[str] | None = None) -> int:
    from fgsl.cli import ArgumentParser, HelpFormatter, positive_int, register_user_error, run  # noqa: PLC0415

    register_user_error(EngineError)
    p = ArgumentParser(prog="python -m engines.trt",
                       description="Build TensorRT engines from FGSL ONNX graphs (strongly typed).",
                       formatter_class=HelpFormatter)
    p.add_argument("--onnx", required=True, help="an ONNX file, or a folder with model/encode_chunk/decode_window.onnx")
    p.add_argument("--out", required=True, help="engine file (for one ONNX) or folder (for a folder)")
    p.add_argument("--precision", default="auto", choices=("auto", *PRECISIONS),
                   help="check the ONNX is of this precision (it decides; see docs/tensorrt.md)")
    p.add_argument("--batch", default="1,8,32", help="optimisation profile MIN,OPT,MAX batch")
    p.add_argument("--timing-cache", help="timing cache file (read if present, written after the build)")
    p.add_argument("--workspace-mb", type=positive_int, help="cap on the builder workspace")
    p.add_argument("--opt-level", type=int, choices=range(6), default=3, help="builder optimization level 0..5")
    p.add_argument("--device", default="cuda", help="the GPU to build on: cuda or cuda:N")
    p.add_argument("--verbose", action="store_true", help="TensorRT's verbose log")
    args = p.parse_args(argv)

    def body(_: list[str] | None) -> int:
        src, out = Path(args.onnx), Path(args.out)
        jobs = list(_iter_graph_onnx(src)) if src.is_dir() else [(src.stem, src)]
        if not jobs:
            raise EngineError(f"{src}: no model.onnx, encode_chunk.onnx or decode_window.onnx in this folder")
        batch = BatchRange.parse(args.batch)
        for _, onnx_path in jobs:  # every input checked first: no GPU needed to find a bad one
            plan_build(onnx_path, args.precision, batch, args.opt_level, args.workspace_mb)
        import_tensorrt("python -m engines.trt", CLI_INSTALL_HINT)  # the way out in this command's words (no --backend)
        for graph, onnx_path in jobs:
            target = out / f"{graph}.engine" if src.is_dir() else out
            info = build_engine(onnx_path, target, precision=args.precision, batch=batch,
                                timing_cache=args.timing_cache, workspace_mb=args.workspace_mb,
                                optimization_level=args.opt_level, device=args.device, verbose=args.verbose)
            print(f"{target}: {info['precision']} engine, batch {args.batch}, {info['engine_bytes'] / 1e6:.1f} MB, "
                  f"built in {info['build_s']} s on {info['gpu']} with TensorRT {info['tensorrt']}")
        return 0

    return run(body)


if __name__ == "__main__":
    quiet_exit(main())
