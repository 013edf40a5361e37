"""Shared CLI plumbing (:mod:`fgsl.cli`) not covered through one command's own tests."""

import sys

import pytest

from fgsl.cli import UsageError, missing_module, refuse_preset_with_weights


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
