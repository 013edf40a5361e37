"""A Triton Inference Server model repository from an engine folder (serving many streams).

``python -m engines.build ... --triton-repo DIR`` (or :func:`write_repository`) writes one
Triton model per graph of the engine folder:

    DIR/fgsl/               config.pbtxt, 1/model.onnx      whole model: clips -> scores, offsets
    DIR/fgsl_encode_chunk/  config.pbtxt, 1/model.onnx      streaming: chunks -> final, taps
    DIR/fgsl_decode_window/ config.pbtxt, 1/model.onnx      streaming: final, taps -> scores, offsets

Each ``config.pbtxt`` follows Triton's model configuration (``platform:
"onnxruntime_onnx"``, ``max_batch_size`` with the batch axis left out of ``dims``, dynamic
batching so the windows of many streams and faces share one engine call, one instance on the
GPU or the CPU). Source: Triton's ``model_config.proto`` and its "Model Configuration" guide
(docs.nvidia.com/deeplearning/triton-inference-server). The files are checked by parsing them
back with that very proto (``tritonclient.grpc.model_config_pb2``) when ``tritonclient`` is
installed (it is in the ``dev`` extra): :func:`read_config`.

The ONNX graphs are served by Triton's ONNX Runtime backend (which can itself use TensorRT as
an execution provider); serialized TensorRT plans are tied to one GPU and TensorRT version and
are not put into the repository.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from fgsl.files import atomic_output, atomic_write

from .base import EngineError
from .export import config_of, io_shapes, read_manifest
from .extras import TRITON_HINT, require

#: Triton model name per graph.
MODEL_NAMES = {"model": "fgsl", "encode_chunk": "fgsl_encode_chunk", "decode_window": "fgsl_decode_window"}
#: What :func:`read_config` imports: Triton's own ``ModelConfig`` proto (from tritonclient).
#: ``engines.build --triton-repo`` asks for the same modules before it exports anything.
MODULES = ("tritonclient.grpc.model_config_pb2",)


def config_text(name: str, inputs: dict[str, list[Any]], outputs: dict[str, list[Any]], max_batch: int,
                kind: str, queue_delay_us: int = 2000) -> str:
    """``config.pbtxt`` text for one ONNX graph (shapes without the batch axis)."""
    def tensors(field: str, shapes: dict[str, list[Any]]) -> str:
        items = [f'  {{ name: "{n}" data_type: TYPE_FP32 dims: [ {", ".join(str(d) for d in shape[1:])} ] }}'
                 for n, shape in shapes.items()]
        return f"{field} [\n" + ",\n".join(items) + "\n]\n"

    return (f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {max_batch}\n'
            + tensors("input", inputs) + tensors("output", outputs)
            + f"dynamic_batching {{ max_queue_delay_microseconds: {queue_delay_us} }}\n"
            + f"instance_group [ {{ count: 1 kind: KIND_{kind.upper()} }} ]\n")


def write_repository(engine_dir: str | Path, repo: str | Path, max_batch: int = 32, kind: str = "gpu") -> list[Path]:
    """Write the repository for every graph of ``engine_dir``; returns the config files.

    Every file is replaced whole (:mod:`fgsl.files`): a server that loads the repository while
    it is rewritten, or a build killed half-way, never finds a truncated model or config.
    """
    if kind not in ("gpu", "cpu"):
        raise EngineError(f"Triton instance kind must be gpu or cpu, got {kind!r}")
    if max_batch < 1:
        raise EngineError(f"Triton max batch size must be at least 1, got {max_batch}")
    engine_dir, repo = Path(engine_dir), Path(repo)
    manifest = read_manifest(engine_dir)
    if manifest.get("fifm") == "plugin":
        raise EngineError(f"{engine_dir}: FIFM 'plugin' graphs need the TensorRT plugin; build with --fifm conv for Triton")
    cfg = config_of(manifest)
    written = []
    for graph, entry in manifest["graphs"].items():
        name = MODEL_NAMES[graph]
        shapes = io_shapes(cfg, graph)
        with atomic_output(repo / name / "1" / "model.onnx") as tmp:
            shutil.copyfile(engine_dir / entry["file"], tmp)
        path = atomic_write(repo / name / "config.pbtxt",
                            config_text(name, shapes["inputs"], shapes["outputs"], max_batch, kind).encode())
        written.append(path)
    return written


def read_config(path: str | Path) -> Any:
    """Parse a ``config.pbtxt`` with Triton's own proto; ``EngineError`` when it does not parse."""
    require(MODULES, "reading Triton configs", TRITON_HINT)
    from google.protobuf import text_format  # (tritonclient's own dependency)
    from tritonclient.grpc import model_config_pb2
    try:
        return text_format.Parse(Path(path).read_text(), model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise EngineError(f"{path}: not a valid Triton model configuration ({exc})") from None
