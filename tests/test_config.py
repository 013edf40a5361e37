import json
import math
import re

import numpy as np
import pytest

from fgsl.config import PRESETS, ConfigError, FGSLConfig, is_positive_number, preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid_and_round_trip_through_json(name):
    cfg = preset(name)
    assert cfg.window_frames % 16 == 0
    again = FGSLConfig.from_dict(json.loads(cfg.to_json()))
    assert again == cfg


def test_named_presets_match_the_design():
    assert (PRESETS["realtime"].backbone.embed_dim, PRESETS["realtime"].image_size) == (384, 112)
    assert (PRESETS["balanced"].backbone.embed_dim, PRESETS["balanced"].image_size) == (384, 160)
    assert (PRESETS["accurate"].backbone.embed_dim, PRESETS["accurate"].image_size) == (768, 224)
    assert PRESETS["realtime"].num_points == 32 + 16 + 8 + 4


@pytest.mark.parametrize(
    "change, words",
    [
        ({"window_frames": 40}, "multiple of 16"),
        ({"image_size": 100}, "patch_size"),
        ({"iga_blocks": (0, 12)}, "iga_blocks"),
        ({"fifm_form": "wavelet"}, "fifm_form"),
        ({"head_layers": 1}, "head_layers"),
        # found by the bad-input audit: memory-allocator tracebacks, or labels that are no names
        ({"window_frames": 1_600_000}, "window_frames=1600000 is more than 4096"),
        ({"image_size": 4096}, "image_size=4096 is more than 1024"),
        ({"classes": (1, 2, 3, 4)}, "must be distinct non-empty names"),
        ({"classes": ("a", "a", "b", "c")}, "must be distinct non-empty names"),
        ({"iga_blocks": ("0", 5)}, "iga_blocks"),
    ],
)
def test_invalid_configs_are_refused_with_the_reason(change, words):
    with pytest.raises(ConfigError, match=words):
        preset("realtime", **change)


def test_unknown_keys_and_bad_json_are_clear_errors(tmp_path):
    data = preset("tiny").to_dict()
    data["dropout"] = 0.1
    with pytest.raises(ConfigError, match="unknown config keys: dropout"):
        FGSLConfig.from_dict(data)
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        FGSLConfig.load(bad)
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("huge")


@pytest.mark.parametrize(
    "change, words",
    [
        ({"score_threshold": 7}, "score_threshold=7 must be a score in [0, 1)"),
        ({"score_threshold": float("nan")}, "score_threshold=nan"),
        ({"score_threshold": 1.0}, "score_threshold=1.0"),
        ({"max_intervals": -1}, "max_intervals=-1 must be a positive number"),
        ({"max_intervals": 0}, "max_intervals=0"),
        ({"image_size": -32}, "image_size=-32 must be a positive number"),
        ({"fps": float("nan")}, "fps=nan must be a positive number"),
        ({"fps": float("inf")}, "fps=inf"),
        ({"nms_sigma": 0.0}, "nms_sigma=0.0"),
        ({"iga_dim": 0}, "iga_dim=0"),
        ({"fifm_blocks": -1}, "fifm_blocks=-1 must be 0 or more"),
        ({"fps": "30"}, "fps='30' must be a positive number"),
        ({"fps": 1e9}, "fps=1000000000.0 must be from 1 to 10000"),  # (a loop that filled the memory)
        ({"fps": 0.5}, "fps=0.5 must be from 1 to 10000"),
        ({"image_size": 10**400}, f"image_size={'1' + '0' * 39} must be a positive number"),  # (JSON allows it)
        ({"neck_dim": 2**20}, "neck_dim=1048576 is more than 16384"),  # (torch could not allocate it)
        ({"head_layers": 10**6}, "head_layers=1000000 is more than 256"),  # (built for hours)
    ],
)
def test_out_of_range_and_non_finite_values_are_refused_naming_the_key(change, words):
    """Values that used to pass (NaN passes every ``<=``) and then gave no interval at all or a
    torch traceback far from the config."""
    with pytest.raises(ConfigError, match=re.escape(words)):
        preset("tiny", **change)


def test_a_config_file_with_nan_or_a_zero_backbone_size_is_one_config_error(tmp_path):
    data = preset("tiny").to_dict()
    data["fps"] = float("nan")  # json writes NaN, and reads it back
    data["backbone"]["num_heads"] = 0  # would divide by zero in the divisibility checks
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as info:
        FGSLConfig.load(path)
    message = str(info.value)
    assert "fps=nan" in message and "backbone.num_heads=0" in message and "\n" not in message
    assert preset("tiny", score_threshold=0.0).score_threshold == 0.0  # 0 keeps every candidate: allowed


@pytest.mark.parametrize("value, expected", [
    (1, True), (0.5, True), (np.float32(2.0), True), (1e308, True),
    (0, False), (-1.0, False), (math.nan, False), (math.inf, False), (True, False), ("3", False), (None, False),
])
def test_is_positive_number(value, expected) -> None:
    """The one check every rate, size and sensitivity takes: inf, NaN and bools are not numbers of anything."""
    assert is_positive_number(value) is expected


def test_replace_gives_a_validated_copy():
    """FGSLConfig.replace is the project's one way to derive a config (tune's threshold,
    weights.save's): the copy is checked like any new config, and the original is untouched."""
    base = preset("tiny")
    tuned = base.replace(score_threshold=0.55)
    assert tuned.score_threshold == 0.55 and base.score_threshold == preset("tiny").score_threshold
    assert tuned.replace(score_threshold=base.score_threshold) == base
    with pytest.raises(ConfigError, match=r"score_threshold=1.5 must be a score in \[0, 1\)"):
        base.replace(score_threshold=1.5)


@pytest.mark.parametrize("key, value", [("classes", 5), ("classes", "abcd"), ("iga_blocks", 1)])
def test_a_scalar_where_a_list_belongs_is_one_config_error(tmp_path, key, value):
    """``"classes": 5`` was a TypeError traceback; ``"abcd"`` became four one-letter classes."""
    data = preset("tiny").to_dict()
    data[key] = value
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=re.escape(f"{key} must be a list, got {value!r}")):
        FGSLConfig.load(path)


@pytest.mark.parametrize("key, value, words", [
    ("window_frames", "32", "window_frames must be a whole number, got '32'"),  # was: '<=' not supported ...
    ("name", 5, "name must be a string, got 5"),  # was taken as it came
    ("fps", True, "fps must be a number, got True"),
    ("score_threshold", "0.5", "score_threshold must be a number, got '0.5'"),
    ("iga_blocks", ["0", "1"], "iga_blocks must be a list of whole numbers, got ['0', '1']"),
    ("classes", ["a", 2], "classes must be a list of strings, got ['a', 2]"),
    ("backbone.depth", 2.5, "backbone.depth must be a whole number, got 2.5"),
])
def test_a_value_of_the_wrong_type_is_one_config_error_naming_its_field(tmp_path, key, value, words):
    data = json.loads(preset("tiny").to_json())
    parent, _, name = key.rpartition(".")
    (data[parent] if parent else data)[name] = value
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as refused:
        FGSLConfig.load(path)
    assert str(refused.value) == f"{path}: invalid FGSL config: {words}"


def test_whole_numbers_are_numbers_in_a_config_file(tmp_path):
    data = json.loads(preset("tiny").to_json())
    data["fps"], data["score_threshold"] = 25, 0
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    assert (FGSLConfig.load(path).fps, FGSLConfig.load(path).score_threshold) == (25, 0)


def test_a_config_file_missing_fields_loads_with_the_defaults_and_says_which(tmp_path, recwarn):
    """A hand-edited config.json without ``score_threshold`` (or a backbone field) decodes with
    the default: said in one warning naming each field and the value used, not silently."""
    data = json.loads(preset("tiny").to_json())
    del data["score_threshold"], data["backbone"]["depth"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    cfg = FGSLConfig.load(path)
    default = FGSLConfig()
    assert cfg.score_threshold == default.score_threshold and cfg.backbone.depth == default.backbone.depth
    assert cfg.name == "tiny"
    (warning,) = [str(w.message) for w in recwarn]
    assert warning.startswith(f"{path} gives no score_threshold, backbone.depth: the defaults are used "
                              f"(score_threshold={default.score_threshold!r}, backbone.depth={default.backbone.depth!r})")


def test_a_complete_config_file_loads_without_a_warning(tmp_path, recwarn):
    path = tmp_path / "config.json"
    path.write_text(preset("tiny").to_json())
    assert FGSLConfig.load(path) == preset("tiny")
    assert not recwarn.list
