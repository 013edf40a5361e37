"""Malformed calibration files are one ``CalibError`` line (they were TypeError tracebacks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import calib.quantize as quantize_mod
from calib import CalibError
from calib.collect import CalibrationSet, load, save
from fgsl.config import preset
from tests.test_calib_outputs import relu_onnx  # noqa: F401 (a fixture)


@pytest.fixture
def good(tmp_path: Path) -> Path:
    cfg = preset("tiny")
    crops = np.random.default_rng(0).integers(0, 255, (2, cfg.window_frames, 32, 32, 3), dtype=np.uint8)
    frames = np.tile(np.arange(cfg.window_frames), (2, 1))
    return save(CalibrationSet(crops, np.zeros(2, int), np.arange(2), frames, ["a.mp4"], cfg), tmp_path / "good.npz")


def rewritten(good: Path, **changes: np.ndarray) -> Path:
    """``good`` with some of its arrays replaced, as a damaged or hand-made file would have them."""
    with np.load(good) as z:
        arrays = {name: z[name] for name in z.files}
    arrays.update(changes)
    path = good.with_name("bad.npz")
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("change, message", [
    ({"version": np.array([1, 2])}, r"calibration file version \[1, 2\], this code reads 1"),
    ({"version": np.array("one")}, r"calibration file version 'one', this code reads 1"),
    ({"videos": np.array([1.5])}, r"its videos must be a list of file names, got float64 \[1\]"),
    ({"video": np.array([0, 7])}, r"its windows name videos 0\.\.7, but it lists 1"),
    ({"video": np.array([-1, 0])}, r"its windows name videos -1\.\.0, but it lists 1"),
    ({"track": np.array([0.5, 1.0])}, r"its video, track and frame indices must be whole numbers"),
])
def test_a_file_with_malformed_arrays_is_refused(change, message, good):
    with pytest.raises(CalibError, match=message):
        load(rewritten(good, **change))


def test_an_npy_array_under_an_npz_name_is_not_a_calibration_file(good, tmp_path):
    """``np.save`` output named ``*.npz``: np.load returns the array, and ``with`` on it was a TypeError."""
    path = tmp_path / "array.npz"
    with open(path, "wb") as f:
        np.save(f, np.zeros((2, 3)))
    with pytest.raises(CalibError, match=r"array.npz: not a calibration file from python -m calib.collect$"):
        load(path)


def test_a_malformed_file_is_one_error_line_from_the_command(relu_onnx, good, tmp_path, capsys):  # noqa: F811
    bad = rewritten(good, version=np.array([1, 2]))
    code = quantize_mod.main(["--onnx", str(relu_onnx), "--data", str(bad), "--out", str(tmp_path / "q.onnx"),
                              "--tool", "onnxruntime"])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {bad}: calibration file version [1, 2], this code reads 1"]


def test_collect_refuses_a_named_pipe_instead_of_waiting_on_it_forever(tmp_path):
    """OpenCV blocked forever opening a FIFO nobody writes to (run in a child: a hang fails by timeout)."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    fifo = tmp_path / "fifo.mp4"
    os.mkfifo(fifo)
    done = subprocess.run([sys.executable, "-m", "calib.collect", "--videos", str(fifo), "--out", str(tmp_path / "c.npz"),
                           "--preset", "tiny"], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=180)
    assert (done.returncode, done.stderr.strip().splitlines()[-1:]) == (2, [
        f"error: {fifo}: not a regular file or a folder (a named pipe, device or socket); give a video file or a "
        "folder of numbered frames"]), done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo.mp4"]
