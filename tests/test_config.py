import json

import pytest

from fgsl.config import PRESETS, ConfigError, FGSLConfig, preset


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
