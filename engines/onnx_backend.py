"""ONNX Runtime backend: the three exported FGSL graphs behind the Engine protocol.

Graphs come from an engine folder (``python -m engines.build``, files checked against the
manifest) or from the engine cache (exported from a model on first use, see
:mod:`engines.cache`). Sessions are created lazily, one per graph, the first time that graph
runs: offline inference uses ``model`` only, the live spotter ``encode_chunk`` and
``decode_window`` only, and a ViT graph costs its weights in memory.

Providers: ``device="cpu"`` runs the CPU execution provider; ``"cuda"``/``"cuda:N"`` asks for
the CUDA provider (only when this ONNX Runtime build has it, else a clear error) with CPU
behind it for unsupported nodes. ONNX Runtime may still fall back to CPU when the CUDA
libraries cannot be loaded: :meth:`OnnxEngine.describe` reports the providers the session
really runs (``session.get_providers()``), and the fallback is printed once. On CUDA the
engine binds inputs and outputs with ``IOBinding`` (outputs allocated on the GPU and copied
back once, no per-run output allocation on the host).

Threads: ``intra_op_threads`` parallelises inside an operator (the one that matters on a
CPU); ``inter_op_threads`` runs independent operators in parallel and is only used when it is
above 1, which also switches the session to parallel execution mode. Unset, ONNX Runtime
picks its defaults (one intra-op thread per physical core).

FIFM forms: ``conv`` and ``dft`` run here; the ``plugin`` form is a TensorRT custom op and is
refused. Before a ``dft`` engine runs, the exact DFT node pattern of the export is checked
against torch on the engine's own channel count and length, with the engine's providers; an
ONNX Runtime that gets it wrong (onnx/onnx#4798 shows builds that did) is refused.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fgsl.cli import explain
from fgsl.config import FGSLConfig

from .base import IO, EngineError, check_chunks, check_clips, check_features
from .cache import EngineCache, say_once, sha256_bytes
from .export import (
    DEFAULT_OPSET, cache_entry, check_graph_metadata, check_trained, config_of, export_onnx_bytes, filter_probe,
    graph_fifm, read_manifest,
)
from .extras import ONNX_HINT, require
from .plugins.fifm_fft import ONNX_DOMAIN, OP_TYPE

#: Max abs difference allowed between ONNX Runtime's DFT filter and torch's on the probe
#: (values of order 1; a correct float32 FFT of a few dozen points is off by ~1e-6).
DFT_TOLERANCE = 1e-4

_dft_checked: dict[tuple[Any, ...], float] = {}


def import_onnxruntime(needed_by: str = "the onnxruntime backend", error: type[Exception] = EngineError) -> Any:
    """``import onnxruntime``, or ``error`` (the caller's type: ``calib`` raises its own) naming
    ``needed_by`` and what to install (:func:`engines.extras.require`)."""
    require(("onnxruntime",), needed_by, ONNX_HINT, error)
    import onnxruntime  # noqa: PLC0415 (optional dependency)

    return onnxruntime


def available() -> str | None:
    """None when ONNX Runtime can be used here, else the reason it cannot."""
    try:
        import_onnxruntime()
    except EngineError as exc:
        return str(exc)
    return None


def providers_for(device: str) -> list[Any]:
    """Execution providers for ``device`` (``cpu``, ``cuda``, ``cuda:N``), or :class:`EngineError`."""
    ort = import_onnxruntime()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda" or device.startswith("cuda:"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise EngineError(f"device {device!r}: this onnxruntime ({ort.__version__}) has no CUDAExecutionProvider "
                              f"(available: {', '.join(ort.get_available_providers())}); install onnxruntime-gpu "
                              "or use device 'cpu'")
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    raise EngineError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'")


def session_options(intra_op_threads: int | None = None, inter_op_threads: int | None = None) -> Any:
    """The options every FGSL session runs with (the engines' and ``calib.report``'s): full graph
    optimisation, errors-only logging, and the thread counts asked for (module docstring)."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: ORT's warnings about unused initializers are noise here
    if intra_op_threads is not None:
        options.intra_op_num_threads = int(intra_op_threads)
    if inter_op_threads is not None and inter_op_threads > 1:
        options.inter_op_num_threads = int(inter_op_threads)
        options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    return options


def _run_probe(onnx_bytes: bytes, x: np.ndarray, providers: list[Any]) -> np.ndarray:
    session = import_onnxruntime().InferenceSession(onnx_bytes, sess_options=session_options(), providers=providers)
    return session.run(None, {"x": x})[0]


def check_dft(providers: list[Any], channels: int, length: int, opset: int = DEFAULT_OPSET) -> float:
    """Max abs diff of ONNX Runtime's DFT filter vs torch; :class:`EngineError` above :data:`DFT_TOLERANCE`.

    Checked once per process for each (providers, channels, length, opset).
    """
    ort = import_onnxruntime()
    cache_key = (ort.__version__, repr(providers), channels, length, opset)
    if cache_key not in _dft_checked:
        probe, x, expected = filter_probe(channels, length, "dft", opset)
        try:
            got = _run_probe(probe, x, providers)
        except Exception as exc:  # an ORT that cannot run DFT at all is refused the same way
            raise EngineError(f"onnxruntime {ort.__version__} cannot run FIFM's DFT form ({explain(exc)})"
                              f"; build with --fifm conv") from None
        diff = float(np.abs(np.asarray(got) - expected).max()) if np.shape(got) == expected.shape else float("inf")
        if not diff <= DFT_TOLERANCE:
            raise EngineError(f"onnxruntime {ort.__version__} computes DFT wrongly here (max abs diff {diff:.3g} vs "
                              f"torch on a [{channels}, {length}] probe, tolerance {DFT_TOLERANCE:g}); "
                              "build with --fifm conv")
        _dft_checked[cache_key] = diff
    return _dft_checked[cache_key]


class OnnxEngine:
    """FGSL on ONNX Runtime; ``load_graph(name) -> ONNX bytes`` supplies each graph on first use."""

    backend = "onnxruntime"

    def __init__(
        self,
        cfg: FGSLConfig,
        load_graph: Callable[[str], bytes],
        *,
        precision: str = "fp32",
        fifm: str = "conv",
        opset: int = DEFAULT_OPSET,
        device: str = "cpu",
        intra_op_threads: int | None = None,
        inter_op_threads: int | None = None,
        source: str | None = None,
    ) -> None:
        if fifm == "plugin":
            raise EngineError(f"FIFM form 'plugin' is the TensorRT custom op {ONNX_DOMAIN}::{OP_TYPE}; "
                              "ONNX Runtime cannot run it: build with --fifm conv (or dft) for onnxruntime")
        self.ort = import_onnxruntime()
        self.cfg = cfg
        self.precision = precision
        self.fifm = fifm
        self.opset = opset
        self.device = device
        self.source = source
        self.threads = {"intra_op": intra_op_threads, "inter_op": inter_op_threads}
        self.providers = providers_for(device)
        self._load_graph = load_graph
        self._sessions: dict[str, Any] = {}
        self._lock = threading.Lock()
        if fifm == "dft":
            check_dft(self.providers, cfg.neck_dim, cfg.tokens, opset)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dir(cls, folder: str | Path, *, device: str = "cpu", allow_untrained: bool = False,
                 intra_op_threads: int | None = None, inter_op_threads: int | None = None) -> "OnnxEngine":
        """Open an engine folder written by ``python -m engines.build`` (files verified first)."""
        folder = Path(folder)
        manifest = read_manifest(folder)
        check_trained(manifest, folder, allow_untrained)
        graphs = manifest.get("graphs", {})

        def load_graph(name: str) -> bytes:
            entry = graphs.get(name)
            if entry is None:
                raise EngineError(f"{folder}: this engine folder has no {name!r} graph (it has {', '.join(graphs)})")
            data = (folder / entry["file"]).read_bytes()
            if sha256_bytes(data) != entry["sha256"]:  # changed since it was opened
                raise EngineError(f"{folder / entry['file']}: corrupt (SHA-256 differs from the manifest); "
                                  "rebuild it with `python -m engines.build`")
            return data

        return cls(config_of(manifest), load_graph, precision=manifest.get("precision", "fp32"),
                   fifm=manifest.get("fifm", "conv"), opset=int(manifest.get("opset", DEFAULT_OPSET)), device=device,
                   intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads, source=str(folder))

    @classmethod
    def from_model(cls, model: Any, *, device: str = "cpu", fifm: str = "conv", opset: int = DEFAULT_OPSET,
                   cache: EngineCache | None = None, source: str | None = None,
                   intra_op_threads: int | None = None, inter_op_threads: int | None = None) -> "OnnxEngine":
        """FP32 graphs of an in-memory model, exported into the engine cache on first use of each."""
        cache = cache if cache is not None else EngineCache.at()
        ort = import_onnxruntime()
        from fgsl.weights import model_digest

        digest = model_digest(model)
        cfg = model.cfg

        def load_graph(name: str) -> bytes:
            identity, key = cache_entry(cfg, digest, backend="onnxruntime", backend_version=ort.__version__, graph=name,
                                        precision="fp32", fifm=fifm, opset=opset, device=device)

            def build() -> bytes:
                say_once(f"exporting the {name} graph ({cfg.name}, fifm {graph_fifm(name, fifm)}) for onnxruntime into "
                         f"the engine cache {cache.root}")
                return export_onnx_bytes(model, name, fifm, opset)

            data, _ = cache.get_or_build(identity, key, build, meta={"source": source})
            return data

        return cls(cfg, load_graph, fifm=fifm, opset=opset, device=device, intra_op_threads=intra_op_threads,
                   inter_op_threads=inter_op_threads, source=source)

    # ------------------------------------------------------------------ sessions
    def session(self, graph: str) -> Any:
        """The ONNX Runtime session of ``graph`` (created on first use)."""
        with self._lock:
            if graph not in self._sessions:
                session = self._new_session(graph)
                check_graph_metadata(session.get_modelmeta().custom_metadata_map, self._where(graph), graph,
                                     fifm=self.fifm, precision=self.precision, cfg=self.cfg)
                if self.device != "cpu" and "CUDAExecutionProvider" not in session.get_providers():
                    say_once(f"onnxruntime could not start CUDA for {self.device}; the {graph} graph runs on "
                             f"{', '.join(session.get_providers())}")
                self._sessions[graph] = session
            return self._sessions[graph]

    def _where(self, graph: str) -> str:
        """What a message about ``graph`` names: the engine folder (or weights) it comes from."""
        return f"{self.source}: the {graph} graph" if self.source else f"the {graph} graph"

    def _new_session(self, graph: str) -> Any:
        """An ONNX Runtime session of ``graph``. ONNX Runtime's refusal (a graph of an IR version or
        an op it does not know: a newer exporter, a plugin-form graph under another name) is one
        :class:`EngineError` line, not its traceback; running out of memory stays what it is."""
        data = self._load_graph(graph)
        options = session_options(self.threads["intra_op"], self.threads["inter_op"])
        try:
            return self.ort.InferenceSession(data, sess_options=options, providers=self.providers)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 (ONNX Runtime's errors have several types)
            raise EngineError(f"{self._where(graph)} cannot be loaded by onnxruntime {self.ort.__version__} "
                              f"({explain(exc)}); rebuild it with `python -m engines.build`") from None

    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self.session(graph)
        names = list(IO[graph][1])
        if session.get_providers()[0] == "CUDAExecutionProvider":
            outputs = self._run_bound(session, feeds, names)
        else:
            outputs = session.run(names, feeds)
        return {name: np.asarray(value, dtype=np.float32) for name, value in zip(names, outputs)}

    def _run_bound(self, session: Any, feeds: dict[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
        """CUDA: inputs copied to the GPU by ONNX Runtime, outputs kept there until one copy back."""
        index = int(self.device.split(":", 1)[1]) if ":" in self.device else 0
        binding = session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, value)
        for name in names:
            binding.bind_output(name, "cuda", index)
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    # ------------------------------------------------------------------ Engine protocol
    def infer(self, clips: np.ndarray) -> dict[str, np.ndarray]:
        return self._run("model", {"clips": check_clips(clips, self.cfg)})

    def encode_chunk(self, chunks: np.ndarray) -> dict[str, np.ndarray]:
        return self._run("encode_chunk", {"chunks": check_chunks(chunks, self.cfg)})

    def decode_window(self, final: np.ndarray, taps: np.ndarray) -> dict[str, np.ndarray]:
        final, taps = check_features(final, taps, self.cfg)
        return self._run("decode_window", {"final": final, "taps": taps})

    def describe(self) -> dict[str, Any]:
        """What runs: the providers come from a real session (the small ``decode_window`` one
        when no graph has run yet), not from what was asked for."""
        c = self.cfg
        running = next(iter(self._sessions.values()), None) or self.session("decode_window")
        providers = running.get_providers()
        threads = self.threads["intra_op"]
        where = "cpu" if providers[0] == "CPUExecutionProvider" else self.device
        detail = f"onnxruntime {providers[0]}" + (f", {threads} intra-op threads" if threads else "")
        return {
            "backend": self.backend,
            "precision": self.precision,
            "device": f"{where} ({detail})",
            "provider": providers[0],
            "providers": providers,
            "onnxruntime": self.ort.__version__,
            "threads": dict(self.threads),
            "input_shape": ["B", 3, c.window_frames, c.image_size, c.image_size],
            "preset": c.name,
            "fifm_form": self.fifm,
            "opset": self.opset,
            "source": self.source,
        }
