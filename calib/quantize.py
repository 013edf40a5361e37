"""``python -m calib.quantize``: an INT8 / FP8 Q/DQ (or FP16) ONNX for TensorRT from an FP32 export.

TensorRT >= 10 builds strongly typed networks: the precision is in the ONNX graph (Q/DQ nodes
for INT8/FP8, FLOAT16 tensors for FP16), not in builder flags (``engines/trt.py``). This
command makes those graphs.

* ``--mode int8`` / ``--mode fp8`` (default tool ``modelopt``): NVIDIA ModelOpt ONNX PTQ,
  ``modelopt.onnx.quantization.quantize(onnx_path, quantize_mode, calibration_data,
  calibration_method, calibration_eps, output_path, high_precision_dtype, ...)``: it inserts
  Q/DQ nodes where TensorRT fuses them and sets their scales from activation statistics over
  the calibration windows (``--method entropy``, the default for int8/fp8, or ``max``).
  The attention matmuls stay unquantised (``disable_mha_qdq=True``) unless
  ``--quantize-attention``, and ``--scope encoder`` (default) limits Q/DQ to the frozen encoder.
  Reference: ModelOpt's ``modelopt.onnx.quantization.quantize`` docstring (nvidia-modelopt
  0.47.0, ``modelopt/onnx/quantization/quantize.py``) and the ONNX PTQ guide
  (nvidia.github.io/Model-Optimizer). ``--eps`` is the calibration execution-provider order
  (default ``cpu``; ``cuda:0`` / ``trt`` on a GPU machine).
* ``--mode fp16``: ModelOpt AutoCast, ``modelopt.onnx.autocast.convert_to_mixed_precision(
  onnx_path, low_precision_type="fp16", keep_io_types=True)``, the replacement TensorRT 11's
  migration guide gives for the removed ``BuilderFlag.FP16``. No calibration data needed.
* ``--tool onnxruntime`` (``--mode int8`` only; memory-hungry: 8.9 GB for 8 windows of the
  realtime preset, more than 23 GB for 32): ONNX Runtime's static quantiser
  (``onnxruntime.quantization.quantize_static``, QDQ format, symmetric signed int8
  activations and per-channel weights: the Q/DQ form TensorRT accepts). A stand-in for
  machines without ModelOpt; ModelOpt remains the product path (its Q/DQ placement follows
  TensorRT's fusion rules, ORT's follows ORT's CPU kernels).

ModelOpt is the optional extra ``calib`` (``pip install 'fgsl-spotter[calib]'``, which is
``nvidia-modelopt[onnx]`` and pulls its own ONNX Runtime GPU build and CuPy). Without it this
command says so in one line. ``docs/calibration.md`` records what ran here.

The calibration data is a file from ``python -m calib.collect``; its windows are fed to the
model input by name: ``clips`` (the whole model) or ``chunks`` (the ``encode_chunk`` graph:
the same windows cut into 16-frame chunks). ``decode_window`` takes encoder features, not
clips; keep it in FP32/FP16 (it is the cheap part after the encoder).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from fgsl.startup import quiet_exit, startup_imports

# Importing torch takes the first second or two: Ctrl-C then is no bug (fgsl.startup).
with startup_imports(__name__):
    import numpy as np

    from engines.base import read_onnx
    from engines.extras import CALIB_HINT, ONNX_HINT, require
    from fgsl.cli import (ArgumentParser, HelpFormatter, UsageError, check_output, check_output_suffix, explain,
                          positive_int, run)
    from fgsl.files import atomic_output

    from . import CalibError
    from .collect import CalibrationSet, load

MODES = ("int8", "fp8", "fp16")
METHODS = ("entropy", "max")
TOOLS = ("modelopt", "onnxruntime")
#: What the ONNX Runtime stand-in quantises: the GEMM/convolution ops, where INT8 pays. (Its
#: default, every op it can, also calibrates the attention-mask additions, whose -inf entries
#: break entropy calibration.)
ORT_OP_TYPES = ("Conv", "ConvTranspose", "MatMul", "Gemm")
#: ``--scope``: which nodes get Q/DQ. ``encoder`` (default): the frozen VideoMAE encoder, which
#: is nearly all of the model's compute; the small trainable part after it (IGA, neck, FIFM,
#: heads) stays in high precision. Measured here (docs/calibration.md): ModelOpt INT8 on every
#: node moved the random-weight tiny model's class logits by up to 1.29, on the encoder only by 0.04.
SCOPES = {"encoder": [r".*encoder.*"], "all": None}
#: ModelOpt puts Q/DQ on the attention matmuls (Q.K^T, softmax.V) unless told not to
#: (``disable_mha_qdq``). Measured here on the realtime preset: with them the logits moved by up
#: to 0.88, without by 0.03; so they stay in high precision unless ``--quantize-attention``.
#: Added for int8 only: the ONNX Runtime stand-in makes nothing else.
STAND_IN_HINT = ", or use --tool onnxruntime for an ONNX Runtime int8 stand-in"


def require_onnx(needed_by: str) -> None:
    """One line naming the ``onnx`` extra when the ``onnx`` package is missing (as
    ``engines.build`` says it), before any work rather than as a ModuleNotFoundError traceback."""
    require(("onnx",), needed_by, ONNX_HINT, CalibError)


def onnx_inputs(model: Any) -> list[str]:
    """Names of the graph inputs of ``model`` (:func:`read_onnx`'s) that are not initializers
    (``engines.trt.onnx_input_shapes``'s)."""
    from engines.trt import onnx_input_shapes

    return list(onnx_input_shapes(model))


#: What to give instead of a model that is not FP32 (quantised, or FP16).
FP32_EXPORT = "the FP32 export (engines.build's model.onnx or encode_chunk.onnx, built without --precision fp16)"


def not_fp32(model: Any) -> str | None:
    """Why ``model`` (:func:`read_onnx`'s) is not an FP32 export, or ``None`` when it is.

    Both commands need FP32 where they take it: quantising a model that already has Q/DQ
    nodes would calibrate the scales of its own rounding; an FP16 one got float16 Q/DQ scales,
    which ``DequantizeLinear`` before opset 19 does not take (the exports are opset 17), so the
    "quantised" file written with exit status 0 did not load; and either one as
    ``calib.report --fp32`` would measure quantisation error against a reference that has its
    own. Read with ``engines.trt.onnx_precision``, as ``engines.trt`` reads it before
    building; any Q/DQ type counts (its ``label`` ignores ``uint8``, which TensorRT cannot
    build).
    """
    from engines.trt import onnx_precision

    found = onnx_precision(model)
    if found.qdq:
        return f"already quantised ({', '.join(found.qdq)} Q/DQ nodes)"
    if found.float16:
        return "an FP16 model (float16 tensors)"
    return None


def refuse_non_fp32_input(model: Any, onnx_path: str | Path) -> None:
    """One line for an ``--onnx`` that is not FP32 (:func:`not_fp32`), before any work.
    ``model`` is :func:`read_onnx`'s of ``onnx_path`` (the path names it in the message)."""
    reason = not_fp32(model)
    if reason is not None:
        raise CalibError(f"{onnx_path}: {reason}; give {FP32_EXPORT}")


def engine_inputs(onnx_path: Path) -> list[tuple[str, Path]]:
    """The files of the engine folder ``--onnx`` lies in (``engines.export.folder_files``: its
    manifest and every graph and plan it lists), as ``check_output`` inputs: ``--out
    ENG/manifest.json`` would destroy the engine that ``--onnx ENG/model.onnx`` belongs to (and
    the FP32 model is the report's reference). Nothing for a file outside an engine folder."""
    from engines.export import folder_files, is_engine_dir

    if not is_engine_dir(onnx_path.parent):
        return []
    return [("--onnx's engine folder", path) for path in folder_files(onnx_path.parent)]


def calibration_inputs(names: list[str], data: CalibrationSet, count: int | None = None) -> dict[str, np.ndarray]:
    """The calibration windows as the model's named inputs (``clips`` or ``chunks``)."""
    if names == ["clips"]:
        return {"clips": data.clips(count)}
    if names == ["chunks"]:
        return {"chunks": data.chunks(count)}
    raise CalibError(f"the model's inputs are {names}: calibration windows feed a model whose input is 'clips' "
                     "(the whole model) or 'chunks' (encode_chunk); keep decode_window in fp32/fp16")


def check_config(model: Any, onnx_path: str | Path, data: CalibrationSet, names: list[str]) -> None:
    """Refuse calibration windows whose size does not match the model input (one line).

    ``model`` is :func:`read_onnx`'s of ``onnx_path``. The shape the windows make is the
    graph's input shape for their config (``engines.export.io_shapes``); a dynamic axis of the
    file (a name, not a size) matches anything.
    """
    from engines.base import IO
    from engines.export import io_shapes
    from engines.trt import onnx_input_shapes

    c = data.cfg
    graph_of = {name: graph for graph, (inputs, _) in IO.items() for name in inputs}
    for name, dims in onnx_input_shapes(model).items():
        if name not in names or name not in graph_of:
            continue
        want = io_shapes(c, graph_of[name])["inputs"][name]
        got = [d if isinstance(d, int) and d >= 0 else None for d in dims[1:]]  # None: dynamic
        if len(dims) == 5 and any(d is not None and d != w for d, w in zip(got, want[1:])):
            raise CalibError(f"{onnx_path}: input {name} is {got}, but the calibration windows are for "
                             f"preset {c.name!r} ({want[1:]}): collect them with the model's preset or weights")


def scoped_nodes(model: Any, onnx_path: str | Path, scope: str) -> list[str] | None:
    """Exact names of the nodes of ``model`` (:func:`read_onnx`'s of ``onnx_path``) that
    ``scope`` selects (``None``: all); a scope matching nothing is an error.

    ModelOpt takes ``nodes_to_quantize`` as regular expressions (it gets :data:`SCOPES`'s
    patterns), ONNX Runtime as exact names (it gets these).
    """
    import re

    patterns = SCOPES[scope]
    if patterns is None:
        return None
    names = [n.name for n in model.graph.node if any(re.fullmatch(p, n.name) for p in patterns)]
    if not names:
        raise CalibError(f"{onnx_path}: no node name matches scope {scope!r} ({', '.join(patterns)}); "
                         "use --scope all")
    return names


def quantize_modelopt(onnx_path: Path, out: Path, inputs: dict[str, np.ndarray] | None, mode: str, method: str,
                      eps: list[str], high_precision: str, nodes: list[str] | None = None,
                      attention: bool = False) -> None:
    """ModelOpt PTQ (int8/fp8) or AutoCast (fp16) into ``out`` (:func:`quantize_file`'s temporary file)."""
    module = "modelopt.onnx.autocast" if mode == "fp16" else "modelopt.onnx.quantization"
    require((module,), f"calib.quantize --mode {mode}", CALIB_HINT + (STAND_IN_HINT if mode == "int8" else ""),
            CalibError)
    import onnx

    if mode == "fp16":
        from modelopt.onnx.autocast import convert_to_mixed_precision

        model = convert_to_mixed_precision(onnx_path=str(onnx_path), low_precision_type="fp16",
                                           keep_io_types=True, providers=eps)
        onnx.save(model, str(out))
    else:
        from modelopt.onnx.quantization import quantize

        quantize(onnx_path=str(onnx_path), quantize_mode=mode, calibration_data=inputs,
                 calibration_method=method, calibration_eps=eps, output_path=str(out),
                 high_precision_dtype=high_precision, nodes_to_quantize=nodes,
                 disable_mha_qdq=not attention, log_level="WARNING")
    if not out.is_file() or out.stat().st_size == 0:
        raise CalibError(f"ModelOpt wrote no model for {onnx_path}")


class _Reader:
    """``onnxruntime.quantization.CalibrationDataReader`` over the windows, one at a time."""

    def __init__(self, inputs: dict[str, np.ndarray]) -> None:
        self.inputs = inputs
        self.n = len(next(iter(inputs.values())))
        self.i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= self.n:
            return None
        item = {k: v[self.i:self.i + 1] for k, v in self.inputs.items()}
        self.i += 1
        return item

    def rewind(self) -> None:
        self.i = 0


def quantize_onnxruntime(onnx_path: Path, out: Path, inputs: dict[str, np.ndarray], method: str,
                         nodes: list[str] | None = None) -> None:
    """ONNX Runtime static int8 Q/DQ (symmetric, per-channel weights), the stand-in quantiser,
    into ``out`` (:func:`quantize_file`'s temporary file). Its own failures (a model it cannot
    calibrate) are one :class:`CalibError` line naming the model, not its traceback."""
    require(("onnxruntime.quantization",), "calib.quantize --tool onnxruntime", ONNX_HINT, CalibError)
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    try:
        quantize_static(
            str(onnx_path), str(out), _Reader(inputs), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.Entropy if method == "entropy" else CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
            calibration_providers=["CPUExecutionProvider"], op_types_to_quantize=list(ORT_OP_TYPES),
            nodes_to_quantize=nodes,
        )
    except (OSError, MemoryError):  # the machine's, reported as such
        raise
    except Exception as exc:  # noqa: BLE001 (ONNX Runtime's quantiser raises many types)
        raise CalibError(f"{onnx_path}: ONNX Runtime's quantiser failed ({explain(exc)})") from None


def refuse_nothing_to_quantise(model: Any, onnx_path: str | Path, nodes: list[str] | None, scope: str) -> None:
    """Refuse, before calibrating, a model whose selected nodes hold none of the ops the ONNX
    Runtime stand-in quantises (:data:`ORT_OP_TYPES`): its entropy calibration then failed with
    "Histogram has not been collected" (a traceback), and max calibration wrote a model without
    Q/DQ. ``model`` is :func:`read_onnx`'s; ``nodes``: :func:`scoped_nodes`'s."""
    if not any(n.op_type in ORT_OP_TYPES and (nodes is None or n.name in nodes) for n in model.graph.node):
        raise CalibError(f"{onnx_path}: nothing to quantise: scope {scope!r} selects no {'/'.join(ORT_OP_TYPES)} "
                         "node" + ("; try --scope all" if scope != "all" else ""))


def checked_output(path: Path, onnx_path: Path, mode: str, scope: str) -> Any:
    """The precision (``engines.trt.onnx_precision``) of the quantiser's output at ``path``;
    an int8/fp8 output without any Q/DQ node is refused (it would be built as an FP32 engine)."""
    from engines.trt import onnx_precision

    found = onnx_precision(read_onnx(path, CalibError))
    if mode != "fp16" and not found.qdq:
        raise CalibError(f"{onnx_path}: nothing was quantised (scope {scope!r} matched no quantisable node); "
                         "try --scope all")
    return found


def quantize_file(onnx_path: str | Path, data_path: str | Path | None, out: str | Path, mode: str = "int8",
                  method: str = "entropy", tool: str = "modelopt", count: int | None = None,
                  eps: list[str] | None = None, high_precision: str = "fp16", scope: str = "encoder",
                  attention: bool = False) -> dict[str, Any]:
    """Quantise ``onnx_path`` into ``out``; returns a summary (also what the CLI prints)."""
    onnx_path, out = Path(onnx_path), Path(out)
    if mode not in MODES:
        raise UsageError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if method not in METHODS:
        raise UsageError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if tool not in TOOLS:
        raise UsageError(f"--tool must be one of {', '.join(TOOLS)}, got {tool!r}")
    if scope not in SCOPES:
        raise UsageError(f"--scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    if tool == "onnxruntime" and mode != "int8":
        raise UsageError("--tool onnxruntime makes int8 only; fp8 and fp16 need ModelOpt")
    # onnx and the quantisers pick the format from the suffix (.json: JSON text)
    check_output_suffix("--out", out, ".onnx", "the quantised model is an ONNX file")
    require_onnx("calib.quantize")
    if not onnx_path.is_file():
        raise CalibError(f"{onnx_path}: no such ONNX file")
    check_output("--out", out, [("--onnx", onnx_path), ("--data", data_path), *engine_inputs(onnx_path)])
    model = read_onnx(onnx_path, CalibError)  # once: every check below reads this one copy
    names = onnx_inputs(model)
    refuse_non_fp32_input(model, onnx_path)
    inputs = None
    windows = 0
    if mode != "fp16":
        if data_path is None:
            raise UsageError(f"--mode {mode} needs calibration data: --data calib.npz (python -m calib.collect)")
        data = load(data_path)
        check_config(model, onnx_path, data, names)
        inputs = calibration_inputs(names, data, count)
        windows = len(next(iter(inputs.values())))
    nodes = None if mode == "fp16" else scoped_nodes(model, onnx_path, scope)
    if tool == "onnxruntime":
        refuse_nothing_to_quantise(model, onnx_path, nodes, scope)
    del model  # the quantisers read the file themselves: do not hold a second copy meanwhile
    started = time.monotonic()
    # Written beside --out and checked there: a run that fails, or quantises nothing, leaves the
    # --out of an earlier run as it was (it used to be replaced, then deleted).
    with atomic_output(out, suffix=".onnx") as tmp:
        if tool == "modelopt":
            quantize_modelopt(onnx_path, tmp, inputs, mode, method, eps or ["cpu"], high_precision,
                              None if nodes is None else SCOPES[scope], attention)
        else:
            assert inputs is not None
            quantize_onnxruntime(onnx_path, tmp, inputs, method, nodes)
        found = checked_output(tmp, onnx_path, mode, scope)
    return {"onnx": str(onnx_path), "out": str(out), "mode": mode, "method": None if mode == "fp16" else method,
            "scope": None if mode == "fp16" else scope, "attention": attention if mode != "fp16" else None,
            "tool": tool, "calibration_inputs": windows, "seconds": round(time.monotonic() - started, 1),
            "qdq": list(found.qdq), "float16": found.float16, "precision": found.label}


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m calib.quantize",
                       description="INT8/FP8 Q/DQ (ModelOpt PTQ) or FP16 (ModelOpt AutoCast) ONNX for TensorRT.",
                       formatter_class=HelpFormatter)
    p.add_argument("--onnx", required=True, help="FP32 ONNX export (model or encode_chunk graph)")
    p.add_argument("--data", help="calibration windows from python -m calib.collect (.npz)")
    p.add_argument("--mode", choices=MODES, default="int8",
                   help="int8/fp8: Q/DQ nodes calibrated on --data; fp16: AutoCast, no data needed")
    p.add_argument("--out", required=True, help="quantised ONNX to write")
    p.add_argument("--method", choices=METHODS, default="entropy", help="activation calibration (int8/fp8)")
    p.add_argument("--tool", choices=TOOLS, default="modelopt",
                   help="modelopt (the product path) or onnxruntime (int8 stand-in without ModelOpt)")
    p.add_argument("--count", type=positive_int, help="use only the first N calibration windows")
    p.add_argument("--scope", choices=tuple(SCOPES), default="encoder",
                   help="quantise the frozen encoder only (default; nearly all the compute) or every node")
    p.add_argument("--quantize-attention", action="store_true",
                   help="ModelOpt: also put Q/DQ on the attention matmuls (off by default: see docs/calibration.md)")
    p.add_argument("--eps", default="cpu", help="ModelOpt calibration execution providers, in order (e.g. cuda:0,cpu)")
    p.add_argument("--high-precision", choices=("fp16", "fp32"), default="fp16",
                   help="ModelOpt: dtype of the ops left unquantised (fp16 is TensorRT's fast path)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body(_: list[str] | None) -> int:
        info = quantize_file(args.onnx, args.data, args.out, args.mode, args.method, args.tool, args.count,
                             [e.strip() for e in args.eps.split(",") if e.strip()], args.high_precision, args.scope,
                             args.quantize_attention)
        extra = f", {info['calibration_inputs']} calibration inputs, {info['method']}" if info["method"] else ""
        print(f"{info['out']}: {info['precision']} ({info['tool']}{extra}; Q/DQ types {info['qdq'] or 'none'}) "
              f"in {info['seconds']} s", file=sys.stderr)
        return 0

    return run(body)


if __name__ == "__main__":
    quiet_exit(main())
