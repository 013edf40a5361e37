"""Engine cache (engines.cache) and engine folders: damaged, foreign and stale engines are
detected, rebuilt or refused; writes are atomic; ``auto`` falls back with its reason once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import engines
from engines import EngineError, cache
from engines.cache import CacheError, EngineCache, read_entry, write_entry
from engines.export import export_engine_dir
from engines.onnx_backend import OnnxEngine
from engines.torch_backend import TorchEngine
from fgsl.config import preset
from fgsl.model import build
from tests.conftest import ROOT, randomise_adapters

KEY = {"backend": "onnxruntime", "graph": "model", "shapes": {"clips": ["B", 3, 16, 32, 32]}, "backend_version": "1"}


@pytest.fixture(autouse=True)
def fresh_messages(monkeypatch):
    """Each test starts with nothing said yet (say_once is per process)."""
    monkeypatch.setattr(cache, "_said", set())


def kind_of(path, key=KEY) -> str:
    with pytest.raises(CacheError) as info:
        read_entry(path, key)
    return info.value.kind


# ---------------------------------------------------------------------- the file format
def test_entries_round_trip_and_every_defect_has_its_name(tmp_path):
    path = write_entry(tmp_path / "e.fgsl-engine", KEY, b"payload" * 100, {"note": "x"})
    payload, header = read_entry(path, KEY)
    assert payload == b"payload" * 100 and header["meta"] == {"note": "x"} and header["key"] == KEY
    data = path.read_bytes()

    path.write_bytes(data[:-10])
    assert kind_of(path) == "truncated"
    path.write_bytes(data[:20])
    assert kind_of(path) == "truncated"
    path.write_bytes(b"")
    assert kind_of(path) == "truncated"

    path.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    assert kind_of(path) == "corrupt"

    for foreign in (b"\x08\x07\x12\x0bonnx-ish bytes", b"PK\x03\x04 a zip file", os.urandom(4096)):
        path.write_bytes(foreign)
        assert kind_of(path) == "foreign"

    path.write_bytes(data)
    stale_key = {**KEY, "shapes": {"clips": ["B", 3, 32, 32, 32]}}
    with pytest.raises(CacheError, match=r"stale engine file \(built for another shapes\)"):
        read_entry(path, stale_key)


def test_get_or_build_rebuilds_each_bad_entry_once_and_says_why(tmp_path, capsys):
    store = EngineCache.at(tmp_path)
    identity = {"backend": "onnxruntime", "graph": "model", "precision": "fp32"}
    builds = []

    def build() -> bytes:
        builds.append(1)
        return b"engine bytes %d" % len(builds)

    payload, path = store.get_or_build(identity, KEY, build)
    assert payload == b"engine bytes 1" and path.parent == tmp_path and path.name.startswith("onnxruntime-model-fp32-")
    assert store.get_or_build(identity, KEY, build)[0] == b"engine bytes 1" and len(builds) == 1  # a hit
    path.write_bytes(path.read_bytes()[:-3])
    assert store.get_or_build(identity, KEY, build)[0] == b"engine bytes 2"
    assert store.get_or_build(identity, {**KEY, "backend_version": "2"}, build)[0] == b"engine bytes 3"
    err = capsys.readouterr().err
    assert err.count("truncated engine file") == 1 and err.count("stale engine file (built for another backend_version)") == 1
    assert "rebuilding it" in err and read_entry(path, {**KEY, "backend_version": "2"})[0] == b"engine bytes 3"


# ---------------------------------------------------------------------- atomic writes
def test_a_write_that_fails_midway_leaves_the_old_entry_and_no_temporary_file(tmp_path, monkeypatch):
    path = write_entry(tmp_path / "e.fgsl-engine", KEY, b"old complete entry")
    real_fsync = os.fsync

    def crash(fd):  # the payload is partly on disk when the "power goes"
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="simulated crash"):
        write_entry(path, KEY, b"new entry " * 10_000)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert read_entry(path, KEY)[0] == b"old complete entry"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.fgsl-engine"]


def test_a_process_killed_while_writing_leaves_no_partial_entry(tmp_path):
    """A real crash: SIGKILL after half the payload is written, before the rename."""
    script = textwrap.dedent(f"""
        import os, signal
        from engines import cache
        real_replace = os.replace
        def die(src, dst):
            os.kill(os.getpid(), signal.SIGKILL)
        os.replace = die
        cache.write_entry({str(tmp_path / "e.fgsl-engine")!r}, {KEY!r}, b"x" * 5_000_000)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            capture_output=True, timeout=120)
    assert result.returncode == -9, result.stderr.decode()[-500:]
    assert not (tmp_path / "e.fgsl-engine").exists()
    leftovers = list(tmp_path.iterdir())
    assert all(p.name.startswith(".e.fgsl-engine.") and p.name.endswith(".tmp") for p in leftovers)
    # the next reader builds a fresh entry; the leftover temp file is never read as an engine
    payload, _ = EngineCache.at(tmp_path).get_or_build({"backend": "b", "graph": "g", "precision": "p"}, KEY,
                                                       lambda: b"fresh")
    assert payload == b"fresh"


# ---------------------------------------------------------------------- engines through the cache
@pytest.fixture(scope="module")
def model16():
    m = build(preset("tiny", window_frames=16), seed=4)
    randomise_adapters(m)
    return m


def clips(cfg, batch=2, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, 3, cfg.window_frames, cfg.image_size, cfg.image_size),
                                                       dtype=np.float32)


def agree(engine, model) -> float:
    x = clips(model.cfg)
    out, ref = engine.infer(x), TorchEngine(model).infer(x)
    return max(float(np.abs(out[k] - ref[k]).max()) for k in ref)


def test_a_corrupted_cached_engine_is_detected_and_rebuilt(tmp_path, model16, capsys):
    store = EngineCache.at(tmp_path)
    assert agree(OnnxEngine.from_model(model16, cache=store), model16) <= 1e-4
    (entry,) = tmp_path.glob("onnxruntime-model-fp32-*.fgsl-engine")
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0x5A  # one flipped byte inside the ONNX payload
    entry.write_bytes(bytes(data))
    assert agree(OnnxEngine.from_model(model16, cache=store), model16) <= 1e-4
    assert "corrupt engine file (payload checksum does not match); rebuilding it" in capsys.readouterr().err
    read_entry(entry)  # whole again


def test_a_cache_built_for_another_shape_is_detected_and_rebuilt(tmp_path, model16, capsys):
    store = EngineCache.at(tmp_path)
    OnnxEngine.from_model(model16, cache=store).infer(clips(model16.cfg))
    # the same tensors with 32-frame windows: same weights digest, same cache slot, other shapes
    model32 = build(preset("tiny", window_frames=32), seed=None)
    model32.load_state_dict(model16.state_dict())
    engine = OnnxEngine.from_model(model32, cache=store)
    assert agree(engine, model32) <= 1e-4
    err = capsys.readouterr().err
    assert "stale engine file (built for another config_sha256, shapes); rebuilding it" in err
    assert len(list(tmp_path.glob("onnxruntime-model-*"))) == 1  # replaced, not piled up


def test_a_tuned_threshold_reuses_the_cached_graphs(tmp_path, model16, capsys):
    """fgsl.tune --write changes only the config's decoding settings, which no graph holds: the
    whole config was hashed into the key, so every tuned run re-exported its graphs, and
    switching between a run and its tuned copy rebuilt them each time."""
    store = EngineCache.at(tmp_path)
    OnnxEngine.from_model(model16, cache=store).infer(clips(model16.cfg))
    tuned = build(model16.cfg.replace(score_threshold=0.61, nms_sigma=0.3, max_intervals=7), seed=None)
    tuned.load_state_dict(model16.state_dict())
    capsys.readouterr()
    assert agree(OnnxEngine.from_model(tuned, cache=store), tuned) <= 1e-4
    assert "rebuilding" not in capsys.readouterr().err
    assert len(list(tmp_path.glob("onnxruntime-model-*"))) == 1


def test_another_onnxruntime_version_makes_entries_stale(tmp_path, model16, monkeypatch, capsys):
    store = EngineCache.at(tmp_path)
    OnnxEngine.from_model(model16, cache=store).infer(clips(model16.cfg))
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "__version__", "0.0.1-test")
    OnnxEngine.from_model(model16, cache=store).infer(clips(model16.cfg))
    assert "built for another backend_version" in capsys.readouterr().err


def test_streaming_graphs_have_entries_of_their_own(tmp_path, model16):
    engine = OnnxEngine.from_model(model16, cache=EngineCache.at(tmp_path))
    x = clips(model16.cfg)
    engine.decode_window(**engine.encode_chunk(x))  # one chunk per window in this config
    names = sorted(p.name.split("-fp32-")[0] for p in tmp_path.glob("*.fgsl-engine"))
    assert names == ["onnxruntime-decode_window", "onnxruntime-encode_chunk"]


def test_device_fingerprint_separates_cpu_from_cuda():
    cpu, gpu = cache.device_fingerprint("cpu"), cache.device_fingerprint("cuda:1")
    assert cpu["type"] == "cpu" and cpu["arch"] and gpu["type"] == "cuda" and gpu["index"] == 1
    assert cache.canonical_hash(cpu) != cache.canonical_hash(gpu)


# ---------------------------------------------------------------------- fallback order
def without(modules: tuple[str, ...], body: str) -> subprocess.CompletedProcess[str]:
    """Run ``body`` in a fresh Python in which ``modules`` are not installed, as far as it can tell.

    ``sys.modules[name] = None`` is Python's own import block: ``import name`` raises
    ModuleNotFoundError and ``importlib.util.find_spec(name)`` returns None, the two ways the
    engines look for a backend. (test_demo_api's ``WITHOUT_MODULE`` raises from a meta-path
    finder instead, which ``find_spec`` would pass on as an error, unlike a missing package.)
    """
    script = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules) + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)


#: ``without`` body: the tiny preset's 16-frame model (as ``model16``), untrained (the order is the point).
MODEL16 = """
    import engines
    from fgsl.config import preset
    from fgsl.model import build
    model = build(preset("tiny", window_frames=16), seed=4)
"""


def test_auto_falls_back_to_torch_and_says_why_once(tmp_path):
    out = without(("onnxruntime",), MODEL16 + f"""
    for _ in range(2):
        print(engines.open_model(model, cache_dir={str(tmp_path)!r}).describe()["backend"])
    try:
        engines.open_model(model, backend="onnxruntime", cache_dir={str(tmp_path)!r})  # explicit: no fallback
    except engines.BackendUnavailable as exc:
        print(f"explicit: {{exc}}")
    """)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == [
        "torch", "torch", "explicit: the onnxruntime backend needs onnxruntime: pip install 'fgsl-spotter[onnx]'"]
    reason = ("engines: onnxruntime backend not used (the onnxruntime backend needs onnxruntime: pip install "
              "'fgsl-spotter[onnx]')")
    assert out.stderr.count(reason) == 1 and out.stderr.count(reason + "; falling back to torch") == 1


def test_auto_order_puts_tensorrt_first_on_cuda_only():
    assert engines.candidates("auto", "cpu") == ("onnxruntime", "torch")
    assert engines.candidates("auto", "cuda:0") == ("tensorrt", "onnxruntime", "torch")
    assert engines.candidates("torch", "cuda") == ("torch",)
    with pytest.raises(EngineError, match="unknown backend 'tvm'"):
        engines.candidates("tvm", "cpu")


def test_tensorrt_is_passed_over_with_its_reason_when_missing(tmp_path):
    out = without(("onnxruntime", "tensorrt"), MODEL16 + f"""
    # This machine may have no GPU: "cuda" is taken as is for the order, and torch runs on the CPU.
    real = engines._open_model_with
    engines._open_model_with = lambda name, m, device, *rest: real(name, m, "cpu" if name == "torch" else device, *rest)
    engines.resolve_device = lambda device: device
    print(engines.open_model(model, device="cuda", cache_dir={str(tmp_path)!r}).describe()["backend"])
    """)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == ["torch"]
    assert "tensorrt backend not used (the tensorrt backend needs tensorrt: install the 'trt' extra" in out.stderr
    assert "falling back to onnxruntime" in out.stderr
    assert ("onnxruntime backend not used (the onnxruntime backend needs onnxruntime: pip install "
            "'fgsl-spotter[onnx]'); falling back to torch") in out.stderr


# ---------------------------------------------------------------------- engine folders are refused
@pytest.fixture(scope="module")
def engine_folder(model16, tmp_path_factory):
    folder = tmp_path_factory.mktemp("engine")
    export_engine_dir(model16, folder, trained=True, graphs=("decode_window",))
    return folder


@pytest.mark.parametrize("damage, message", [
    (lambda d: d[: len(d) // 2], r"decode_window.onnx: truncated \(\d+ bytes, the manifest says \d+\)"),
    (lambda d: d[:100] + bytes([d[100] ^ 1]) + d[101:], r"decode_window.onnx: corrupt \(SHA-256 differs"),
    (None, r"decode_window.onnx: missing"),
])
def test_damaged_engine_folders_are_refused_with_how_to_rebuild(engine_folder, tmp_path, damage, message):
    import shutil

    folder = shutil.copytree(engine_folder, tmp_path / "copy")
    target = folder / "decode_window.onnx"
    if damage is None:
        target.unlink()
    else:
        target.write_bytes(damage(target.read_bytes()))
    with pytest.raises(EngineError, match=message + ".*rebuild it with `python -m engines.build`"):
        engines.open(folder)


def test_a_foreign_manifest_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text('{"format": "something-else"}')
    with pytest.raises(EngineError, match="not an FGSL engine manifest"):
        engines.open(tmp_path)
    (tmp_path / "manifest.json").write_bytes(b"\x00\x01 not json")
    with pytest.raises(EngineError, match="unreadable JSON"):
        engines.open(tmp_path)


def test_cache_command_lists_and_prunes_by_last_use(tmp_path, capsys):
    """Entries are never removed on their own; ``python -m engines.cache`` shows and prunes them,
    and a cache hit counts as use (so ``--older-than`` keeps what is still opened)."""
    import time

    store = EngineCache.at(tmp_path)
    ids = [{"backend": "onnxruntime", "graph": g, "precision": "fp32"} for g in ("model", "decode_window")]
    for identity in ids:
        store.get_or_build(identity, KEY, lambda: b"x" * 1000)
    old, used = (store.path_for(i) for i in ids)
    (tmp_path / ".x.fgsl-engine.abc.tmp").write_bytes(b"left by a killed writer")
    (tmp_path / "notes.txt").write_text("not the cache's")
    month_ago = time.time() - 30 * 86400
    for path in (old, used, tmp_path / ".x.fgsl-engine.abc.tmp"):
        os.utime(path, (month_ago, month_ago))
    store.get_or_build(ids[1], KEY, lambda: pytest.fail("a cache hit rebuilt"))  # used now
    assert cache.main(["--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{tmp_path}: 3 file(s)") and old.name in out and "used  30.0 days ago" in out
    assert cache.main(["--dir", str(tmp_path), "--older-than", "7"]) == 0
    assert "deleted 2 file(s)" in capsys.readouterr().out  # the old entry and the leftover temp file
    assert not old.exists() and used.exists() and (tmp_path / "notes.txt").exists()
    assert cache.main(["--dir", str(tmp_path), "--clear"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    assert cache.main(["--dir", str(tmp_path / "notes.txt")]) == 2
    assert capsys.readouterr().err.strip() == f"error: --dir {tmp_path / 'notes.txt'}: not a folder"


def test_an_entry_that_is_a_link_is_judged_and_pruned_as_the_link(tmp_path):
    """A link put in the cache by hand: pruning deletes the link, counts the link's bytes (not
    its target's), and marking it used leaves the target's time alone."""
    import time

    from fgsl import cache_files

    target = tmp_path / "big.bin"
    target.write_bytes(b"x" * 100_000)
    old = time.time() - 30 * 86400
    os.utime(target, (old, old))
    root = tmp_path / "cache"
    root.mkdir()
    link = root / "a.fgsl-engine"
    link.symlink_to(target)
    cache_files.touch(link)
    assert target.stat().st_mtime == pytest.approx(old)
    os.utime(link, (old, old), follow_symlinks=False)
    assert cache_files.prune(root, ".fgsl-engine", older_than_days=7) == len(str(target))
    assert not link.is_symlink() and target.stat().st_size == 100_000
