"""An engine cache that cannot be written costs the cache, not the run (real ONNX Runtime)."""

from __future__ import annotations

import numpy as np

import engines
from engines import cache
from fgsl import weights
from fgsl.config import preset
from fgsl.model import build


def test_weights_open_with_onnxruntime_when_the_engine_cache_cannot_be_written(tmp_path, monkeypatch, capsys):
    """``FGSL_ENGINE_CACHE=/proc/nocache`` ended fgsl.infer with "error: /proc/nocache: No such file or
    directory", naming neither the engine cache nor how to choose another."""
    monkeypatch.setattr(cache, "_said", set())
    model = build(preset("tiny", window_frames=16), seed=0)
    weights.save(model, tmp_path / "run", trained=True)
    (tmp_path / "blocker").write_text("a file where the cache folder would go")
    blocked = tmp_path / "blocker" / "engines"
    monkeypatch.setenv("FGSL_ENGINE_CACHE", str(blocked))
    engine = engines.open(tmp_path / "run", backend="onnxruntime")
    cfg = engine.cfg
    clips = np.zeros((1, 3, cfg.window_frames, cfg.image_size, cfg.image_size), np.float32)
    assert engine.infer(clips)["scores"].shape[0] == 1
    err = capsys.readouterr().err.strip().splitlines()
    said = [line for line in err if "cannot be written" in line]
    assert said == [f"engines: the engine cache {blocked} cannot be written ({blocked}: Not a directory); running "
                    "without it (set $FGSL_ENGINE_CACHE to a writable folder to keep compiled graphs)"]
    engine.decode_window(*(np.zeros(s, np.float32) for s in ((1, cfg.tokens, cfg.backbone.embed_dim),
                                                            (1, len(cfg.iga_blocks), cfg.tokens, cfg.backbone.embed_dim))))
    assert "cannot be written" not in capsys.readouterr().err  # said once per process


def test_an_entry_whose_header_key_is_not_an_object_is_foreign_and_rebuilt(tmp_path, capsys, monkeypatch):
    """A header with "key": [...] was an AttributeError in read_entry."""
    import json
    import struct

    from engines.cache import MAGIC, CacheError, EngineCache, canonical_hash, read_entry, sha256_bytes

    monkeypatch.setattr(cache, "_said", set())
    store = EngineCache.at(tmp_path)
    identity = {"backend": "onnxruntime", "graph": "model", "precision": "fp32"}
    key = {**identity, "shapes": [1, 2]}
    path = store.path_for(identity)
    header = json.dumps({"version": 1, "key": ["not", "an", "object"], "key_sha256": canonical_hash({"other": 1}),
                         "payload_bytes": 1, "payload_sha256": sha256_bytes(b"x"), "meta": {}}).encode()
    path.write_bytes(MAGIC + struct.pack("<I", len(header)) + header + b"x")
    try:
        read_entry(path, key)
    except CacheError as exc:
        assert exc.kind == "foreign" and str(exc).endswith("foreign engine file (the header holds no key)")
    else:
        raise AssertionError("an entry without a key object was read")
    assert store.get_or_build(identity, key, lambda: b"rebuilt")[0] == b"rebuilt"
    assert "foreign engine file (the header holds no key); rebuilding it" in capsys.readouterr().err
    assert read_entry(path, key)[0] == b"rebuilt"
