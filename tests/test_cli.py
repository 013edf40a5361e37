"""Shared CLI plumbing (:mod:`fgsl.cli`, :mod:`fgsl.startup`) not covered through one command's own tests."""

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fgsl.cli import ArgumentParser, UsageError, at_least, frame_rate, missing_module, positive_int, refuse_preset_with_weights


def test_missing_module_names_the_first_absent_package_and_what_to_install():
    assert missing_module(("json", "no_such_package_fgsl.sub", "neither_this"), "the tool", "pip install x") == \
        "the tool needs no_such_package_fgsl: pip install x"


def test_missing_module_is_none_when_everything_imports():
    assert missing_module(("json", "os.path"), "the tool", "pip install x") is None


def test_missing_module_tells_a_broken_install_from_a_missing_one(tmp_path, monkeypatch):
    package = tmp_path / "brokenpkg_fgsl"
    package.mkdir()
    (package / "__init__.py").write_text("import dependency_that_is_not_there_fgsl\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert missing_module(("brokenpkg_fgsl",), "the tool", "pip install x") == (
            "brokenpkg_fgsl is installed but cannot be imported (ModuleNotFoundError: No module named "
            "'dependency_that_is_not_there_fgsl'): pip install x")
    finally:
        sys.modules.pop("brokenpkg_fgsl", None)


@pytest.mark.parametrize("weights, preset, refused", [("runs/a", "tiny", True), ("runs/a", None, False),
                                                       (None, "tiny", False), (None, None, False)])
def test_a_preset_is_refused_only_beside_weights(weights, preset, refused):
    if refused:
        with pytest.raises(UsageError, match="a weights folder's config.json sets its preset"):
            refuse_preset_with_weights(weights, preset)
    else:
        refuse_preset_with_weights(weights, preset)


def _parse_int(kind, value: str) -> tuple[int | None, str]:
    """(value, error line) of ``--batch VALUE`` parsed by argparse with ``type=kind``."""
    parser = argparse.ArgumentParser(prog="tool", exit_on_error=False)
    parser.add_argument("--batch", type=kind)
    try:
        return parser.parse_args(["--batch", value]).batch, ""
    except argparse.ArgumentError as exc:
        return None, str(exc)


@pytest.mark.parametrize("kind, value, parsed, error", [
    (positive_int, "1", 1, ""),
    (positive_int, " 12 ", 12, ""),
    (positive_int, "0", None, "argument --batch: must be at least 1, got '0'"),
    (positive_int, "-2", None, "argument --batch: must be at least 1, got '-2'"),
    (positive_int, "2.5", None, "argument --batch: must be a whole number, got '2.5'"),
    (positive_int, "nan", None, "argument --batch: must be a whole number, got 'nan'"),
    (positive_int, "", None, "argument --batch: must be a whole number, got ''"),
    (at_least(0), "0", 0, ""),
    (at_least(0), "-1", None, "argument --batch: must be at least 0, got '-1'"),
    (at_least(15), "14", None, "argument --batch: must be at least 15, got '14'"),
    (at_least(15), "15", 15, ""),
    (at_least(1, most=64), "64", 64, ""),
    (at_least(1, most=64), "65", None, "argument --batch: must be at most 64, got '65'"),
    (frame_rate, "200", 200.0, ""),
    (frame_rate, "29.97", 29.97, ""),
    # 1e-300 fps made 1e302 model frames of a 3-s video: a hang, not an error (audit)
    (frame_rate, "1e-300", None, "argument --batch: must be from 1 to 10000, got '1e-300'"),
    (frame_rate, "0.001", None, "argument --batch: must be from 1 to 10000, got '0.001'"),
    (frame_rate, "1e9", None, "argument --batch: must be from 1 to 10000, got '1e9'"),
    (frame_rate, "inf", None, "argument --batch: must be a finite number, got 'inf'"),
])
def test_integer_flags_fail_in_argparse_with_one_reason(kind, value, parsed, error):
    assert _parse_int(kind, value) == (parsed, error)


def test_a_bad_integer_flag_is_one_error_line_before_any_work(capsys):
    parser = ArgumentParser(prog="tool")
    parser.add_argument("--batch", type=positive_int, default=4)
    assert parser.parse_args([]).batch == 4
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--batch", "0"])
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: argument --batch: must be at least 1, got '0'\n"  # no usage block


def test_an_empty_flag_value_is_refused_by_every_command_line(capsys):
    """The project's parser refuses an option given an empty value, in a list too; a flag
    left out keeps its default, and a blank one is left to the flag's own type."""
    parser = ArgumentParser(prog="tool")
    parser.add_argument("--video", default="sample.mp4")
    parser.add_argument("--videos", nargs="+")
    assert parser.parse_args([]).video == "sample.mp4"
    assert parser.parse_args(["--video", " "]).video == " "
    for args, flag in ((["--video", ""], "--video"), (["--videos", "a.mp4", ""], "--videos")):
        with pytest.raises(SystemExit) as info:
            parser.parse_args(args)
        assert info.value.code == 2
        assert capsys.readouterr().err == f"error: argument {flag}: empty value (an unset shell variable?)\n"


#: Every ``python -m`` command line, with arguments that would do real work or fail on a
#: missing file at once: the Ctrl-C below comes while Python is still importing, before any
#: of them is read.
COMMANDS = {
    "fgsl.model": ["--preset", "tiny"],
    "fgsl.tune": ["--weights", "none", "--videos", "none.mp4", "--gt", "none.csv"],
    "fgsl.data.datasets": ["casme2", "none"],
    "fgsl.data.synthetic": ["--videos", "none.mp4", "--out", "set"],
    "fgsl.evaluate": ["--gt", "none.csv", "--pred", "none.csv"],
    "fgsl.infer": ["--preset", "tiny", "--allow-untrained", "--videos", "none.mp4"],
    "fgsl.summary": ["--preset", "tiny"],
    "fgsl.convert_backbone": ["none.pth", "out.safetensors"],
    "fgsl.train": ["--preset", "tiny", "--out", "run"],
    "engines.selftest": ["--preset", "tiny"],
    "engines.trt": ["--onnx", "none.onnx", "--out", "out"],
    "engines.cache": ["--dir", "cache"],
    "engines.build": ["--preset", "tiny", "--allow-untrained", "--backend", "onnxruntime", "--out", "engine"],
    "calib.report": ["--fp32", "none.onnx", "--quantized", "none.onnx", "--data", "none.npz"],
    "calib.quantize": ["--onnx", "none.onnx", "--out", "out.onnx"],
    "calib.collect": ["--videos", "none.mp4", "--out", "calib.npz"],
    "realtime.bench": ["--video", "none.mp4"],
    "realtime.cam": ["--source", "none.mp4", "--headless"],
    "demo.bench": ["--video", "none.mp4"],
    "demo": ["--port", "0"],
    "demo.app": ["--port", "0"],
    "fgsl.data.crop_cache": ["--dir", "cache"],
}


def test_every_command_line_is_in_the_ctrl_c_test():
    """A new ``python -m`` module joins :data:`COMMANDS` (and guards its imports, fgsl.startup)."""
    root = Path(__file__).resolve().parents[1]
    found = set()
    for package in ("fgsl", "engines", "calib", "realtime", "demo"):
        for path in (root / package).rglob("*.py"):
            if path.name == "__main__.py" or 'if __name__ == "__main__":' in path.read_text():
                parts = path.relative_to(root).with_suffix("").parts
                found.add(".".join(parts[:-1] if path.name == "__main__.py" else parts))
    assert found == set(COMMANDS)


@pytest.mark.slow
@pytest.mark.parametrize("module", COMMANDS)
def test_every_command_line_says_a_bad_flag_in_one_line(tmp_path, module):
    """argparse printed its whole usage (fifteen lines for fgsl.train) above ``PROG: error:``;
    the README's rule is one ``error:`` line for bad input, flags included (fgsl.cli.ArgumentParser)."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", module, "--no-such-flag"], cwd=tmp_path, env=env, text=True,
                          capture_output=True, timeout=120)
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    (line,) = done.stderr.splitlines()  # (a command with required flags names those first)
    assert line == "error: unrecognized arguments: --no-such-flag" or line.startswith(
        "error: the following arguments are required: "), line


def interrupted_while_importing_torch(args: list[str], cwd: Path, path: list[str] | None = None,
                                      library: str = "libtorch") -> tuple[int, str, str]:
    """(status, stdout, stderr) of ``python ARGS`` sent SIGINT (Ctrl-C) as soon as torch's
    native library is mapped: early in torch's import, a second before the imports end.
    ``path``: the PYTHONPATH folders (default: the repository); ``library``: another native
    library to wait for."""
    root = Path(__file__).resolve().parents[1]
    folders = path or [str(root)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*folders, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        maps = Path(f"/proc/{proc.pid}/maps")
        while library not in maps.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert proc.poll() is None, f"ended before it loaded {library}"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return proc.returncode, out, err


needs_proc = pytest.mark.skipif(not Path("/proc/self/maps").exists(),
                                reason="needs /proc to see when torch is being imported")


@needs_proc
@pytest.mark.parametrize("module", COMMANDS)
def test_ctrl_c_while_python_imports_torch_is_one_line_not_a_traceback(tmp_path, module):
    """The first second or two of every CLI is Python importing torch (and OpenCV, ...): Ctrl-C
    then says ``interrupted`` (exit 130), as during the run (``fgsl.cli.run``), without
    Python's traceback. ``python -m engines.build`` imports the package ``engines`` first, and
    torch with it: that counts too (:mod:`fgsl.startup`)."""
    status = interrupted_while_importing_torch(["-m", module, *COMMANDS[module]], tmp_path)
    assert status == (130, "", "interrupted\n")


@needs_proc
def test_ctrl_c_while_onnx_runtime_loads_ends_the_run_not_the_backend(tmp_path):
    """Ctrl-C while ``fgsl.infer`` first imports ONNX Runtime (``--backend auto``, mid-run):
    pybind11 turned the KeyboardInterrupt into "ImportError: initialization failed", so the
    backend was taken for broken, torch ran instead and the run ended with status 0 (3 times in
    6 here). The import now runs with the signal held (fgsl.signals), then it ends the run."""
    pytest.importorskip("onnxruntime")
    video = Path(__file__).resolve().parents[1] / "samples" / "pyfeat_single_face.mp4"
    status = interrupted_while_importing_torch(
        ["-m", "fgsl.infer", "--preset", "tiny", "--allow-untrained", "--videos", str(video), "--out", "p.csv",
         "--quiet"], tmp_path, library="onnxruntime_pybind11")
    assert status == (130, "", "interrupted\n")
    assert not (tmp_path / "p.csv").exists()


@needs_proc
@pytest.mark.parametrize("module", ["engines", "calib", "fgsl.infer", "realtime.cam"])
def test_ctrl_c_while_a_program_imports_a_module_is_still_pythons_own_keyboard_interrupt(tmp_path, module):
    """A program of one's own that imports ``engines`` (or a CLI module, for its functions) gets
    Python's KeyboardInterrupt, which it may catch: only a ``python -m`` command line turns it
    into ``interrupted``. Uncaught, Python prints the traceback and ends killed by SIGINT."""
    code, out, err = interrupted_while_importing_torch(["-c", f"import {module}"], tmp_path)
    assert (code, out) == (-signal.SIGINT, ""), err
    assert err.startswith("Traceback (most recent call last):") and err.endswith("\nKeyboardInterrupt\n"), err


@needs_proc
def test_ctrl_c_while_train_py_imports_torch_is_one_line(tmp_path):
    """``python train.py`` (the paper's entry point, the same CLI as ``python -m fgsl.train``)."""
    script = Path(__file__).resolve().parents[1] / "train.py"
    status = interrupted_while_importing_torch([str(script), "--preset", "tiny", "--out", "run"], tmp_path)
    assert status == (130, "", "interrupted\n")


@needs_proc
def test_ctrl_c_while_their_own_package_imports_ours_is_their_keyboard_interrupt(tmp_path):
    """``python -m theirpkg`` whose ``__init__`` imports ``engines`` runs their program: our
    package's guard stays out of it (it is not the module ``-m`` locates), so their code gets
    Python's KeyboardInterrupt."""
    package = tmp_path / "theirpkg"
    package.mkdir()
    (package / "__init__.py").write_text("import engines\n")
    (package / "__main__.py").write_text("print('ran')\n")
    root = Path(__file__).resolve().parents[1]
    code, out, err = interrupted_while_importing_torch(["-m", "theirpkg"], tmp_path,
                                                       path=[str(tmp_path), str(root)])
    assert (code, out) == (-signal.SIGINT, ""), err
    assert err.startswith("Traceback (most recent call last):") and err.endswith("\nKeyboardInterrupt\n"), err


def test_a_symbolic_link_loop_is_one_line(tmp_path, capsys):
    """``Path.resolve()`` on a link to itself raises RuntimeError("Symlink loop from ...")
    before Python 3.13 (an OSError since): it was a traceback."""
    from fgsl.data.synthetic import main

    loop = tmp_path / "loop.mp4"
    loop.symlink_to(loop)
    assert main(["--videos", str(loop), "--out", str(tmp_path / "set")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] in (
        f"error: {loop}: a symbolic link loop", f"error: {loop}: Too many levels of symbolic links")
    assert not (tmp_path / "set").exists()


def test_a_command_started_with_stderr_closed_runs_and_keeps_stdout_for_results(tmp_path):
    """``2>&-``: Python's ``sys.stderr`` is None, so the start-up line went to stdout among
    the results and the first progress bar raised (tqdm writes to None); and the first file
    opened took descriptor 2. Stderr goes to /dev/null now (fgsl.startup.keep_stderr_open)."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "fgsl.infer", "--preset", "tiny", "--allow-untrained", "--videos",
                           str(root / "samples" / "pyfeat_single_face.mp4"), "--out", str(tmp_path / "p.csv")],
                          env=env, stdout=subprocess.PIPE, text=True, preexec_fn=lambda: os.close(2), timeout=300)
    assert (done.returncode, done.stdout) == (0, "")
    assert (tmp_path / "p.csv").read_text().splitlines()[0] == "subject,video,onset,offset,emotion"


def test_first_line_folds_a_library_error_into_one_telling_line():
    """torch's load_state_dict error opens with a heading line; skip_heading gives the line
    that names the tensor. A heading alone (or a message-less error) still gives a line."""
    import torch

    from fgsl.messages import explain, first_line

    with pytest.raises(RuntimeError) as caught:
        torch.nn.Linear(2, 3).load_state_dict(torch.nn.Linear(2, 4).state_dict())
    exc = caught.value
    assert first_line(exc) == "Error(s) in loading state_dict for Linear"
    assert first_line(exc, skip_heading=True).startswith("size mismatch for weight:")
    assert first_line(RuntimeError("CalculatorGraph::Run() failed:"), skip_heading=True) == "CalculatorGraph::Run() failed"
    assert first_line(KeyError()) == "KeyError" and explain(KeyError()) == "KeyError"
    assert explain(ValueError("bad\nmore")) == "ValueError: bad"
