"""FGSL inference engines behind one call: ``engines.open(path, backend="auto")``.

A *path* is a weights folder (``model.safetensors`` + ``config.json``) or an engine folder
written by ``python -m engines.build`` (``manifest.json`` + ONNX graphs, TensorRT plans).

``backend="auto"`` takes the first backend that works, in the order tensorrt -> onnxruntime
-> torch (TensorRT only on a CUDA device), and prints why it passed over another once per
process on stderr. From a weights folder the onnxruntime and tensorrt backends compile the
model into the engine cache (:mod:`engines.cache`; ``$FGSL_ENGINE_CACHE``) on first use.
The torch backend is the reference every other backend is checked against
(``python -m engines.selftest``). Engines never import realtime code.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fgsl.startup import startup_imports

# ``python -m engines.<cli>`` imports this package first, and torch with it: Ctrl-C then is no
# bug (fgsl.startup). A program that imports ``engines`` keeps its KeyboardInterrupt.
with startup_imports(__name__):
    from fgsl.cli import register_user_error

    from .base import Engine, EngineError, check_clips, resolve_device

BACKENDS = ("torch", "onnxruntime", "tensorrt")
#: ``auto`` tries these in order (tensorrt only when the device is CUDA).
AUTO_ORDER = ("tensorrt", "onnxruntime", "torch")

register_user_error(EngineError)


class BackendUnavailable(EngineError):
    """A backend that cannot run here (not installed, no CUDA device, ...); ``auto`` moves on."""


def add_backend_flag(parser: Any) -> None:
    """``--backend`` (default ``auto``), the same choices and help in every CLI that opens an engine."""
    parser.add_argument("--backend", default="auto", choices=("auto", *BACKENDS),
                        help="engine backend: auto tries " + " -> ".join(AUTO_ORDER) + " (tensorrt only on a CUDA "
                             "device); an engine folder runs on onnxruntime or tensorrt")


def trained(path: str | Path) -> bool | None:
    """Whether the weights behind ``path`` were trained: a weights folder's safetensors header
    says so, an engine folder's manifest records what ``engines.build`` knew (``None``: built
    from an in-memory model, unknown). An engine folder has no ``model.safetensors`` to ask."""
    from .export import is_engine_dir, read_manifest

    if is_engine_dir(path):
        return read_manifest(path, verify=False).get("trained")
    from fgsl import weights

    return weights.is_trained(path)


def _cuda(device: str) -> bool:
    return device == "cuda" or device.startswith("cuda:")


def candidates(backend: str, device: str) -> tuple[str, ...]:
    """Backends to try for ``backend`` on ``device``, best first."""
    if backend not in ("auto", *BACKENDS):
        raise EngineError(f"unknown backend {backend!r}; choose auto or one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return (backend,)
    return tuple(b for b in AUTO_ORDER if b != "tensorrt" or _cuda(device))


def tensorrt_backend(device: str) -> Any:
    """``engines.trt`` with TensorRT importable and a CUDA ``device`` to run on, or
    :class:`BackendUnavailable` saying why: the one gate before any TensorRT work.

    ``auto`` passes over the backend on it, and ``engines.build --backend tensorrt`` stops on
    it before minutes of export. No TensorRT object is created here: only the import
    (:func:`engines.trt.import_tensorrt`) and the CUDA check, the device's string first so that
    a CPU device never loads TensorRT's libraries.
    """
    if not _cuda(device):
        raise BackendUnavailable(f"tensorrt needs a CUDA device, not {device!r}")
    try:
        from . import trt
    except ImportError as exc:
        raise BackendUnavailable(f"engines.trt cannot be imported ({exc})") from None
    try:
        trt.import_tensorrt()
        trt.require_cuda(device)
    except EngineError as exc:
        raise BackendUnavailable(str(exc)) from None
    return trt


def _open_tensorrt_model(model: Any, device: str, source: str | None, cache: Any) -> Engine:
    """TensorRT engines for ``encode_chunk`` and ``decode_window`` (``infer`` composes them),
    built from the conv-form ONNX into the engine cache on first use."""
    import tempfile

    from fgsl.weights import model_digest

    from .export import DEFAULT_OPSET, cache_entry, export_onnx

    trt = tensorrt_backend(device)
    version = str(getattr(trt.import_tensorrt(), "__version__", "?"))
    digest, plans = model_digest(model), {}
    for graph in ("encode_chunk", "decode_window"):
        identity, key = cache_entry(model.cfg, digest, backend="tensorrt", backend_version=version,
                                    graph=graph, precision="fp32", fifm="conv", opset=DEFAULT_OPSET, device=device)

        def build(graph: str = graph) -> bytes:
            with tempfile.TemporaryDirectory(prefix="fgsl-trt-") as tmp:
                onnx_path = export_onnx(model, Path(tmp) / f"{graph}.onnx", graph, "conv")
                trt.build_engine(onnx_path, Path(tmp) / f"{graph}.engine", precision="fp32", device=device)
                return (Path(tmp) / f"{graph}.engine").read_bytes()

        plans[graph], _ = cache.get_or_build(identity, key, build, meta={"source": source})
    return trt.TensorRTEngine(model.cfg, plans, device=device, source=source, precision="fp32", fifm_form="conv")


def _open_model_with(name: str, model: Any, device: str, source: str | None, threads: int | None,
                     cache_dir: str | Path | None) -> Engine:
    """Backend ``name`` for ``model``, or :class:`BackendUnavailable` saying why it cannot run here."""
    from .cache import EngineCache

    if name == "torch":
        from .torch_backend import TorchEngine

        return TorchEngine(model, device=device, source=source)
    cache = EngineCache.at(cache_dir)
    if name == "tensorrt":
        return _open_tensorrt_model(model, device, source, cache)
    from . import onnx_backend

    _require_onnxruntime(device)
    try:
        return onnx_backend.OnnxEngine.from_model(model, device=device, cache=cache, source=source,
                                                  intra_op_threads=threads)
    except BackendUnavailable:
        raise
    except EngineError as exc:  # the export or session failed: auto moves on to torch
        raise BackendUnavailable(str(exc)) from None


def _require_onnxruntime(device: str) -> None:
    """:class:`BackendUnavailable` when onnxruntime is missing or has no provider for ``device``."""
    from . import onnx_backend

    reason = onnx_backend.available()
    if reason:
        raise BackendUnavailable(reason)
    try:
        onnx_backend.providers_for(device)
    except EngineError as exc:  # a CUDA device, but no CUDA provider in this onnxruntime build
        raise BackendUnavailable(str(exc)) from None


def _gpu_else_cpu(asked: str, device: str, opener: Callable[[str], Engine]) -> Engine:
    """``opener(device)``; where ``auto`` chose the GPU and nothing can run there, ``opener("cpu")``.

    A GPU machine whose onnxruntime has no CUDA provider still runs an engine folder's graphs,
    or ``--backend onnxruntime``, on the CPU as it did before ``auto`` looked for a GPU. An
    explicit ``cuda`` never falls back; when the CPU cannot run it either, the GPU's reason is
    the error.
    """
    try:
        return opener(device)
    except BackendUnavailable as exc:
        if asked != "auto" or device == "cpu":
            raise
        try:
            engine = opener("cpu")
        except EngineError:
            raise exc from None
        from .cache import say_once

        say_once(f"engine not run on {device} ({exc}); running it on the CPU")
        return engine


def _first_that_opens(names: tuple[str, ...], attempt: Callable[[str], Engine]) -> Engine:
    """Try ``names`` in order; a fallback prints its reason once. A single name just raises."""
    from .cache import say_once

    for i, name in enumerate(names):
        try:
            return attempt(name)
        except BackendUnavailable as exc:
            if i == len(names) - 1:
                raise
            say_once(f"{name} backend not used ({exc}); falling back to {names[i + 1]}")
    raise EngineError("no backend to try")  # unreachable: candidates() is never empty


def open_model(model: Any, backend: str = "auto", *, device: str = "cpu", source: str | None = None,
               threads: int | None = None, cache_dir: str | Path | None = None) -> Engine:
    """An engine for an in-memory ``fgsl.model.FGSL`` (e.g. untrained weights for a benchmark).

    ``device``: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (:func:`resolve_device`).

    ``threads``: intra-op threads for onnxruntime (default: its own). ``cache_dir``: the
    engine cache (default :func:`engines.cache.default_dir`).
    """
    candidates(backend, device)  # an unknown backend fails before torch looks for a GPU

    def on(where: str) -> Engine:
        return _first_that_opens(candidates(backend, where),
                                 lambda name: _open_model_with(name, model, where, source, threads, cache_dir))

    return _gpu_else_cpu(device, resolve_device(device), on)


def _open_engine_dir(path: Path, backend: str, device: str, allow_untrained: bool, threads: int | None) -> Engine:
    """An engine folder: its TensorRT engines (when built for tensorrt), else its ONNX graphs."""
    from .export import check_file, check_trained, config_of, read_manifest

    manifest = read_manifest(path)
    check_trained(manifest, path, allow_untrained)
    if backend == "torch":
        raise EngineError(f"{path}: an engine folder holds compiled graphs; open the weights folder for the torch backend")
    names = tuple(n for n in candidates(backend, device) if n != "torch")
    plans = manifest.get("plans") or {}

    def attempt(name: str) -> Engine:
        if name == "tensorrt":
            trt = tensorrt_backend(device)
            if not plans:
                raise BackendUnavailable(f"{path} holds no TensorRT engines (built with --backend onnxruntime)")
            for graph, entry in plans.items():
                check_file(path / entry["file"], entry, f"TensorRT engine {graph!r}")
            return trt.TensorRTEngine(config_of(manifest), {g: path / e["file"] for g, e in plans.items()},
                                      device=device, source=str(path), precision=manifest.get("precision"),
                                      fifm_form=manifest.get("fifm"))
        from . import onnx_backend

        _require_onnxruntime(device)
        return onnx_backend.OnnxEngine.from_dir(path, device=device, allow_untrained=allow_untrained,
                                                intra_op_threads=threads)

    return _first_that_opens(names, attempt)


def open(  # noqa: A001 - the documented entry point mirrors the builtin's shape on purpose
    path: str | Path,
    backend: str = "auto",
    *,
    device: str = "cpu",
    allow_untrained: bool = False,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
) -> Engine:
    """Open an FGSL engine for ``path``; raises :class:`EngineError` with a clear reason.

    ``backend``: ``auto`` (tensorrt -> onnxruntime -> torch, reasons printed once),
    ``torch``, ``onnxruntime`` or ``tensorrt``. ``device``: ``cpu``, ``cuda``, ``cuda:N`` or
    ``auto`` (the GPU where torch sees one; :func:`resolve_device`). Untrained weights are refused unless
    ``allow_untrained`` (:class:`fgsl.weights.WeightsError`).
    """
    candidates(backend, device)  # an unknown backend fails before any file is read
    resolved = resolve_device(device)  # and a missing GPU
    path = Path(path)
    if not path.exists():
        raise EngineError(f"{path}: no such weights folder or engine folder")
    if not path.is_dir():
        raise EngineError(f"{path}: expected a weights folder (model.safetensors + config.json) "
                          "or an engine folder (manifest.json)")
    from .export import is_engine_dir

    if is_engine_dir(path):
        return _gpu_else_cpu(device, resolved, lambda where: _open_engine_dir(path, backend, where, allow_untrained, threads))
    from fgsl import weights

    model = weights.load(path, allow_untrained=allow_untrained)
    return open_model(model, backend, device=device, source=str(path), threads=threads, cache_dir=cache_dir)


__all__ = ["AUTO_ORDER", "BACKENDS", "BackendUnavailable", "Engine", "EngineError", "candidates", "check_clips",
           "add_backend_flag", "open", "open_model", "resolve_device", "tensorrt_backend", "trained"]
