"""ONNX export of FGSL (engines.export) and the build CLI, checked with real ONNX Runtime on
random and on real face clips.

Measured here (torch 2.13 CPU, onnxruntime 1.32, tiny preset): torch vs ONNX Runtime max abs
differences are 1e-7..3e-6 for every graph and both runnable FIFM forms; the bound asserted is
the issue's 1e-4.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from engines import export
from engines.build import leftovers, staging_stem
from engines.build import main as build_main
from engines.base import EngineError
from engines.export import ExportError
from fgsl import weights
from fgsl.config import preset
from fgsl.decode import decode
from fgsl.model import build
from tests.conftest import ROOT, randomise_adapters, real_face_clips, real_face_frame_count

TOL = 1e-4


@pytest.fixture(scope="module")
def model():
    """tiny preset, 32-frame windows (two chunks), adapters non-zero so every branch counts."""
    m = build(preset("tiny"), seed=0)
    randomise_adapters(m)
    return m


@pytest.fixture(scope="module")
def exported(model):
    """``exported(graph, form, opset=17)`` -> ONNX bytes, each exported once per module."""
    memo: dict[tuple, bytes] = {}

    def get(graph: str, form: str = "conv", opset: int = 17) -> bytes:
        if (graph, form, opset) not in memo:
            memo[graph, form, opset] = export.export_onnx_bytes(model, graph, form, opset)
        return memo[graph, form, opset]

    return get


@pytest.fixture(scope="module")
def face_clips(model):
    """Three 32-frame windows of a real face video, centre-cropped to 32 px and normalised."""
    last = real_face_frame_count(model.cfg) - model.cfg.window_frames
    return real_face_clips(model.cfg, [0, last // 2, last])


def torch_outputs(model, graph: str, inputs: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    args = [torch.from_numpy(a) for a in inputs]
    with torch.no_grad():
        if graph == "encode_chunk":
            return [t.numpy() for t in model.encode_chunk(*args)]
        out = model(*args) if graph == "model" else model.decode_window(*args)
    return [out["scores"].numpy(), out["offsets"].numpy()]


def run_ort(data: bytes, graph: str, inputs: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    names = export.IO[graph][0]
    return session.run(list(export.IO[graph][1]), dict(zip(names, inputs)))


@pytest.mark.parametrize("graph", export.GRAPHS)
def test_graph_io_names_dynamic_batch_fixed_axes_and_metadata(graph, model, tmp_path):
    path = export.export_onnx(model, tmp_path / f"{graph}.onnx", graph=graph, fifm="conv", opset=17)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    inputs, outputs = export.IO[graph]
    assert [i.name for i in proto.graph.input] == list(inputs)
    assert [o.name for o in proto.graph.output] == list(outputs)
    # declared shapes must be what torch really takes and gives (batch axis aside)
    args = tuple(t.numpy() for t in export.example_inputs(model.cfg, graph, 2))
    real = dict(zip(inputs + outputs, [a.shape for a in args] + [o.shape for o in torch_outputs(model, graph, args)]))
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        assert dims[0].dim_param and not dims[0].dim_value, f"{value.name}: batch axis must be dynamic"
        assert [d.dim_value for d in dims[1:]] == list(real[value.name][1:]), value.name
    meta = export.read_metadata(path)
    weights.save(model, tmp_path / "w", trained=False)
    assert meta["fgsl.graph"] == graph
    assert meta["fgsl.fifm"] == ("none" if graph == "encode_chunk" else "conv")
    assert meta["fgsl.opset"] == "17" and meta["fgsl.preset"] == "tiny" and meta["fgsl.precision"] == "fp32"
    assert json.loads(meta["fgsl.config"]) == json.loads(json.dumps(model.cfg.to_dict()))
    assert meta["fgsl.weights_sha256"] == weights.read_metadata(tmp_path / "w")["sha256"]
    assert "torch" in meta["fgsl.exporter"]


@pytest.mark.parametrize("form", ["conv", "dft"])
@pytest.mark.parametrize("graph", export.GRAPHS)
def test_torch_vs_onnxruntime_on_random_inputs_at_several_batch_sizes(graph, form, model, exported):
    data = exported(graph, form)
    if form == "dft" and graph != "encode_chunk":
        assert any(n.op_type == "DFT" for n in onnx.load_from_string(data).graph.node)
    for batch in (1, 3):
        inputs = tuple(t.numpy() for t in export.example_inputs(model.cfg, graph, batch, seed=batch))
        got = run_ort(data, graph, inputs)
        for out, ref in zip(got, torch_outputs(model, graph, inputs)):
            assert out.shape == ref.shape
            assert np.abs(out - ref).max() <= TOL


@pytest.mark.parametrize("form", ["conv", "dft"])
def test_torch_vs_onnxruntime_on_real_face_clips_gives_identical_intervals(form, model, exported, face_clips):
    got = dict(zip(("scores", "offsets"), run_ort(exported("model", form), "model", (face_clips,))))
    ref = dict(zip(("scores", "offsets"), torch_outputs(model, "model", (face_clips,))))
    for key in ref:
        assert np.abs(got[key] - ref[key]).max() <= TOL, key
    # threshold 0: every candidate that survives soft-NMS, so the comparison is not vacuous
    ours, theirs = decode(got, model.cfg, threshold=0.0), decode(ref, model.cfg, threshold=0.0)
    assert sum(len(x) for x in theirs) > 0
    assert_same_intervals(ours, theirs)


def assert_same_intervals(ours, theirs) -> None:
    """Same intervals in the same order: labels and integer frames equal, values within 1e-4."""
    assert [len(x) for x in ours] == [len(x) for x in theirs]
    for a, b in zip(ours, theirs):
        assert [(round(i.onset), round(i.offset), round(i.apex), i.label) for i in a] == \
               [(round(i.onset), round(i.offset), round(i.apex), i.label) for i in b]
        for field in ("onset", "offset", "apex", "score"):
            np.testing.assert_allclose([getattr(i, field) for i in a], [getattr(i, field) for i in b], atol=1e-4)


def test_plugin_form_is_one_custom_node_per_filter_carrying_the_learned_response(model, exported):
    from onnx.reference import ReferenceEvaluator
    from onnx.reference.op_run import OpRun

    from engines.plugins.fifm_fft import fifm_fft_filter_numpy

    proto = onnx.load_from_string(exported("decode_window", "plugin"))
    onnx.checker.check_model(proto)
    nodes = [n for n in proto.graph.node if n.domain == "fgsl"]
    assert [n.op_type for n in nodes] == ["FIFMFilter"] * (2 * model.cfg.fifm_blocks)
    assert not any(n.op_type == "DFT" for n in proto.graph.node)
    assert {o.domain: o.version for o in proto.opset_import}["fgsl"] == 1
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    length = model.cfg.tokens
    with torch.no_grad():
        block = model.fifm.blocks[0]
        want = [block.filter.response(length, True).numpy(), block.filter.response(length, False).numpy()]
    for node, response in zip(nodes, want):
        assert {a.name: a.s for a in node.attribute} == {"plugin_namespace": b"fgsl"}
        assert list(node.input[1:]) == [f"{node.name}.response_re", f"{node.name}.response_im"]
        np.testing.assert_array_equal(inits[f"{node.name}.response_re"], response)
        assert not inits[f"{node.name}.response_im"].any()

    class FIFMFilter(OpRun):  # the TensorRT plugin's own kernel, run by ONNX's reference evaluator
        op_domain = "fgsl"

        def _run(self, x, response_re, response_im, plugin_namespace=None):
            return (fifm_fft_filter_numpy(np.array(x), np.array(response_re), np.array(response_im)).astype(x.dtype),)

    inputs = tuple(t.numpy() for t in export.example_inputs(model.cfg, "decode_window", 2))
    got = ReferenceEvaluator(proto, new_ops=[FIFMFilter]).run(None, dict(zip(("final", "taps"), inputs)))
    for out, ref in zip(got, torch_outputs(model, "decode_window", inputs)):
        assert np.abs(out - ref).max() <= 1e-5


def test_opset_20_writes_dft_with_axis_input_and_still_agrees(model, exported):
    data = exported("decode_window", "dft", 20)
    dft = [n for n in onnx.load_from_string(data).graph.node if n.op_type == "DFT"]
    assert dft and all(len(n.input) == 3 for n in dft)  # signal, dft_length, axis
    inputs = tuple(t.numpy() for t in export.example_inputs(model.cfg, "decode_window", 2))
    for out, ref in zip(run_ort(data, "decode_window", inputs), torch_outputs(model, "decode_window", inputs)):
        assert np.abs(out - ref).max() <= TOL


def test_static_batch_export_fixes_the_batch_axis(model, tmp_path):
    path = export.export_onnx(model, tmp_path / "d.onnx", graph="decode_window", batch=2)
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_value == 2


def test_export_refuses_bad_requests_in_one_line(model, tmp_path):
    for kwargs, message in (({"fifm": "fft"}, "unknown FIFM form 'fft'"), ({"opset": 16}, "opset 16 is not supported"),
                            ({"graph": "encoder"}, "unknown graph 'encoder'"), ({"batch": 0}, "batch must be")):
        with pytest.raises(ExportError, match=message):
            export.export_onnx(model, tmp_path / "x.onnx", **kwargs)
    assert not (tmp_path / "x.onnx").exists()
    assert model.fifm.form == "freq"  # export put the model back as it was


def test_fp16_keeps_float32_io_and_stays_close(model, exported):
    pytest.importorskip("onnxconverter_common")
    half = export.to_fp16(exported("decode_window"))
    proto = onnx.load_from_string(half)
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in proto.graph.initializer)
    assert all(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in [*proto.graph.input, *proto.graph.output])
    assert export.read_metadata(half)["fgsl.precision"] == "fp16"
    inputs = tuple(t.numpy() for t in export.example_inputs(model.cfg, "decode_window", 2))
    for out, ref in zip(run_ort(half, "decode_window", inputs), torch_outputs(model, "decode_window", inputs)):
        assert out.dtype == np.float32 and np.abs(out - ref).max() <= 5e-2


def test_fp16_without_the_converter_is_refused_clearly(monkeypatch, exported):
    monkeypatch.setitem(sys.modules, "onnxconverter_common", None)  # import now raises ImportError
    with pytest.raises(ExportError, match=r"^fp16 ONNX needs onnxconverter_common: pip install 'fgsl-spotter\[onnx\]', "
                                          "or build fp32$"):
        export.to_fp16(exported("decode_window"))


def test_load_source_says_where_the_weights_came_from(tmp_path):
    """The one rule behind --weights / --preset + --allow-untrained, with what the manifest records."""
    with pytest.raises(weights.UntrainedWeights, match="no weights given: a random 'tiny' network"):
        export.load_source(None, preset_name="tiny")
    random = export.load_source(None, allow_untrained=True, preset_name="tiny")
    assert (random.model.cfg.name, random.trained, random.origin, random.crops) == (
        "tiny", False, "untrained preset 'tiny'", None)
    weights.save(random.model, tmp_path / "run", trained=True, info={"crops": "centre"})
    loaded = export.load_source(tmp_path / "run")
    assert (loaded.trained, loaded.origin, loaded.crops) == (True, str(tmp_path / "run"), "centre")
    assert export.load_source(loaded) is loaded
    assert export.load_source(random.model) == export.Source(random.model, None, None, None)  # in memory: unknown


# ---------------------------------------------------------------------- python -m engines.build
def test_build_cli_writes_a_verified_engine_folder_that_engines_open_reads(tmp_path, capsys, monkeypatch):
    import engines

    tiny = build(preset("tiny"), seed=3)
    randomise_adapters(tiny)
    weights.save(tiny, tmp_path / "run", trained=True, info={"crops": "aligned"})
    out = tmp_path / "engine"
    written = []
    real_write = export.write_manifest
    monkeypatch.setattr(export, "write_manifest", lambda folder, manifest: written.append(dict(manifest))
                        or real_write(folder, manifest))
    assert build_main(["--weights", str(tmp_path / "run"), "--backend", "onnxruntime", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "torch vs onnxruntime, max abs diff" in err
    assert f"from {tmp_path / 'run'} to {out}" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert [json.loads(json.dumps(m)) for m in written] == [manifest]  # once, with its provenance: not patched after
    assert manifest["format"] == "fgsl-engine" and manifest["backend"] == "onnxruntime"
    assert manifest["precision"] == "fp32" and manifest["fifm"] == "conv" and manifest["opset"] == 17
    assert manifest["trained"] is True and manifest["source"] == str(tmp_path / "run")
    assert manifest["crops"] == "aligned"  # what the weights were trained on
    assert manifest["weights_sha256"] == weights.read_metadata(tmp_path / "run")["sha256"]
    assert set(manifest["graphs"]) == set(export.GRAPHS)
    engine = engines.open(out)
    assert engine.describe()["backend"] == "onnxruntime"
    clips = np.random.default_rng(0).standard_normal((2, 3, 32, 32, 32), dtype=np.float32)
    ref = torch_outputs(tiny, "model", (clips,))
    for key, want in zip(("scores", "offsets"), ref):
        assert np.abs(engine.infer(clips)[key] - want).max() <= TOL


@pytest.mark.parametrize("args, message", [
    (["--precision", "int8"], "python -m calib.quantize"),
    (["--precision", "fp8"], "calibrated Q/DQ ONNX"),
    (["--fifm", "plugin"], "ONNX Runtime cannot run"),
    (["--opset", "16"], "opset 16 is not supported"),
])
def test_build_cli_refusals_are_one_error_line(args, message, tmp_path, capsys):
    code = build_main(["--allow-untrained", "--preset", "tiny", "--backend", "onnxruntime", "--out", str(tmp_path / "e"),
                       *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: ") and message in err[-1]


def test_build_cli_refuses_preset_with_weights_and_a_bad_triton_batch_before_exporting(tmp_path, capsys):
    weights.save(build(preset("tiny"), seed=0), tmp_path / "run", trained=True)
    out = tmp_path / "e"
    assert build_main(["--weights", str(tmp_path / "run"), "--preset", "accurate", "--backend", "onnxruntime",
                       "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --preset is for --allow-untrained without --weights: a weights folder's config.json sets its preset"]
    with pytest.raises(SystemExit) as exit_info:
        build_main(["--weights", str(tmp_path / "run"), "--backend", "onnxruntime", "--out", str(out),
                    "--triton-repo", str(tmp_path / "triton"), "--triton-max-batch", "0"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "error: argument --triton-max-batch: must be at least 1, got '0'")
    assert not out.exists() and not (tmp_path / "triton").exists()  # refused before the export



def test_build_cli_keeps_engines_out_of_weights_folders_and_unverified_builds(tmp_path, capsys, monkeypatch):
    """An engine written into its run folder would make every tool take the run for an engine
    folder; a build that fails its check must not be left looking like a good engine."""
    from engines import build as build_mod

    run = tmp_path / "run"
    weights.save(build(preset("tiny"), seed=0), run, trained=True, info={"crops": "centre"})
    assert build_main(["--weights", str(run), "--backend", "onnxruntime", "--out", str(run)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --out {run} holds a weights folder (model.safetensors, config.json): write the engine to a folder "
        "of its own"]
    assert not (run / "manifest.json").exists()
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("mine")
    assert build_main(["--weights", str(run), "--backend", "onnxruntime", "--out", str(notes)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --out {notes} holds other files and is not an engine folder: pass a new or empty folder, or an "
        "engine folder to rebuild"]
    assert [p.name for p in notes.iterdir()] == ["notes.txt"]

    def disagrees(model, folder, precision, batch=2):
        raise EngineError(f"{folder}: the exported engine disagrees with torch (max abs diff 1 > 0.0001); not using it")

    monkeypatch.setattr(build_mod, "verify", disagrees)  # an ONNX Runtime that computes wrongly
    out = tmp_path / "engine"
    assert build_main(["--weights", str(run), "--backend", "onnxruntime", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: {out}: the exported engine disagrees with torch (max abs diff 1 > 0.0001); not using it"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes", "run"]  # no engine, nothing half-built
    # What a build of an earlier release that failed or was killed left: graphs, no manifest.
    out.mkdir()
    (out / "model.onnx").write_bytes(b"an unverified graph")
    (out / ".encode_chunk.onnx.x1y2.tmp").write_bytes(b"left by a build killed mid-write")
    monkeypatch.undo()  # a working ONNX Runtime again: the failed build's folder is rebuilt in place
    assert build_main(["--weights", str(run), "--backend", "onnxruntime", "--out", str(out)]) == 0
    assert export.read_manifest(out)["trained"] is True
    assert export.read_manifest(out)["crops"] == "centre"  # what the live spotter's caveat reads
    # Without ONNX Runtime the build is refused before exporting, not left unverified: run where it
    # is not installed as far as Python can tell (sys.modules[name] = None blocks its import and
    # makes importlib.util.find_spec return None, as for a missing package; see test_cache.without).
    script = ("import sys\nsys.modules['onnxruntime'] = None\nfrom engines.build import main\n"
              f"raise SystemExit(main(['--weights', {str(run)!r}, '--backend', 'onnxruntime', '--out', "
              f"{str(tmp_path / 'e2')!r}]))")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr.strip().splitlines()) == (
        2, ["error: engines.build needs onnxruntime: pip install 'fgsl-spotter[onnx]'"])
    assert not (tmp_path / "e2").exists()

def test_build_cli_without_weights_or_tensorrt_says_why(tmp_path, capsys):
    assert build_main(["--backend", "onnxruntime", "--out", str(tmp_path / "e")]) == 2
    assert "--allow-untrained" in capsys.readouterr().err
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert build_main(["--allow-untrained", "--preset", "tiny", "--backend", "tensorrt", "--out",
                           str(tmp_path / "t")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == ["error: the tensorrt backend needs tensorrt: install the 'trt' extra (pip install "
                       "'fgsl-spotter[trt]') on a machine with an NVIDIA GPU and driver, or use --backend onnxruntime"]
        assert not (tmp_path / "t").exists()  # refused before exporting anything


# ---------------------------------------------------------------------- rebuilding an engine folder
@pytest.fixture
def good_engine(tmp_path):
    """A weights folder and a good engine folder built from it, holding a file of the user's
    and a TensorRT plan file (as a tensorrt build leaves next to the graphs)."""
    small = preset("tiny", window_frames=16)
    weights.save(build(small, seed=5), tmp_path / "run", trained=True)
    out = tmp_path / "engine"
    assert build_main(["--weights", str(tmp_path / "run"), "--backend", "onnxruntime", "--out", str(out),
                       "--no-verify"]) == 0
    (out / "notes.txt").write_text("mine")
    return tmp_path / "run", out


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("failure", ["verification fails", "interrupted while verifying", "interrupted mid-export"])
def test_a_rebuild_that_fails_or_is_interrupted_leaves_the_old_engine(failure, good_engine, tmp_path, capsys,
                                                                     monkeypatch):
    """Graphs used to be replaced one by one next to the old manifest, and a failed check deleted
    the manifest: the earlier good engine was gone either way (audit #7)."""
    import engines
    from engines import build as build_mod

    run, out = good_engine
    before = _snapshot(out)
    weights.save(build(preset("tiny", window_frames=16), seed=6), run, trained=True)  # retrained: a new engine
    if failure == "verification fails":
        def fails(model, folder, precision, batch=2):
            raise EngineError(f"{folder}: the exported engine disagrees with torch (max abs diff 1 > 0.0001); "
                              "not using it")
        monkeypatch.setattr(build_mod, "verify", fails)
    elif failure == "interrupted while verifying":
        monkeypatch.setattr(build_mod, "verify", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    else:
        real, calls = export.export_onnx_bytes, []

        def export_then_interrupt(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:  # the first graph is written by then
                raise KeyboardInterrupt
            return real(*args, **kwargs)
        monkeypatch.setattr(export, "export_onnx_bytes", export_then_interrupt)
    code = build_main(["--weights", str(run), "--backend", "onnxruntime", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    if failure == "verification fails":
        assert code == 2 and err[-1] == (f"error: {out}: the exported engine disagrees with torch (max abs diff 1 > "
                                         "0.0001); not using it")  # the user's folder, not the hidden one
    else:
        assert code == 130 and err[-1] == "interrupted"
    assert _snapshot(out) == before  # manifest, graphs and the user's file as they were
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engine", "run"]  # no half-built folder left beside it
    monkeypatch.undo()
    engines.open(out, backend="onnxruntime")  # still a working engine (every graph matches its manifest)


def test_a_rebuild_replaces_the_engine_and_keeps_the_users_files(good_engine, tmp_path, capsys):
    run, out = good_engine
    old = json.loads((out / "manifest.json").read_text())
    (out / "model.engine").write_bytes(b"a TensorRT plan of the old graphs")
    weights.save(build(preset("tiny", window_frames=16), seed=6), run, trained=True)
    assert build_main(["--weights", str(run), "--backend", "onnxruntime", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    new = export.read_manifest(out)
    assert new["weights_sha256"] != old["weights_sha256"]
    assert sorted(p.name for p in out.iterdir()) == ["decode_window.onnx", "encode_chunk.onnx", "manifest.json",
                                                     "model.onnx", "notes.txt"]  # the stale plan is gone
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engine", "run"]


def test_an_engine_folder_is_readable_as_a_plain_folder_and_names_its_weights_from_anywhere(good_engine, tmp_path,
                                                                                              monkeypatch):
    """The build folder came from mkdtemp (mode 0700): a server running as another user could
    not read the engine. And a relative --weights was recorded as typed, so engines.selftest
    --engine run from another folder could not find the weights."""
    from fgsl.files import DIR_MODE

    run, out = good_engine
    assert stat.S_IMODE(out.stat().st_mode) == DIR_MODE  # what mkdir gives (0777 less the umask)
    out.chmod(0o750)
    monkeypatch.chdir(tmp_path)
    assert build_main(["--weights", "run", "--backend", "onnxruntime", "--out", "engine", "--no-verify"]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o750  # a rebuild keeps the folder's permissions
    assert export.read_manifest(out)["source"] == str(run)  # absolute
    monkeypatch.chdir(out)
    assert export.load_source(export.read_manifest(out)["source"]).trained is True


def test_a_rebuild_names_what_killed_builds_left_beside_the_folder_and_deletes_nothing(good_engine, tmp_path,
                                                                                       capsys):
    """A SIGKILL leaves the hidden staging folder (or, mid-swap, the set-aside old engine with the
    user's files); the next build says so. Deleting is left to the user: a build still running
    elsewhere has a folder of the same shape, and the set-aside one holds the user's files."""
    run, out = good_engine
    killed = tmp_path / ".engine.build-k1_lled8"
    swapped = tmp_path / ".engine.build-abcd1234.old"
    for folder in (killed, swapped):
        folder.mkdir()
    (swapped / "notes.txt").write_text("the user's, not moved yet")
    decoys = [tmp_path / ".engine.build-short", tmp_path / ".engine2.build-abcdefgh", tmp_path / ".engine.build-ABCDEFGH",
              tmp_path / ".engine.build-abcdefgh.older"]
    for folder in decoys:
        folder.mkdir()
    (tmp_path / ".engine.build-afile123").write_text("a file, not a build folder")
    assert build_main(["--weights", str(run), "--backend", "onnxruntime", "--out", str(out), "--no-verify"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert err == [
        f"warning: {swapped}: the previous engine, set aside by a build killed while swapping in the new one (your "
        "own files in it were not moved yet); move out what you need, then delete it",
        f"warning: {killed}: an unfinished build of engine (killed, or still running in another process); "
        "delete it once no build of it is running"]
    assert (swapped / "notes.txt").read_text() == "the user's, not moved yet"
    assert all(path.exists() for path in [killed, *decoys])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".engine.build-") and p not in
                (killed, swapped, *decoys) and p.is_dir()]  # its own staging folder is gone, and not named


def test_an_engine_folder_named_as_long_as_a_name_may_be_is_built(good_engine, tmp_path):
    """Its hidden staging folder (``.NAME.build-XXXXXXXX``) was longer than a file name may be:
    "File name too long". It carries the name cut to fit, and killed builds of it are still named."""
    run, _ = good_engine
    out = tmp_path / ("e" * 255)
    killed = tmp_path / f".{staging_stem(out)}.build-k1_lled8"
    killed.mkdir()
    assert build_main(["--weights", str(run), "--backend", "onnxruntime", "--out", str(out), "--no-verify"]) == 0
    assert export.read_manifest(out)["source"] == str(run)
    assert leftovers(out, tmp_path / "none") == [
        f"{killed}: an unfinished build of {out.name} (killed, or still running in another process); delete it once "
        "no build of it is running"]


def test_a_triton_repo_the_build_cannot_write_is_refused_before_exporting(good_engine, tmp_path, capsys, monkeypatch):
    """``--triton-repo FILE`` failed only after the export had replaced the engine; ``--triton-repo
    RUN_DIR`` wrote model folders into the weights folder with exit 0 (audit #7)."""
    from engines import build as build_mod

    run, out = good_engine
    monkeypatch.setattr(build_mod, "export_engine_dir", lambda *a, **k: pytest.fail("exported first"))
    a_file = tmp_path / "zero.mp4"
    a_file.write_bytes(b"")
    other_engine = out  # an engine folder, given as the repository of a build into another folder
    for repo, line in [
        (a_file, f"--triton-repo {a_file} is a file: pass a folder for the Triton model repository"),
        (run, f"--triton-repo {run} is inside --weights {run}: write the Triton model repository to a folder of "
              "its own"),
        (run / "triton", f"--triton-repo {run / 'triton'} is inside --weights {run}:"),
        (out / "triton", f"--triton-repo {out / 'triton'} is inside --out {out}:"),
        (other_engine, f"--triton-repo {other_engine} holds a weights or engine folder (manifest.json, model.onnx, "
                       "encode_chunk.onnx, decode_window.onnx): write the Triton model repository to a folder of its "
                       "own"),
    ]:
        target = out if repo != other_engine else tmp_path / "engine2"
        assert build_main(["--weights", str(run), "--backend", "onnxruntime", "--out", str(target),
                           "--triton-repo", str(repo)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: " + line), err
    assert not (run / "triton").exists() and not (out / "triton").exists() and not (tmp_path / "engine2").exists()
