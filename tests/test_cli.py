"""Shared CLI plumbing (:mod:`fgsl.cli`) not covered through one command's own tests."""

import argparse
import sys

import pytest

from fgsl.cli import UsageError, at_least, frame_rate, missing_module, positive_int, refuse_preset_with_weights


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
    parser = argparse.ArgumentParser(prog="tool")
    parser.add_argument("--batch", type=positive_int, default=4)
    assert parser.parse_args([]).batch == 4
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--batch", "0"])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "tool: error: argument --batch: must be at least 1, got '0'"
