"""Weights folders: exact round trip, and one clear error for every kind of bad folder."""

import json

import pytest
import torch

from fgsl import weights
from fgsl.config import preset
from fgsl.model import build
from tests.conftest import disk_full_when_replacing, randomise_adapters


@pytest.fixture
def saved(tmp_path, tiny_model):
    randomise_adapters(tiny_model)
    weights.save(tiny_model, tmp_path / "run", trained=True, info={"data": "synthetic", "strs": 0.1})
    return tmp_path / "run", tiny_model


def test_round_trip_reproduces_outputs_exactly(saved):
    folder, model = saved
    loaded = weights.load(folder)
    clips = torch.randn(2, 3, 16, 32, 32)
    with torch.no_grad():
        a, b = model(clips), loaded(clips)
    for key in a:
        assert torch.equal(a[key], b[key])
    assert weights.info(folder) == {"data": "synthetic", "strs": 0.1}
    assert json.loads((folder / "config.json").read_text())["name"] == "tiny"


def test_flipped_bytes_are_detected(saved):
    folder, _ = saved
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # inside the tensor data, which safetensors itself does not check
    path.write_bytes(bytes(data))
    with pytest.raises(weights.WeightsError, match="corrupt"):
        weights.load(folder)


def test_truncated_and_garbage_files_are_clear_errors(saved):
    folder, _ = saved
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(weights.WeightsError, match="corrupt"):
        weights.load(folder)
    path.write_bytes(b"\x00" * 20)
    with pytest.raises(weights.WeightsError, match="corrupt"):
        weights.load(folder)


def test_config_that_does_not_match_the_weights_is_refused(saved):
    folder, _ = saved
    cfg = json.loads((folder / "config.json").read_text())
    cfg["neck_dim"] = 64
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(weights.WeightsError, match=r"does not match config.json \(.*wrong shapes"):
        weights.load(folder)
    cfg["neck_dim"] = "wide"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(weights.WeightsError):
        weights.load(folder)


@pytest.mark.parametrize("key, value, reason", [
    ("pretrain_image_size", 1, "Input and output sizes should be greater than 0"),
    ("init_values", 1e300, "value cannot be converted to type float without overflow"),
])
def test_a_config_json_whose_network_cannot_be_built_is_one_error(saved, key, value, reason):
    """Values within the config's checks that torch cannot build: a torch traceback before."""
    folder, _ = saved
    cfg = json.loads((folder / "config.json").read_text())
    cfg["backbone"][key] = value
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(weights.WeightsError, match=rf"config\.json: describes a network that cannot be built \({reason}"):
        weights.load(folder)


def test_untrained_weights_are_refused_unless_allowed(tmp_path):
    weights.save(build(preset("tiny", window_frames=16)), tmp_path, trained=False)
    with pytest.raises(weights.WeightsError, match="untrained"):
        weights.load(tmp_path)
    assert weights.load(tmp_path, allow_untrained=True).cfg.name == "tiny"


def test_missing_files_name_what_is_missing(tmp_path):
    with pytest.raises(weights.WeightsError, match="missing config.json and model.safetensors"):
        weights.load(tmp_path)
    with pytest.raises(weights.WeightsError, match="not a weights folder"):
        weights.load(tmp_path / "nope")


def test_weights_are_written_with_a_plain_files_mode_and_no_leftovers(saved):
    """safetensors (and mkstemp) create files 0600; a serving container must be able to read them."""
    import os

    mask = os.umask(0)
    os.umask(mask)
    folder, _ = saved
    assert (folder / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~mask
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_a_full_disk_names_the_file_being_written(tmp_path, monkeypatch):
    """A write or flush that fails (ENOSPC) names no file, and the hidden temporary file means
    nothing to the user: the error names the output, and the old file stays as it was."""
    import errno
    import os

    from fgsl.cli import error_line
    from fgsl.files import atomic_write

    target = tmp_path / "pred.csv"
    target.write_text("old")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as info:
        atomic_write(target, b"new")
    assert error_line(info.value) == f"{target}: No space left on device"
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["pred.csv"]


def test_config_json_is_replaced_whole(saved, monkeypatch):
    """config.json goes through atomic_write like the tensors: a failure while replacing it
    leaves the old config.json whole, never a cut-off one that fails to load or builds
    another network than the tensors beside it."""

    folder, model = saved
    before = (folder / "config.json").read_text()
    disk_full_when_replacing(monkeypatch, "config.json")
    with pytest.raises(OSError, match="No space left on device"):
        weights.save(model, folder, trained=True, score_threshold=0.55)
    assert (folder / "config.json").read_text() == before
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_one_digest_for_a_model_in_memory_and_its_saved_folder(saved):
    """model_digest is what save stores and load checks, so an engine's source weights and
    DDP ranks compare against a folder with the same value."""
    folder, model = saved
    digest = weights.model_digest(model)
    assert digest == weights.read_metadata(folder)["sha256"] == weights.model_digest(weights.load(folder))
    assert weights.model_digest(build(model.cfg, seed=1)) != digest
