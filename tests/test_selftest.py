"""``python -m engines.selftest``: real runs of every variant this machine has (tiny preset)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from engines import build as build_cli
from engines import selftest
from engines.base import EngineError, stream_infer
from engines.onnx_backend import OnnxEngine
from engines.torch_backend import TorchEngine


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = selftest.main(["--preset", "tiny", "--batches", "1,2", "--repeats", "2", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_json_report_checks_and_times_every_variant_and_says_what_it_skipped(capsys):
    code, out, err = run(capsys, "--json")
    assert code == 0, out
    report = json.loads(out.strip().splitlines()[-1])
    assert {"device", "checks", "timings", "skipped"} <= set(report)
    names = [c["name"] for c in report["checks"]]
    for variant in ("onnxruntime fp32 cpu (fifm conv)", "onnxruntime fp32 cpu (fifm dft)"):
        assert f"{variant}: infer vs torch fp32" in names
        assert f"{variant}: encode_chunk+decode_window vs torch fp32" in names
    for check in report["checks"]:
        assert check["ok"] is True and 0 <= check["max_abs_diff"] <= check["tolerance"]
    fp32 = [c for c in report["checks"] if " fp32 cpu" in c["name"]]
    assert fp32 and all(c["max_abs_diff"] <= 1e-4 for c in fp32)
    # fp32 on a GPU runs cuDNN's TF32 convolutions: held to the TF32 bound (measured 1e-3 on an H100).
    on_gpu = [c for c in report["checks"] if " fp32 cuda" in c["name"]]
    assert all(c["tolerance"] == selftest.TOLERANCE["tf32"] for c in on_gpu)
    assert bool(on_gpu) == torch.cuda.is_available()
    timed = {(t["variant"], t["batch"]) for t in report["timings"]}
    assert {("torch fp32 cpu", 1), ("torch fp32 cpu", 2), ("onnxruntime fp32 cpu (fifm conv)", 2)} <= timed
    for t in report["timings"]:
        assert {"backend", "precision", "batch", "p50_ms", "p95_ms", "windows_per_s"} <= set(t)
        assert 0 < t["p50_ms"] <= t["p95_ms"] and t["windows_per_s"] > 0 and t["runs"] == 2
    skipped = {s["name"]: s["reason"] for s in report["skipped"]}
    if not torch.cuda.is_available():
        assert skipped["tensorrt fp32 cuda (fifm plugin)"] == skipped["tensorrt int8 cuda"] == NO_GPU_FOR_TENSORRT
        assert report["device"]["note"] == "no CUDA device: CPU part only" and "no CUDA device: CPU part only" in out
        assert skipped["torch fp32 cuda"] == "no CUDA device"
    assert "all checks passed" in out and "p50 ms/win" in out


def test_a_disagreeing_backend_fails_the_run(capsys, monkeypatch):
    real_variants, real_infer = selftest.variants, OnnxEngine.infer
    # torch and ONNX Runtime conv on the CPU only, and an ONNX Runtime that is off by 0.01
    monkeypatch.setattr(selftest, "variants", lambda *a: [v for v in real_variants(*a)
                                                          if v.device == "cpu" and "dft" not in v.name
                                                          and v.precision == "fp32"])

    def off(self, clips):
        out = real_infer(self, clips)
        return {k: v + 0.01 for k, v in out.items()}

    monkeypatch.setattr(OnnxEngine, "infer", off)
    code, out, _ = run(capsys, "--json", "--batches", "1", "--repeats", "1")
    report = json.loads(out.strip().splitlines()[-1])
    assert code == 1 and report["ok"] is False and "SOME CHECKS FAILED" in out
    failed = [c for c in report["checks"] if not c["ok"]]
    assert [c["name"] for c in failed] == ["onnxruntime fp32 cpu (fifm conv): infer vs torch fp32"]
    assert failed[0]["max_abs_diff"] == pytest.approx(0.01, abs=1e-4)


def test_bad_batches_are_one_error_line(capsys):
    code, _, err = run(capsys, "--batches", "1,x")
    assert code == 2 and err.strip() == "error: --batches must be comma-separated positive integers, got '1,x'"


def test_a_batch_too_big_to_hold_is_one_error_line_before_any_work(capsys):
    """``--batches 100000000`` once asked numpy for terabytes of random clips: a MemoryError
    traceback (or the OOM killer). Now the flag says its bound, before any network is built."""
    code, out, err = run(capsys, "--batches", f"1,{selftest.MAX_BATCH + 1}")
    assert (code, out, err) == (2, "", f"error: --batches: at most {selftest.MAX_BATCH} windows per call, "
                                      f"got {selftest.MAX_BATCH + 1}\n")
    code, _, err = run(capsys, "--batches", "100000000")
    assert code == 2 and err == "error: --batches: at most 256 windows per call, got 100000000\n"


@pytest.mark.parametrize("value, words", [("nan", "must be a finite number"), ("-1", "must be a positive number"),
                                          ("0", "must be a positive number")])
def test_max_seconds_must_be_a_positive_number(value, words, capsys, monkeypatch):
    monkeypatch.setattr(selftest, "selftest", lambda *a, **k: pytest.fail("ran with a bad --max-seconds"))
    with pytest.raises(SystemExit) as info:
        selftest.main(["--max-seconds", value])
    assert info.value.code == 2
    assert f"argument --max-seconds: {words}, got '{value}'" in capsys.readouterr().err


def test_stream_infer_is_the_whole_model_on_torch():
    model = selftest.selftest_model("tiny")
    clips = selftest.random_clips(model.cfg, 2)
    engine = TorchEngine(model)
    whole, streamed = engine.infer(clips), stream_infer(engine, clips)
    for key in whole:
        np.testing.assert_allclose(streamed[key], whole[key], atol=1e-5)
    assert any(a.up.weight.abs().sum() > 0 for a in model.iga.adapters)  # adapters take part


def test_build_verifies_against_the_selftests_fp32_bound(tmp_path, monkeypatch):
    """engines.build refuses an fp32 build by the self-test's bound itself, not a copy of it."""
    from engines.export import export_engine_dir
    from fgsl.config import preset
    from fgsl.model import build

    assert selftest.TOLERANCE["fp32"] == 1e-4  # the bound
    model = build(preset("tiny", window_frames=16), seed=0)
    export_engine_dir(model, tmp_path, trained=False)
    assert max(build_cli.verify(model, tmp_path, "fp32").values()) <= 1e-4
    monkeypatch.setitem(selftest.TOLERANCE, "fp32", -1.0)  # a bound nothing meets
    with pytest.raises(EngineError, match=r"disagrees with torch \(max abs diff .* > -1\); not using it"):
        build_cli.verify(model, tmp_path, "fp32")


NO_GPU_FOR_TENSORRT = "no CUDA device (TensorRT objects are never created without one)"


def test_tensorrt_variants_ask_for_the_gpu_before_importing_tensorrt(tmp_path, monkeypatch):
    """Without a GPU, tensorrt is not imported at all (its CUDA libraries would load for nothing);
    with one, a missing tensorrt is the shared install line."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # not installed, as far as Python can tell
    reasons = {v.name: v.skip for v in selftest.tensorrt_variants(None, tmp_path, cuda=False)}
    assert set(reasons.values()) == {NO_GPU_FOR_TENSORRT} and len(reasons) == 4
    reasons = {v.name: v.skip for v in selftest.tensorrt_variants(None, tmp_path, cuda=True)}
    assert set(reasons.values()) == {"the tensorrt backend needs tensorrt: install the 'trt' extra (pip install "
                                     "'fgsl-spotter[trt]') on a machine with an NVIDIA GPU and driver"}


# ---------------------------------------------------------------------- one machine-info collector
def test_every_report_names_the_machine_with_one_collector():
    """The self-test, realtime.bench and demo.bench (its dict is built in run_bench, which needs
    chromium) all start from engines.machine.machine_info: the same keys, the same values."""
    from engines.machine import machine_info
    from realtime import bench

    common = machine_info()
    assert {"cpu", "cpus", "usable_cpus", "platform", "python", "torch", "cuda", "gpu"} <= set(common)
    assert common["cpus"] >= common["usable_cpus"] >= 1 and common["cpu"]
    for report in (selftest.device_info(), bench.machine()):
        assert {k: report[k] for k in common} == common
    assert "cores" not in selftest.device_info()  # one name per thing: "cpus", as the benchmarks say


# ---------------------------------------------------------------------- python -m engines.selftest --engine DIR
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A trained-looking tiny weights folder and the engine folder engines.build makes of it."""
    from fgsl import weights
    from fgsl.config import preset
    from fgsl.model import build

    root = tmp_path_factory.mktemp("engine-check")
    model = build(preset("tiny", window_frames=16), seed=5)
    selftest.randomise_adapters(model)
    weights.save(model, root / "run", trained=True)
    assert build_cli.main(["--weights", str(root / "run"), "--backend", "onnxruntime", "--out", str(root / "engine"),
                           "--no-verify"]) == 0
    return root / "run", root / "engine"


def check(capsys, *args: str) -> tuple[int, str, str]:
    code = selftest.main(["--batches", "1", "--repeats", "1", "--json", "--engine", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_an_engine_folder_is_checked_against_torch_on_the_weights_it_was_built_from(built, capsys, monkeypatch):
    run_dir, folder = built
    code, out, err = check(capsys, str(folder))
    assert code == 0, out + err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["status"] == "passed" and report["ok"] is True and report["preset"] == "tiny"
    engine = report["engine"]
    assert (engine["folder"], engine["reference"], engine["backend"]) == (str(folder), str(run_dir), "onnxruntime")
    assert engine["verified"] == ["model.onnx", "encode_chunk.onnx", "decode_window.onnx"]
    checks = {c["name"]: c for c in report["checks"]}
    for path in ("infer", "encode_chunk+decode_window"):
        c = checks[f"onnxruntime fp32 cpu (fifm conv): {path} vs torch fp32"]
        assert c["ok"] and c["max_abs_diff"] <= selftest.TOLERANCE["fp32"] == c["tolerance"]
    assert {t["variant"] for t in report["timings"]} == {"torch fp32 cpu", "onnxruntime fp32 cpu (fifm conv)"}
    assert f"FGSL engine self-test of {folder} (onnxruntime fp32, fifm conv)" in out and "all checks passed" in out
    # The folder's own engine is what is compared: one that is off fails the run.
    real_infer = OnnxEngine.infer
    monkeypatch.setattr(OnnxEngine, "infer", lambda self, clips: {k: v + 0.01 for k, v in real_infer(self, clips).items()})
    code, out, _ = check(capsys, str(folder))
    report = json.loads(out.strip().splitlines()[-1])
    assert code == 1 and report["status"] == "failed" and "SOME CHECKS FAILED" in out
    assert [c["name"] for c in report["checks"] if not c["ok"]] == ["onnxruntime fp32 cpu (fifm conv): infer vs torch fp32"]


def test_an_untrained_build_is_checked_against_its_seed_0_network(tmp_path, capsys):
    """engines.build --allow-untrained --preset P records no weights folder: its network is
    preset P's seed-0 initialisation, which the weights digest proves."""
    assert build_cli.main(["--allow-untrained", "--preset", "tiny", "--backend", "onnxruntime", "--out",
                           str(tmp_path / "e"), "--no-verify"]) == 0
    code, out, err = check(capsys, str(tmp_path / "e"))
    report = json.loads(out.strip().splitlines()[-1])
    assert code == 0, out + err
    assert report["engine"]["reference"] == "untrained 'tiny' network (seed 0)"


def _copy(built, tmp_path):
    import shutil

    run_dir, folder = built
    shutil.copytree(run_dir, tmp_path / "run")
    shutil.copytree(folder, tmp_path / "engine")
    manifest = json.loads((tmp_path / "engine" / "manifest.json").read_text())
    manifest["source"] = str(tmp_path / "run")  # the copy's own weights folder
    (tmp_path / "engine" / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path / "run", tmp_path / "engine", manifest


def _other_weights(folder):
    from fgsl import weights
    from fgsl.config import preset
    from fgsl.model import build

    weights.save(build(preset("tiny", window_frames=16), seed=6), folder, trained=True)


#: (what is done to a copy of the built folder, the error line it gives)
STALE = [
    ("flip a byte", r"engine/model\.onnx: corrupt \(SHA-256 differs from the manifest\); rebuild it"),
    ("drop a graph", r"engine/decode_window\.onnx: missing \(graph 'decode_window' of this engine folder\); rebuild it"),
    ("edit the weights digest", r"engine/model\.onnx: exported from other weights than manifest\.json records "
                                r"\(weights_sha256 \w{12}\.\.\. vs 000000000000\.\.\. in its manifest\); rebuild it"),
    ("drop the config", r"engine/manifest\.json: incomplete engine manifest \(no config\); rebuild it"),
    ("retrain the weights", r"run: these weights changed since .*engine was built from them \(weights_sha256 \w{12}"
                            r"\.\.\. vs \w{12}\.\.\. in its manifest\); rebuild it, or pass --weights with the ones it "
                            r"was built from$"),
    ("give other weights", r"other: not the weights .*engine was built from \(weights_sha256 "),
    ("lose the weights", r"engine: the weights it was built from are not here to compare with \(source: .*run\); "
                         r"pass --weights RUN_DIR"),
    ("no folder", r"nowhere: no such engine folder"),
]


@pytest.mark.parametrize("tamper, message", STALE, ids=[tamper for tamper, _ in STALE])
def test_a_stale_or_tampered_engine_folder_is_one_error_line(tamper, message, built, tmp_path, capsys, monkeypatch):
    import re
    import shutil

    import engines

    run_dir, folder, manifest = _copy(built, tmp_path)
    args = [str(folder)]
    if tamper == "flip a byte":
        data = bytearray((folder / "model.onnx").read_bytes())
        data[len(data) // 2] ^= 1
        (folder / "model.onnx").write_bytes(bytes(data))
    elif tamper == "drop a graph":
        (folder / "decode_window.onnx").unlink()
    elif tamper in ("edit the weights digest", "drop the config"):
        if tamper == "drop the config":
            del manifest["config"]
        else:
            manifest["weights_sha256"] = "0" * 64
        (folder / "manifest.json").write_text(json.dumps(manifest))
    elif tamper == "retrain the weights":
        _other_weights(run_dir)
    elif tamper == "give other weights":
        _other_weights(tmp_path / "other")
        args += ["--weights", str(tmp_path / "other")]
    elif tamper == "lose the weights":
        shutil.rmtree(run_dir)
    else:
        args = [str(tmp_path / "nowhere")]
    monkeypatch.setattr(engines, "open", lambda *a, **k: pytest.fail("a stale folder's engine was run"))
    code, out, err = check(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1, err
    assert lines[0].startswith("error: ") and re.search(message, lines[0]), lines[0]


def test_a_folder_nothing_here_can_run_is_skipped_not_passed(built, tmp_path, capsys, monkeypatch):
    """A TensorRT build (plugin-form graphs and their plans) on a machine without a GPU: the
    files and weights are verified, nothing runs, and the exit code is neither 0 nor 1."""
    from engines.cache import sha256_file
    from engines.export import export_engine_dir, read_manifest, write_manifest

    run_dir, _ = built
    folder = tmp_path / "trt"
    export_engine_dir(run_dir, folder, "plugin", backend="tensorrt")
    manifest = read_manifest(folder)
    plans = {}
    for graph in manifest["graphs"]:
        plan = folder / f"{graph}.engine"
        plan.write_bytes(f"a serialized {graph} plan".encode())
        plans[graph] = {"file": plan.name, "sha256": sha256_file(plan), "bytes": plan.stat().st_size}
    write_manifest(folder, {**manifest, "plans": plans})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # this machine, GPU or not
    code, out, err = check(capsys, str(folder))
    report = json.loads(out.strip().splitlines()[-1])
    assert code == selftest.EXIT_CODES["skipped"] == 3, out + err
    assert report["status"] == "skipped" and report["ok"] is False and report["checks"] == report["timings"] == []
    assert {s["name"]: s["reason"] for s in report["skipped"]} == {
        "onnxruntime fp32 cpu (fifm plugin)": "fifm plugin is a TensorRT custom op that ONNX Runtime cannot run",
        "onnxruntime fp32 cuda (fifm plugin)": "fifm plugin is a TensorRT custom op that ONNX Runtime cannot run",
        "tensorrt fp32 cuda (fifm plugin)": NO_GPU_FOR_TENSORRT}
    assert report["engine"]["verified"][-3:] == ["model.engine", "encode_chunk.engine", "decode_window.engine"]
    assert out.strip().splitlines()[-2] == (f"SKIPPED: no backend on this machine runs {folder} (its files and weights "
                                            "are verified; see skipped)")
    assert "checks (" not in out and "timings (" not in out  # no empty tables before the skipped list
    # A plan is part of the folder too: an altered one is refused before anything is decided.
    (folder / "model.engine").write_bytes(b"A serialized model plan")  # same size, one byte changed
    code, _, err = check(capsys, str(folder))
    assert code == 2 and err.strip() == (f"error: {folder / 'model.engine'}: corrupt (SHA-256 differs from the manifest); "
                                         "rebuild it with `python -m engines.build`")


@pytest.mark.parametrize("args, line", [
    (["--engine", "x", "--preset", "tiny"], "--preset picks a random network; an --engine folder's manifest names its "
                                            "own preset"),
    (["--weights", "x"], "--weights is the torch reference of an --engine folder; give --engine DIR too"),
])
def test_engine_flags_that_do_not_go_together_are_one_line(args, line, capsys, monkeypatch):
    monkeypatch.setattr(selftest, "selftest", lambda *a, **k: pytest.fail("ran with bad flags"))
    assert selftest.main(args) == 2
    assert capsys.readouterr().err.strip() == f"error: {line}"


#: (how a copy of the built folder's manifest.json is damaged, the EngineError line it gives).
#: Each was a KeyError/AttributeError traceback, or ONNX Runtime's InvalidArgument at the first
#: window, from every command that opens the folder (audit #15, #16).
DAMAGED_MANIFESTS = [
    ("no config", lambda m: m.pop("config"), r"incomplete engine manifest \(no config\)"),
    ("graphs a string", lambda m: m.update(graphs="model.onnx"),
     r"damaged engine manifest \(graphs must map each graph to an entry with a file name\)"),
    ("graph entry a string", lambda m: m["graphs"].update(model="model.onnx"), r"damaged engine manifest \(graphs must"),
    ("plans a list", lambda m: m.update(plans=["model.engine"]), r"damaged engine manifest \(plans must"),
    ("config a string", lambda m: m.update(config="tiny"), r"its config is unreadable \(config must be a JSON object\)"),
    ("window 16 -> 32", lambda m: m["config"].update(window_frames=32),
     r"config \(preset 'tiny', window_frames 32, image_size 32, 4 classes\) does not match graph model\.onnx \(inputs clips "
     r"\[B, 3, 16, 32, 32\], the config gives clips \[B, 3, 32, 32, 32\]\)"),
    ("image 32 -> 64", lambda m: m["config"].update(image_size=64),
     r"config \(preset 'tiny', window_frames 16, image_size 64, 4 classes\) does not match graph model\.onnx"),
    ("source a number", lambda m: m.update(source=5), r"damaged engine manifest \(source must be text, found 5\)"),
    ("digest a number", lambda m: m.update(weights_sha256=5),
     r"damaged engine manifest \(weights_sha256 must be text, found 5\)"),
]


@pytest.mark.parametrize("damage, message", [(d, m) for d, _, m in DAMAGED_MANIFESTS],
                         ids=[d for d, _, _ in DAMAGED_MANIFESTS])
def test_a_damaged_or_contradictory_manifest_is_one_engine_error(damage, message, built, tmp_path):
    import re

    import engines
    from engines.export import read_manifest

    _, folder, manifest = _copy(built, tmp_path)
    dict((d, f) for d, f, _ in DAMAGED_MANIFESTS)[damage](manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    for verify in (False, True):  # the cheap read (fgsl.tune, calib, the live spotter) checks it too
        with pytest.raises(EngineError) as info:
            read_manifest(folder, verify=verify)
        line = str(info.value)
        assert line.startswith(f"{folder / 'manifest.json'}: ") and re.search(message, line), line
        assert line.endswith("; rebuild it with `python -m engines.build`") and "\n" not in line
    with pytest.raises(EngineError, match=message):
        engines.open(folder, backend="onnxruntime")


def test_a_manifest_naming_another_graphs_file_is_one_engine_error(built, tmp_path):
    """The model entry pointed at encode_chunk.onnx, with that file's size and hash: ONNX
    Runtime's "Required inputs (['chunks']) are missing" traceback at the first window. Each
    file's own ``fgsl.graph`` metadata is checked when its session opens."""
    import engines

    _, folder, manifest = _copy(built, tmp_path)
    model = manifest["graphs"]["model"]
    manifest["graphs"]["model"] = {**manifest["graphs"]["encode_chunk"], "inputs": model["inputs"],
                                   "outputs": model["outputs"]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    engine = engines.open(folder, backend="onnxruntime")
    with pytest.raises(EngineError, match=r"^.*: the model graph: its own metadata says fgsl.graph 'encode_chunk', its "
                                          r"engine says 'model': a damaged engine folder; rebuild it"):
        cfg = engine.cfg
        engine.infer(np.zeros((1, 3, cfg.window_frames, cfg.image_size, cfg.image_size), np.float32))


def test_a_manifest_config_missing_a_field_opens_with_the_default_and_says_so(built, tmp_path, recwarn):
    """A hand-edited manifest whose config lacks ``score_threshold`` decodes with the default:
    said in one warning naming the manifest and the value used (it was silent)."""
    from fgsl.config import FGSLConfig

    from engines.export import read_manifest

    _, folder, manifest = _copy(built, tmp_path)
    del manifest["config"]["score_threshold"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    read_manifest(folder, verify=False)
    messages = [str(w.message) for w in recwarn]
    assert messages == [f"{folder / 'manifest.json'} (config) gives no score_threshold: the defaults are used "
                        f"(score_threshold={FGSLConfig().score_threshold!r}); every config this project writes has "
                        "them all"], messages


def test_a_threshold_tuned_after_the_build_is_named_not_failed(built, tmp_path, capsys):
    """The weights digest covers tensors only: `fgsl.tune --write` on the weights folder after
    engines.build leaves the engine deciding at its own threshold, which the check must say."""
    from fgsl.tune import write_threshold

    run_dir, folder, manifest = _copy(built, tmp_path)
    code, out, err = check(capsys, str(folder))
    assert code == 0, out + err
    assert json.loads(out.strip().splitlines()[-1])["engine"]["notes"] == [] and "note:" not in out
    write_threshold(run_dir, 0.61)
    code, out, err = check(capsys, str(folder))
    assert code == 0, out + err  # a note, not a failure: both thresholds are someone's choice
    notes = json.loads(out.strip().splitlines()[-1])["engine"]["notes"]
    assert len(notes) == 1 and "at score threshold" in notes[0] and f"{run_dir} at 0.61" in notes[0]
    assert f"note: {notes[0]}" in out
    assert f"decides at score threshold {manifest['config']['score_threshold']:g}, " in notes[0]
