"""``engines.build --out``: folders it must not replace, and messages that name --out.

Each test runs the real command (tiny preset, ``--allow-untrained``) and is refused before any
export, so they are cheap."""

from __future__ import annotations

import os

import pytest

from engines.build import main as build_main

BUILD = ["--allow-untrained", "--preset", "tiny", "--backend", "onnxruntime", "--no-verify"]


def test_a_folder_with_someone_elses_manifest_json_is_not_an_engine_folder(tmp_path, capsys):
    """A web app's manifest.json used to pass for an engine's, and the build replaced it."""
    app = tmp_path / "webapp"
    app.mkdir()
    (app / "manifest.json").write_text('{"name": "my app"}')
    (app / "index.html").write_text("<html>")
    assert build_main([*BUILD, "--out", str(app)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --out {app} holds other files and is not an engine folder: pass a new or empty folder, or an "
        "engine folder to rebuild"]
    assert (app / "manifest.json").read_text() == '{"name": "my app"}'
    (app / "index.html").unlink()  # the manifest alone is the user's too
    assert build_main([*BUILD, "--out", str(app)]) == 2
    assert "is not an engine folder" in capsys.readouterr().err
    assert sorted(p.name for p in app.iterdir()) == ["manifest.json"]


@pytest.mark.parametrize("where", ["cwd", "parent"])
def test_the_working_directory_or_a_folder_holding_it_is_refused(where, tmp_path, capsys, monkeypatch):
    """The build swaps the folder by renaming: the caller's shell was left in a deleted directory."""
    out = tmp_path / "engine"
    (out / "sub").mkdir(parents=True)
    monkeypatch.chdir(out if where == "cwd" else out / "sub")
    given = "." if where == "cwd" else ".."
    assert build_main([*BUILD, "--out", given]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --out {given} is the current directory or holds it: a build replaces the folder as a whole; run "
        "it from elsewhere, or write the engine to another folder"]
    assert os.getcwd() == str(out if where == "cwd" else out / "sub") and os.listdir(out) == ["sub"]


def test_a_build_that_cannot_make_its_staging_folder_names_out(tmp_path, capsys):
    """mkdtemp's error named the hidden ``.NAME.build-XXXXXXXX`` folder, which the user never sees."""
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: a read-only folder is still writable")
        assert build_main([*BUILD, "--out", str(locked / "e")]) == 2
    finally:
        os.chmod(locked, 0o700)
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {locked / 'e'}: Permission denied"


def test_a_build_under_proc_names_out(capsys):
    if not os.path.isdir("/proc/self"):
        pytest.skip("no /proc here")
    assert build_main([*BUILD, "--out", "/proc/fgsl-b1"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: /proc/fgsl-b1: No such file or directory"
