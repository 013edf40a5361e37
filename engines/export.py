"""ONNX export of FGSL: the whole model and the two streaming graphs, in three FIFM forms.

Graphs (names and I/O are a contract shared by every backend, docs/design.md "Contracts")::

    model          clips  [B, 3, T, H, W]                -> scores [B, N, K], offsets [B, N, 2]
    encode_chunk   chunks [B, 3, 16, H, W]               -> final [B, t, D], taps [B, n_taps, t, D]
    decode_window  final [B, L, D], taps [B, n_taps, L, D] -> scores [B, N, K], offsets [B, N, 2]

The batch axis is dynamic (or fixed with ``batch=<int>``); T, H, W and so every other axis
are fixed by the config, which is what lets TensorRT and ONNX Runtime plan memory once.

FIFM forms (``fifm=``), all numerically the same filter ``irfft(H * rfft(x))`` over time:

* ``conv``: the per-channel circular convolution of :func:`fgsl.fifm.filter_conv_form`;
  plain ONNX (Concat + grouped Conv), runs on every runtime. The portable default.
* ``dft``: ONNX ``DFT`` ops: full complex DFT of the signal, multiply by the (real,
  zero-phase) response mirrored to all L bins, inverse DFT, real part. The full spectrum is
  used because the onesided *inverse* DFT was only specified in 2026 (onnx/onnx#7574) and
  older runtimes reject it. Some ONNX Runtime builds computed DFT wrongly (onnx/onnx#4798),
  so :mod:`engines.onnx_backend` checks DFT against torch at load time.
* ``plugin``: one custom node per filter, ``fgsl::FIFMFilter(x [B, C, L], response_re,
  response_im [C, L//2+1]) -> y [B, C, L]`` with the string attribute ``plugin_namespace =
  "fgsl"``; the responses are initializers ``fifm_filter_<i>.response_re``/``_im`` (FIFM's
  response is real, so ``_im`` is zero). The contract is :mod:`engines.plugins.fifm_fft`'s,
  whose TensorRT plugin implements it; ONNX Runtime cannot run it.

Exporter: ``torch.onnx.export(..., dynamo=False)``, the TorchScript-based exporter. With
torch 2.13 the default (dynamo) exporter needs ``onnxscript``, which this project does not
depend on; the TorchScript one works but warns that it is deprecated (the warning is
silenced here and recorded in docs/engines.md). The ``dft`` and ``plugin`` forms are emitted
by the ``symbolic`` of one ``torch.autograd.Function`` substituted for FIFM's frequency
filter during export only.

Every file records in ``metadata_props``: ``fgsl.graph``, ``fgsl.fifm``, ``fgsl.opset``,
``fgsl.preset``, ``fgsl.config`` (JSON), ``fgsl.weights_sha256`` (:func:`fgsl.weights.tensor_digest`),
``fgsl.precision``, ``fgsl.inputs``/``fgsl.outputs`` (JSON shapes), ``fgsl.exporter``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import fgsl.fifm as fifm_module
from fgsl import weights
from fgsl.config import CHUNK_FRAMES, DEFAULT_PRESET, FGSLConfig, preset
from fgsl.model import FGSL, build

from .base import GRAPHS, IO, PRECISIONS, EngineError, read_onnx
from .cache import atomic_write, sha256_bytes, sha256_file
from .extras import ONNX_HINT, require
# The plugin node's domain and op type come from the plugin itself (one contract).
from .plugins.fifm_fft import ONNX_DOMAIN, OP_TYPE, PLUGIN_NAMESPACE

FIFM_FORMS = ("conv", "dft", "plugin")
PLUGIN_VERSION = 1
#: DFT exists from opset 17; the TorchScript exporter stops at 20.
MIN_OPSET = 17
MAX_OPSET = int(getattr(getattr(torch.onnx, "_constants", None), "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20))
DEFAULT_OPSET = 17
MANIFEST = "manifest.json"
ENGINE_FORMAT = "fgsl-engine"
MANIFEST_VERSION = 1
EXPORTER = f"torch {torch.__version__} torch.onnx.export(dynamo=False)"


class ExportError(EngineError):
    """An export that cannot be done as asked (bad form, opset, graph, precision)."""


# ---------------------------------------------------------------------- shapes
def io_shapes(cfg: FGSLConfig, graph: str, batch: int | str = "B") -> dict[str, dict[str, list[Any]]]:
    """``{"inputs": {name: shape}, "outputs": {name: shape}}`` of ``graph`` for ``cfg``."""
    _check_choice("graph", graph, GRAPHS)
    d, taps, t = cfg.backbone.embed_dim, len(cfg.iga_blocks), CHUNK_FRAMES // cfg.backbone.tubelet_size
    s, n, k = cfg.image_size, cfg.num_points, cfg.num_classes
    heads = {"scores": [batch, n, k], "offsets": [batch, n, 2]}
    if graph == "model":
        return {"inputs": {"clips": [batch, 3, cfg.window_frames, s, s]}, "outputs": heads}
    if graph == "encode_chunk":
        return {"inputs": {"chunks": [batch, 3, CHUNK_FRAMES, s, s]},
                "outputs": {"final": [batch, t, d], "taps": [batch, taps, t, d]}}
    return {"inputs": {"final": [batch, cfg.tokens, d], "taps": [batch, taps, cfg.tokens, d]}, "outputs": heads}


def example_inputs(cfg: FGSLConfig, graph: str, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random float32 inputs of ``graph`` (batch 2 by default so no axis is traced as 1)."""
    g = torch.Generator().manual_seed(seed)
    shapes = io_shapes(cfg, graph, batch)["inputs"]
    return tuple(torch.randn(shape, generator=g) for shape in shapes.values())


def _check_choice(what: str, value: Any, choices: tuple[Any, ...]) -> None:
    if value not in choices:
        raise ExportError(f"unknown {what} {value!r}; choose one of {', '.join(map(str, choices))}")


def check_opset(opset: int) -> int:
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"opset {opset} is not supported: FIFM's DFT needs >= {MIN_OPSET} and the "
                          f"TorchScript exporter stops at {MAX_OPSET}")
    return opset


# ---------------------------------------------------------------------- FIFM forms
def _const(g: Any, value: torch.Tensor) -> Any:
    return g.op("Constant", value_t=value)


def _dft(g: Any, x: Any, length: int, inverse: bool) -> Any:
    """A full complex DFT along axis 2 of ``[B, C, L, 1 or 2]`` (opset 17 attribute, 20 input)."""
    if g.opset >= 20:
        return g.op("DFT", x, _const(g, torch.tensor(length, dtype=torch.int64)),
                    _const(g, torch.tensor(2, dtype=torch.int64)), inverse_i=int(inverse), onesided_i=0)
    return g.op("DFT", x, axis_i=2, inverse_i=int(inverse), onesided_i=0)


#: The torch frequency filter, captured before any export substitutes it.
_TORCH_FILTER = fifm_module.filter_frequency_form


class _FrequencyFilter(torch.autograd.Function):
    """FIFM's ``irfft(response * rfft(x))``: torch computes it; ``symbolic`` emits the ONNX form.

    ``imag`` is the (zero) imaginary part of the response, an input of the plugin node only.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, response: torch.Tensor, imag: torch.Tensor, form: str,
                length: int) -> torch.Tensor:
        return _TORCH_FILTER(x, response)

    @staticmethod
    def symbolic(g: Any, x: Any, response: Any, imag: Any, form: str, length: int) -> Any:
        if form == "plugin":
            node = g.op(f"{ONNX_DOMAIN}::{OP_TYPE}", x, response, imag, plugin_namespace_s=PLUGIN_NAMESPACE)
            return node.setType(x.type())
        # Mirror the one-sided response onto all L bins: H_full[k] = H[min(k, L - k)].
        mirror = torch.tensor([min(k, length - k) for k in range(length)], dtype=torch.int64)
        full = g.op("Gather", response, _const(g, mirror), axis_i=1)                     # [C, L]
        full = g.op("Unsqueeze", full, _const(g, torch.tensor([-1])))                   # [C, L, 1]
        signal = g.op("Unsqueeze", x, _const(g, torch.tensor([-1])))                    # [B, C, L, 1]
        spectrum = g.op("Mul", _dft(g, signal, length, inverse=False), full)           # [B, C, L, 2]
        back = _dft(g, spectrum, length, inverse=True)                                  # [B, C, L, 2]
        return g.op("Gather", back, _const(g, torch.tensor(0)), axis_i=3)               # real part


def _apply_filter(x: torch.Tensor, response: torch.Tensor, form: str) -> torch.Tensor:
    """The filter for export. The response depends on parameters only, so it is handed over
    as a constant (a tensor the tracer did not see being made): the graph then stores the
    filter itself rather than the arithmetic that computes it."""
    constant = torch.from_numpy(response.detach().cpu().numpy().copy())
    return _FrequencyFilter.apply(x, constant, torch.zeros_like(constant), form, int(x.shape[-1]))


class _FilterProbe(nn.Module):
    def __init__(self, response: torch.Tensor, form: str) -> None:
        super().__init__()
        self.response, self.form = response, form

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _apply_filter(x, self.response, self.form)


def filter_probe(channels: int, length: int, form: str = "dft", opset: int = DEFAULT_OPSET,
                 seed: int = 0) -> tuple[bytes, np.ndarray, np.ndarray]:
    """(ONNX bytes, input, torch output) of FIFM's filter alone, exported in ``form``.

    The graph has exactly the node pattern :func:`export_onnx` writes for that form, so a
    runtime that gets this probe right computes the model's filter right (used to refuse
    ONNX Runtime builds with a wrong DFT, and by the TensorRT plugin tests).
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, channels, length, generator=g)
    response = torch.rand(channels, length // 2 + 1, generator=g) * 2
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_FilterProbe(response, form), (x,), buffer, dynamo=False, opset_version=check_opset(opset),
                          input_names=["x"], output_names=["y"],
                          custom_opsets={ONNX_DOMAIN: PLUGIN_VERSION} if form == "plugin" else None)
    expected = _TORCH_FILTER(x, response)
    return buffer.getvalue(), x.numpy(), expected.numpy()


@contextlib.contextmanager
def fifm_export_form(model: FGSL, form: str) -> Iterator[None]:
    """Put ``model``'s FIFM into export form ``form`` for the duration of an export.

    ``conv`` switches the model to its own conv form. ``dft``/``plugin`` keep the frequency
    form and substitute :class:`_FrequencyFilter` for :func:`fgsl.fifm.filter_frequency_form`
    (a module global that FIFM looks up at call time), so torch still computes the same
    numbers while the exporter writes DFT ops or the plugin node. Both are undone on exit.
    """
    _check_choice("FIFM form", form, FIFM_FORMS)
    previous = model.fifm.form
    original = fifm_module.filter_frequency_form
    if form == "conv":
        model.set_fifm_form("conv")
    else:
        model.set_fifm_form("freq")

        fifm_module.filter_frequency_form = lambda x, response: _apply_filter(x, response, form)
    try:
        yield
    finally:
        fifm_module.filter_frequency_form = original
        model.set_fifm_form(previous)


# ---------------------------------------------------------------------- export
class _GraphModule(nn.Module):
    """One of the three graphs as a module with positional tensor inputs and tuple outputs."""

    def __init__(self, model: FGSL, graph: str) -> None:
        super().__init__()
        self.model = model
        self.graph = graph

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.graph == "encode_chunk":
            return tuple(self.model.encode_chunk(inputs[0]))
        out = self.model(inputs[0]) if self.graph == "model" else self.model.decode_window(*inputs)
        return out["scores"], out["offsets"]


def graph_fifm(graph: str, fifm: str) -> str:
    """The FIFM form a graph actually contains (``encode_chunk`` has no FIFM: ``none``)."""
    return "none" if graph == "encode_chunk" else fifm


def export_onnx_bytes(model: FGSL, graph: str = "model", fifm: str = "conv", opset: int = DEFAULT_OPSET,
                      batch: int | str = "dynamic", metadata: Mapping[str, str] | None = None) -> bytes:
    """Export one graph of ``model`` and return the ONNX bytes (see :func:`export_onnx`)."""
    import onnx

    _check_choice("graph", graph, GRAPHS)
    _check_choice("FIFM form", fifm, FIFM_FORMS)
    check_opset(opset)
    if batch != "dynamic" and not (isinstance(batch, int) and batch >= 1):
        raise ExportError(f"batch must be 'dynamic' or a positive int, got {batch!r}")
    cfg = model.cfg
    inputs, outputs = IO[graph]
    device = next(model.parameters()).device  # export where the model lives (a CUDA model too)
    args = tuple(a.to(device) for a in example_inputs(cfg, graph, batch=2 if batch == "dynamic" else batch))
    dynamic = {name: {0: "batch"} for name in inputs + outputs} if batch == "dynamic" else None
    was_training = model.training
    model.eval()
    buffer = io.BytesIO()
    try:
        with fifm_export_form(model, fifm), torch.no_grad(), warnings.catch_warnings():
            # Tracer warnings about Python shape checks are expected: every axis but the
            # batch is fixed by the config. The deprecation warning is documented.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _GraphModule(model, graph), args, buffer, dynamo=False, opset_version=opset,
                input_names=list(inputs), output_names=list(outputs), dynamic_axes=dynamic,
                do_constant_folding=True,
                custom_opsets={ONNX_DOMAIN: PLUGIN_VERSION} if graph_fifm(graph, fifm) == "plugin" else None,
            )
    finally:
        model.train(was_training)
    proto = onnx.load_from_string(buffer.getvalue())
    if fifm == "plugin":
        _name_plugin_responses(proto)
    shapes = io_shapes(cfg, graph, "batch" if batch == "dynamic" else batch)
    _declare_shapes(proto, {**shapes["inputs"], **shapes["outputs"]})
    props = {
        "fgsl.format": "fgsl-onnx",
        "fgsl.graph": graph,
        "fgsl.fifm": graph_fifm(graph, fifm),
        "fgsl.opset": str(opset),
        "fgsl.preset": cfg.name,
        "fgsl.config": json.dumps(cfg.to_dict(), sort_keys=True),
        "fgsl.weights_sha256": weights.model_digest(model),
        "fgsl.precision": "fp32",
        "fgsl.inputs": json.dumps(shapes["inputs"]),
        "fgsl.outputs": json.dumps(shapes["outputs"]),
        "fgsl.exporter": EXPORTER,
        **dict(metadata or {}),
    }
    set_metadata(proto, props)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def export_onnx(model: FGSL, path: str | Path, graph: str = "model", fifm: str = "conv", opset: int = DEFAULT_OPSET,
                batch: int | str = "dynamic", metadata: Mapping[str, str] | None = None) -> Path:
    """Export one graph of ``model`` to ``path`` (written atomically) and return the path.

    ``graph``: ``model`` | ``encode_chunk`` | ``decode_window``; ``fifm``: ``conv`` | ``dft`` |
    ``plugin``; ``batch``: ``"dynamic"`` or a fixed int. The file passes ``onnx.checker``.
    """
    return atomic_write(path, export_onnx_bytes(model, graph, fifm, opset, batch, metadata))


def _name_plugin_responses(proto: Any) -> None:
    """Name each plugin node ``fifm_filter_<i>`` and store its responses as the initializers
    ``fifm_filter_<i>.response_re``/``.response_im`` (the exporter leaves them as Constant
    nodes), so TensorRT's parser and a reader find the learned filter as weights under a
    stable name."""
    from onnx import numpy_helper

    constants = {n.output[0]: n for n in proto.graph.node if n.op_type == "Constant" and len(n.output) == 1}
    initializers = {i.name: i for i in proto.graph.initializer}
    count = 0
    for node in proto.graph.node:
        if node.domain != ONNX_DOMAIN or node.op_type != OP_TYPE:
            continue
        node.name = f"fifm_filter_{count}"
        for slot, part in ((1, "response_re"), (2, "response_im")):
            source = node.input[slot]
            if source in constants:
                value = numpy_helper.to_array(constants[source].attribute[0].t)
            elif source in initializers:
                value = numpy_helper.to_array(initializers[source])
            else:
                raise ExportError(f"FIFM plugin input {source!r} is not a constant; cannot export the plugin form")
            proto.graph.initializer.append(numpy_helper.from_array(value, f"{node.name}.{part}"))
            node.input[slot] = f"{node.name}.{part}"
        count += 1
    used = {i for n in proto.graph.node for i in n.input} | {o.name for o in proto.graph.output}
    for node in [n for n in proto.graph.node if n.op_type == "Constant" and n.output[0] not in used]:
        proto.graph.node.remove(node)
    for init in [i for i in proto.graph.initializer if i.name not in used]:
        proto.graph.initializer.remove(init)


def _declare_shapes(proto: Any, shapes: Mapping[str, list[Any]]) -> None:
    """Declare every input and output with its full shape (the exporter leaves derived axes
    such as N symbolic): consumers such as TensorRT and Triton read them from the graph."""
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        del dims[:]
        for size in shapes[value.name]:
            dim = dims.add()
            if isinstance(size, int):
                dim.dim_value = size
            else:
                dim.dim_param = size


def set_metadata(proto: Any, props: Mapping[str, str]) -> None:
    """Replace ``metadata_props`` entries named in ``props`` (others are kept)."""
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in props]
    del proto.metadata_props[:]
    for key, value in [*kept, *props.items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)


def read_metadata(source: str | Path | bytes) -> dict[str, str]:
    """``metadata_props`` of an ONNX file (or its bytes) as a dict."""
    import onnx

    return metadata_of(onnx.load_from_string(source) if isinstance(source, bytes) else read_onnx(source))


def metadata_of(proto: Any) -> dict[str, str]:
    """``metadata_props`` of an ``onnx.ModelProto`` already read (:func:`engines.base.read_onnx`) as a dict."""
    return {p.key: p.value for p in proto.metadata_props}


# ---------------------------------------------------------------------- precision
def to_fp16(onnx_bytes: bytes) -> bytes:
    """FP16 weights and compute with float32 inputs/outputs (``onnxconverter_common.float16``).

    Inputs and outputs stay float32 so the Engine contract does not change; ONNX has no
    converter of its own, so without ``onnxconverter-common`` this refuses clearly.
    """
    require(("onnxconverter_common",), "fp16 ONNX", f"{ONNX_HINT}, or build fp32", ExportError)
    import onnx
    from onnxconverter_common import float16

    proto = onnx.load_from_string(onnx_bytes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns about values clipped to the fp16 range
        half = float16.convert_float_to_float16(proto, keep_io_types=True)
    # The converter retypes every internal float value as float16 but leaves the target of
    # Cast(to=FLOAT) nodes (the attention scale computed from a shape) as float: the
    # model would then not load. Those casts are meant to produce float16.
    declared = {v.name: v.type.tensor_type.elem_type for v in half.graph.value_info}
    for node in half.graph.node:
        if node.op_type == "Cast" and declared.get(node.output[0]) == onnx.TensorProto.FLOAT16:
            for attr in node.attribute:
                if attr.name == "to" and attr.i == onnx.TensorProto.FLOAT:
                    attr.i = onnx.TensorProto.FLOAT16
    set_metadata(half, {"fgsl.precision": "fp16"})
    onnx.checker.check_model(half)
    return half.SerializeToString()


# ---------------------------------------------------------------------- engine folders
@dataclass(frozen=True)
class Source:
    """A model and what is known of its weights: what an engine folder's manifest records."""

    model: FGSL
    trained: bool | None    #: ``None``: an in-memory model, unknown
    origin: str | None      #: the weights folder, or what the model is (``untrained preset 'tiny'``)
    crops: str | None       #: what the weights were trained on (``fgsl.train``'s "centre"/"aligned")


def load_source(source: FGSL | str | Path | Source | None, *, allow_untrained: bool = False,
                preset_name: str | None = None) -> Source:
    """The model behind ``--weights`` / ``--preset`` + ``--allow-untrained``, with its provenance.

    ``source``: a weights folder (refused when untrained unless ``allow_untrained``), a model
    (provenance unknown), or ``None`` for a random ``preset_name`` network (default
    :data:`fgsl.config.DEFAULT_PRESET`), which only ``allow_untrained`` accepts: its outputs
    mean nothing outside benchmarks.
    """
    if isinstance(source, Source):
        return source
    if isinstance(source, FGSL):
        return Source(source, None, None, None)
    if source is None:
        name = preset_name or DEFAULT_PRESET
        if not allow_untrained:
            raise weights.UntrainedWeights(f"no weights given: a random {name!r} network's outputs mean nothing; "
                                           "give a weights folder, or pass --allow-untrained for benchmarks")
        return Source(build(preset(name), seed=0), False, f"untrained preset {name!r}", None)
    model = weights.load(source, allow_untrained=allow_untrained)
    # The manifest keeps where the weights are for engines.selftest: as an absolute path, since a
    # relative one would name another folder, or none, from any other working directory.
    return Source(model, weights.is_trained(source), os.path.abspath(source), weights.info(source).get("crops"))


def export_engine_dir(
    source: FGSL | str | Path | Source,
    out_dir: str | Path,
    fifm: str = "conv",
    opset: int = DEFAULT_OPSET,
    *,
    precision: str = "fp32",
    allow_untrained: bool = False,
    trained: bool | None = None,
    graphs: tuple[str, ...] = GRAPHS,
    backend: str = "onnxruntime",
) -> Path:
    """Export ``graphs`` of a weights folder (or model, or :func:`load_source`'s result) into
    ``out_dir`` with a ``manifest.json`` recording where the weights came from.

    ``precision``: ``fp32`` or ``fp16`` (via :func:`to_fp16`); int8/fp8 come from calibration
    (``python -m calib.quantize``), not from here. The manifest is written last, atomically:
    a folder whose export was interrupted has no manifest and is not an engine folder.
    Returns the manifest path.
    """
    _check_choice("precision", precision, ("fp32", "fp16"))
    loaded = load_source(source, allow_untrained=allow_untrained)
    model = loaded.model
    trained = loaded.trained if trained is None else trained
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries: dict[str, Any] = {}
    meta = {"fgsl.trained": {True: "true", False: "false", None: "unknown"}[trained]}
    for graph in graphs:
        data = export_onnx_bytes(model, graph, fifm, opset, metadata=meta)
        if precision == "fp16":
            data = to_fp16(data)
        name = f"{graph}.onnx"
        atomic_write(out / name, data)
        entries[graph] = {"file": name, "sha256": sha256_bytes(data), "bytes": len(data), **io_shapes(model.cfg, graph)}
    manifest = {
        "format": ENGINE_FORMAT,
        "version": MANIFEST_VERSION,
        "backend": backend,
        "precision": precision,
        "fifm": fifm,
        "opset": opset,
        "preset": model.cfg.name,
        "config": model.cfg.to_dict(),
        "weights_sha256": weights.model_digest(model),
        "trained": trained,
        # What the weights were trained on (``fgsl.train``'s "centre" or "aligned" crops), so
        # the live spotter can say so for an engine folder as it does for weights (None: unknown).
        "crops": loaded.crops,
        "source": loaded.origin,
        "exporter": EXPORTER,
        "graphs": entries,
    }
    return write_manifest(out, manifest)


def write_manifest(folder: str | Path, manifest: Mapping[str, Any]) -> Path:
    return atomic_write(Path(folder) / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())


def is_engine_dir(path: str | Path) -> bool:
    """Whether ``path`` has a ``manifest.json`` at all: readers open it as an engine folder and
    refuse a foreign or damaged manifest in one line (:func:`read_manifest`)."""
    return (Path(path) / MANIFEST).is_file()


def holds_engine_manifest(path: str | Path) -> bool:
    """Whether ``path``'s ``manifest.json`` is an FGSL engine's (``format`` ``fgsl-engine``), not
    merely a file of that name: a web app's or a package's ``manifest.json`` is the user's, and
    must neither be replaced by ``engines.build`` nor read as an engine's config."""
    try:
        manifest = json.loads((Path(path) / MANIFEST).read_text())
    except (OSError, ValueError):  # (UnicodeDecodeError is a ValueError)
        return False
    return isinstance(manifest, dict) and manifest.get("format") == ENGINE_FORMAT


def folder_files(path: str | Path | None) -> list[Path]:
    """The files a ``--weights`` folder is read from: a weights folder's weights, config and
    training checkpoint; an engine folder's manifest and the graphs and TensorRT plans it lists.
    A command's outputs must not replace them (``fgsl.cli.check_output``): ``--out
    RUN_DIR/config.json`` would destroy the model the command runs. A manifest that cannot be
    read adds nothing here: opening the folder reports it."""
    if path is None or not Path(path).is_dir():
        return []
    folder = Path(path)
    names = [weights.WEIGHTS_FILE, weights.CONFIG_FILE, weights.CHECKPOINT_FILE, MANIFEST]
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        for section in ("graphs", "plans"):
            names += [entry["file"] for entry in (manifest.get(section) or {}).values()]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        pass
    return [folder / name for name in names]


def read_manifest(folder: str | Path, verify: bool = True) -> dict[str, Any]:
    """The manifest of an engine folder; with ``verify`` every graph file is checked.

    A file that is missing, shorter or longer than recorded, or whose SHA-256 differs is
    refused: an engine folder cannot rebuild itself (it may not know its weights), so the
    message says how to rebuild it.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    rebuild = "rebuild it with `python -m engines.build`"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise EngineError(f"{folder}: not an engine folder (no {MANIFEST}); {rebuild}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise EngineError(f"{path}: not an FGSL engine manifest (unreadable JSON); {rebuild}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != ENGINE_FORMAT:
        raise EngineError(f"{path}: not an FGSL engine manifest; {rebuild}")
    if manifest.get("version") != MANIFEST_VERSION:
        raise EngineError(f"{path}: engine manifest version {manifest.get('version')} is not "
                          f"{MANIFEST_VERSION} (built by another release); {rebuild}")
    check_manifest(manifest, path)
    if verify:
        for graph, entry in manifest["graphs"].items():
            check_file(folder / entry["file"], entry, f"graph {graph!r}")
    return manifest


def check_manifest(manifest: Mapping[str, Any], path: Path) -> None:
    """Refuse a manifest whose structure or config cannot describe its graphs, as one line.

    Every reader indexes ``config`` and ``graphs`` (``plans``) directly, so a hand-edited or
    damaged manifest would otherwise end in a KeyError/AttributeError traceback, and a config
    that contradicts the graphs it lists (another window or image size) would reach ONNX
    Runtime or TensorRT as an input of the wrong shape. The graphs' recorded input shapes are
    what the export wrote next to their SHA-256, so the config is checked against them.
    """
    rebuild = "rebuild it with `python -m engines.build`"
    missing = [key for key in ("config", "graphs") if key not in manifest]
    if missing:
        raise EngineError(f"{path}: incomplete engine manifest (no {', '.join(missing)}); {rebuild}")
    for key in ("source", "weights_sha256"):  # (read as text by engines.selftest: a number was a TypeError)
        if manifest.get(key) is not None and not isinstance(manifest[key], str):
            raise EngineError(f"{path}: damaged engine manifest ({key} must be text, found {manifest[key]!r}); "
                              f"{rebuild}")
    for section in ("graphs", "plans"):
        entries = manifest.get(section)
        if section == "plans" and entries is None:
            continue
        if not isinstance(entries, dict) or not all(
                isinstance(entry, dict) and isinstance(entry.get("file"), str) for entry in entries.values()):
            raise EngineError(f"{path}: damaged engine manifest ({section} must map each graph to an entry with "
                              f"a file name); {rebuild}")
        unknown = sorted(set(entries) - set(GRAPHS))
        if unknown:
            raise EngineError(f"{path}: damaged engine manifest (unknown graph {unknown[0]!r} in {section}); {rebuild}")
    check_manifest_fields(manifest, path)
    try:
        cfg = FGSLConfig.from_dict(manifest["config"], source=f"{path} (config)")
    except (ValueError, TypeError) as exc:
        raise EngineError(f"{path}: its config is unreadable ({exc}); {rebuild}") from None
    for graph, entry in manifest["graphs"].items():
        for side in ("inputs", "outputs"):
            recorded = entry.get(side)
            expected = io_shapes(cfg, graph)[side]
            # The batch axis (0) is dynamic or fixed at export; every other axis follows the config.
            if not isinstance(recorded, dict) or set(recorded) != set(expected) or any(
                    not isinstance(recorded[name], list) or recorded[name][1:] != shape[1:]
                    for name, shape in expected.items()):
                raise EngineError(f"{path}: config (preset {cfg.name!r}, window_frames {cfg.window_frames}, "
                                  f"image_size {cfg.image_size}, {cfg.num_classes} classes) does not match graph "
                                  f"{entry['file']} ({side} {_shapes(recorded)}, the config gives "
                                  f"{_shapes(expected)}); {rebuild}")


#: The manifest's fields every reader takes as they are, with the values they may have.
MANIFEST_CHOICES: dict[str, tuple[Any, ...]] = {"precision": PRECISIONS, "fifm": FIFM_FORMS,
                                                "trained": (True, False, None)}


def check_manifest_fields(manifest: Mapping[str, Any], path: Path) -> None:
    """Refuse a manifest whose ``precision``, ``fifm``, ``trained`` or ``opset`` is not one its
    readers can take: an ``opset`` of ``null`` or ``"abc"`` ended in ``int()``'s traceback, an
    unknown precision or FIFM form passed the self-test, and ``"trained": "false"`` (text, not
    JSON's false) opened without ``--allow-untrained``. Absent keys take the readers' defaults."""
    rebuild = "rebuild it with `python -m engines.build`"
    for key, choices in MANIFEST_CHOICES.items():
        value = manifest.get(key)
        # (type and value both: 1 == True and 0 == False, so ``in`` alone would take them)
        if key in manifest and not any(type(value) is type(choice) and value == choice for choice in choices):
            allowed = ", ".join(json.dumps(choice) for choice in choices)
            raise EngineError(f"{path}: damaged engine manifest ({key} {json.dumps(value)} is not one of {allowed}); "
                              f"{rebuild}")
    opset = manifest.get("opset", DEFAULT_OPSET)
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise EngineError(f"{path}: damaged engine manifest (opset {json.dumps(opset)} is not a whole number from "
                          f"{MIN_OPSET} to {MAX_OPSET}); {rebuild}")


def check_graph_metadata(meta: Mapping[str, str], where: str | Path, graph: str, *, fifm: str, precision: str,
                         cfg: FGSLConfig) -> None:
    """Refuse a graph file whose own metadata (``fgsl.graph``, ``fgsl.fifm``, ``fgsl.precision``,
    ``fgsl.config``, written by the export) contradicts what its engine says it is: a manifest
    edited to another FIFM form, precision or config (``backbone.depth`` changes no input or
    output shape), or a file of another graph. Such a graph reached ONNX Runtime and failed
    there (a plugin-form graph named ``conv``) or ran as something it is not. The config is
    compared less its decoding settings, which ``fgsl.tune --write`` changes in the manifest
    only. A key the file lacks is not checked. ``where`` names the file in the message."""
    rebuild = "rebuild it with `python -m engines.build`"
    want = {"fgsl.graph": graph, "fgsl.fifm": graph_fifm(graph, fifm), "fgsl.precision": precision}
    for key, value in want.items():
        if meta.get(key, value) != value:
            raise EngineError(f"{where}: its own metadata says {key} {meta[key]!r}, its engine says {value!r}: a "
                              f"damaged engine folder; {rebuild}")
    if "fgsl.config" not in meta:
        return
    try:
        recorded = FGSLConfig.from_dict(json.loads(meta["fgsl.config"])).graph_dict()
    except (ValueError, TypeError) as exc:
        raise EngineError(f"{where}: its fgsl.config metadata is unreadable ({exc}); {rebuild}") from None
    expected = cfg.graph_dict()
    changed = sorted(key for key in set(recorded) | set(expected) if recorded.get(key) != expected.get(key))
    if changed:
        raise EngineError(f"{where}: exported for another config than its engine's ({', '.join(changed)} differ): "
                          f"a damaged engine folder; {rebuild}")


def _shapes(inputs: Any) -> str:
    """``clips [B, 3, 32, 32, 32]`` for a message (whatever a damaged manifest holds as itself)."""
    if not isinstance(inputs, dict):
        return repr(inputs)
    return ", ".join(f"{name} [{', '.join('B' if i == 0 else str(d) for i, d in enumerate(shape))}]"
                     if isinstance(shape, list) else f"{name} {shape!r}" for name, shape in inputs.items())


def check_file(path: Path, entry: Mapping[str, Any], what: str) -> None:
    """Refuse ``path`` unless its size and SHA-256 equal ``entry['bytes']``/``entry['sha256']``."""
    rebuild = "rebuild it with `python -m engines.build`"
    if not path.is_file():
        raise EngineError(f"{path}: missing ({what} of this engine folder); {rebuild}")
    size = path.stat().st_size
    if size != entry.get("bytes"):
        kind = "truncated" if isinstance(entry.get("bytes"), int) and size < entry["bytes"] else "altered"
        raise EngineError(f"{path}: {kind} ({size} bytes, the manifest says {entry.get('bytes')}); {rebuild}")
    if sha256_file(path) != entry.get("sha256"):
        raise EngineError(f"{path}: corrupt (SHA-256 differs from the manifest); {rebuild}")


def config_of(manifest: Mapping[str, Any]) -> FGSLConfig:
    return FGSLConfig.from_dict(manifest["config"])


def check_trained(manifest: Mapping[str, Any], folder: str | Path, allow_untrained: bool) -> None:
    """Refuse an engine built from untrained weights unless allowed (as weights folders are)."""
    if manifest.get("trained") is False and not allow_untrained:
        raise weights.UntrainedWeights(f"{folder}: this engine was built from untrained (random) weights; its outputs "
                                   "mean nothing. Pass --allow-untrained for benchmarks")


def cache_entry(cfg: FGSLConfig, digest: str, *, backend: str, backend_version: str, graph: str, precision: str,
                fifm: str, opset: int, device: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(identity, key) of one compiled graph in the engine cache (:mod:`engines.cache`).

    The identity names what the entry is (weights, backend, graph, precision, FIFM form,
    device type); the key adds everything the compiled bytes depend on: input shapes, the
    config less its decoding settings (a tuned threshold changes no graph), opset, the backend's and the exporter's versions and the device (GPU name and
    compute capability on CUDA). Both graphs of the streaming pair get their own entry.
    """
    from .cache import canonical_hash, device_fingerprint

    identity = {"backend": backend, "graph": graph, "precision": precision, "fifm": graph_fifm(graph, fifm),
                "weights_sha256": digest, "device_type": device.split(":")[0]}
    key = {**identity, "opset": opset, "shapes": io_shapes(cfg, graph), "config_sha256": canonical_hash(cfg.graph_dict()),
           "backend_version": backend_version, "exporter": EXPORTER, "device": device_fingerprint(device)}
    return identity, key
