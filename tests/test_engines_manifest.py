"""Hand-edited or damaged engine folders are one ``EngineError`` line, never a traceback.

A real tiny engine folder (ONNX graphs, manifest) is exported once; each test copies it,
edits its manifest or a graph as a user or a bad tool would, and opens it with real ONNX
Runtime, or checks it with ``python -m engines.selftest --engine``."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

import engines
from engines import EngineError
from engines.cache import sha256_file
from engines.export import export_engine_dir
from engines.selftest import main as selftest_main
from fgsl.config import preset
from fgsl.model import build

REBUILD = "; rebuild it with `python -m engines.build`"


@pytest.fixture(scope="module")
def model():
    return build(preset("tiny", window_frames=16), seed=0)


@pytest.fixture(scope="module")
def engine_dir(model, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("engine") / "e"
    export_engine_dir(model, folder, trained=True)
    return folder


def edited(engine_dir: Path, tmp_path: Path, edit: Callable[[dict[str, Any], Path], None]) -> Path:
    """A copy of the engine folder with its manifest (and maybe its files) changed by ``edit``."""
    folder = Path(shutil.copytree(engine_dir, tmp_path / "edited"))
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest, folder)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def run_window(folder: Path) -> None:
    """Open ``folder`` as fgsl.infer does and run one window through its ``model`` graph."""
    engine = engines.open(folder, backend="onnxruntime")
    cfg = engine.cfg
    engine.infer(np.zeros((1, 3, cfg.window_frames, cfg.image_size, cfg.image_size), np.float32))


def rewrite_graph(folder: Path, manifest: dict[str, Any], change: Callable[[Any], None]) -> None:
    """Change ``model.onnx`` and record its new size and SHA-256, as a careful hand would."""
    path = folder / "model.onnx"
    proto = onnx.load(str(path))
    change(proto)
    path.write_bytes(proto.SerializeToString())
    manifest["graphs"]["model"].update(sha256=sha256_file(path), bytes=path.stat().st_size)


def set_field(key: str, value: Any) -> Callable[[dict[str, Any], Path], None]:
    return lambda manifest, folder: manifest.__setitem__(key, value)


def set_config(key: str, value: Any) -> Callable[[dict[str, Any], Path], None]:
    return lambda manifest, folder: manifest["config"].__setitem__(key, value)


def set_depth(manifest: dict[str, Any], folder: Path) -> None:
    manifest["config"]["backbone"]["depth"] += 1


def ir_version_99(manifest: dict[str, Any], folder: Path) -> None:
    rewrite_graph(folder, manifest, lambda proto: setattr(proto, "ir_version", 99))


@pytest.mark.parametrize("edit, message", [
    # ONNX Runtime refused the graph when its session was made: a traceback at the first window.
    (ir_version_99, r"^\S+/edited: the model graph cannot be loaded by onnxruntime [\d.]+ \(.*IR version: 99.*\)"),
    # A config the graphs' outputs contradict: an IndexError when decoding (classes cut to 2).
    (set_config("classes", ["negative", "positive"]), r"manifest.json: config \(preset 'tiny', window_frames 16, "
     r"image_size 32, 2 classes\) does not match graph model.onnx \(outputs scores \[B, \d+, 4\], offsets \[B, \d+, 2\], "
     r"the config gives scores \[B, \d+, 2\], offsets \[B, \d+, 2\]\)"),
    # One that changes no shape at all: the graphs' own fgsl.config metadata says otherwise.
    (set_depth, r"edited: the model graph: exported for another config than its engine's \(backbone differ\): "
     "a damaged engine folder"),
    # opset: int(None) / int("abc") tracebacks.
    (set_field("opset", None), r"manifest.json: damaged engine manifest \(opset null is not a whole number from 17 "),
    (set_field("opset", "abc"), r"manifest.json: damaged engine manifest \(opset \"abc\" is not a whole number"),
    # Unknown precision or FIFM form passed; "false" as text opened without --allow-untrained.
    (set_field("precision", "bogus"), r"manifest.json: damaged engine manifest \(precision \"bogus\" is not one of "
     r"\"fp32\", \"fp16\", \"int8\", \"fp8\"\)"),
    (set_field("fifm", "bogus"), r"manifest.json: damaged engine manifest \(fifm \"bogus\" is not one of"),
    (set_field("trained", "false"), r"manifest.json: damaged engine manifest \(trained \"false\" is not one of true, "
     "false, null\\)"),
    (set_field("trained", 0), r"manifest.json: damaged engine manifest \(trained 0 is not one of"),
    # A known precision or form the graphs were not exported in.
    (set_field("precision", "fp16"), r"edited: the model graph: its own metadata says fgsl.precision 'fp32', its "
     "engine says 'fp16'"),
    (set_field("fifm", "dft"), r"edited: the model graph: its own metadata says fgsl.fifm 'conv', its engine says "
     "'dft'"),
])
def test_an_edited_engine_folder_is_one_engine_error_line(edit, message, engine_dir, tmp_path):
    folder = edited(engine_dir, tmp_path, edit)
    with pytest.raises(EngineError) as info:
        run_window(folder)
    text = str(info.value)
    assert "\n" not in text and text.endswith(REBUILD) and re.search(message, text), text


def test_a_plugin_engine_relabelled_conv_is_refused_by_open_and_selftest(model, tmp_path, capsys):
    """A plugin-form graph under a manifest that says conv reached ONNX Runtime's "fgsl:FIFMFilter
    is not a registered function/op" traceback; the self-test now reads the graphs' fgsl.fifm."""
    folder = tmp_path / "plug"
    export_engine_dir(model, folder, fifm="plugin", trained=True, backend="tensorrt")
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "fifm": "conv"}))
    with pytest.raises(EngineError, match=r"the model graph cannot be loaded by onnxruntime .*FIFMFilter"):
        run_window(folder)
    assert selftest_main(["--engine", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {folder / 'model.onnx'}: its own metadata says fgsl.fifm 'plugin', "
                              "its engine says 'conv'"), err


def test_selftest_gives_its_error_line_for_a_non_integer_opset(engine_dir, tmp_path, capsys):
    folder = edited(engine_dir, tmp_path, set_field("opset", "abc"))
    assert selftest_main(["--engine", str(folder)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {folder / 'manifest.json'}: damaged engine manifest (opset \"abc\" is not a whole number from 17 to "
        f"20){REBUILD}"]
