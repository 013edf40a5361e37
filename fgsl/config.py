"""FGSL configuration: one dataclass, named presets, JSON round trip.

The config travels beside the weights as ``config.json`` so that a weights folder is
self-describing: engines, the live spotter and offline inference rebuild exactly the
network that was trained. Loading refuses unknown keys and inconsistent values with one
clear :class:`ConfigError` instead of guessing.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: MEGC STR recognition classes (MEGC 2023-2025 use these four for CAS(ME)^3 and SAMM).
MEGC_CLASSES: tuple[str, ...] = ("negative", "positive", "surprise", "others")

#: ImageNet statistics used to normalise clips (VideoMAE V2 fine-tuning uses them).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: VideoMAE V2 chunks are always 16 frames with a temporal tubelet of 2 (8 time tokens).
CHUNK_FRAMES = 16
#: Upper limits of a window (frames; 4096 is over 2 min at 30 fps) and of the input's side
#: (px): beyond them no machine has the memory, and the failure would be an allocator's traceback.
MAX_WINDOW_FRAMES = 4096
MAX_IMAGE_SIZE = 1024
#: Frame rates taken anywhere (``--fps``, a model's ``fps``, a video file's own): webcams and
#: data sets run at 25-200 fps, high-speed cameras at up to a few thousand; below 1 fps a
#: micro-expression (< 0.5 s) cannot be seen. A rate far above (a config.json edited to 1e9, a
#: container reporting its time base) asked for that many frames a second of video: a loop
#: that filled the memory.
MIN_FPS, MAX_FPS = 1.0, 10_000.0
#: Most blocks of any one stack, and widest layer, a config may ask for (see ``_range_problems``).
MAX_LAYERS, MAX_WIDTH = 256, 16_384
#: The config's decoding settings (:mod:`fgsl.decode`): applied to the network's outputs, so no
#: exported or compiled graph depends on them (:meth:`FGSLConfig.graph_dict`).
DECODING_FIELDS = ("score_threshold", "nms_sigma", "max_intervals")


class ConfigError(ValueError):
    """A config that cannot describe a valid FGSL network (the message says why)."""


def is_score_threshold(value: Any) -> bool:
    """Whether ``value`` can be a score threshold: a number in [0, 1).

    Scores are sigmoid probabilities (:mod:`fgsl.decode`): 0 keeps every candidate, 1 or more
    keeps none, and the live spotter scales the threshold's odds ``t / (1 - t)``. NaN fails
    here rather than silently failing every comparison (no interval at all).
    """
    return _is_finite_real(value) and 0 <= value < 1


def _is_finite_real(value: Any) -> bool:
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int past float's range (JSON allows 10**400): not a usable number
        return False


def is_positive_number(value: Any) -> bool:
    """Whether ``value`` is a finite real number above 0 (not NaN, not inf, not a bool): the
    check every rate, size and sensitivity takes, where ``value > 0`` alone lets inf through
    and NaN fails silently."""
    return bool(_is_finite_real(value) and value > 0)


@dataclass(frozen=True)
class BackboneConfig:
    """VideoMAE V2 ViT encoder. Defaults are ViT-S/16 as in the official release."""

    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    patch_size: int = 16
    tubelet_size: int = 2
    #: Input size the checkpoint was trained at; the position table is built for this grid
    #: and resized to ``FGSLConfig.image_size`` (VideoMAE V2 fine-tunes at 224).
    pretrain_image_size: int = 224
    #: Layer-scale init (``gamma_1``/``gamma_2`` in checkpoints); 0 means no layer scale.
    init_values: float = 0.0


@dataclass(frozen=True)
class FGSLConfig:
    """Everything needed to rebuild an FGSL network and to read its outputs."""

    name: str = "realtime"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    image_size: int = 112
    #: Window length in frames (at ``fps``); a multiple of the 16-frame chunk.
    window_frames: int = 64
    fps: float = 30.0
    #: Indices of the frozen blocks whose outputs feed an IGA side branch.
    iga_blocks: tuple[int, ...] = (3, 7, 11)
    iga_dim: int = 64
    iga_kernel: int = 3
    #: Width of the projection transformer, pyramid, FIFM and heads.
    neck_dim: int = 256
    neck_heads: int = 4
    neck_layers: int = 2
    #: Local attention window (tokens) of the projection / pyramid transformers.
    attn_window: int = 9
    num_levels: int = 4
    fifm_blocks: int = 2
    fifm_mlp_ratio: float = 2.0
    #: ``"freq"`` (rFFT -> filter -> irFFT) or ``"conv"`` (circular conv; plain ONNX Conv).
    fifm_form: str = "freq"
    head_layers: int = 3
    classes: tuple[str, ...] = MEGC_CLASSES
    #: Decoding defaults (see :mod:`fgsl.decode`).
    score_threshold: float = 0.3
    nms_sigma: float = 0.5
    max_intervals: int = 20

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ derived values
    @property
    def tokens(self) -> int:
        """Time tokens per window (L): one per tubelet."""
        return self.window_frames // self.backbone.tubelet_size

    @property
    def chunks(self) -> int:
        return self.window_frames // CHUNK_FRAMES

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def level_lengths(self) -> list[int]:
        return [self.tokens >> level for level in range(self.num_levels)]

    def level_strides_frames(self) -> list[int]:
        """Frames per point at each pyramid level (used to scale offsets)."""
        return [self.backbone.tubelet_size << level for level in range(self.num_levels)]

    @property
    def num_points(self) -> int:
        """N: points over all pyramid levels (rows of ``scores`` and ``offsets``)."""
        return sum(self.level_lengths())

    # ------------------------------------------------------------------ validation
    def _range_problems(self) -> list[str]:
        """Sizes, rates and decoding limits that are not finite numbers in range, each naming its key.

        Checked first: a zero or negative size would otherwise break the divisibility checks
        below or surface later as a torch traceback, and a NaN passes every ``<=`` test.
        """
        b = self.backbone
        positive = {"image_size": self.image_size, "fps": self.fps, "iga_dim": self.iga_dim,
                    "iga_kernel": self.iga_kernel, "neck_dim": self.neck_dim, "neck_heads": self.neck_heads,
                    "attn_window": self.attn_window, "fifm_mlp_ratio": self.fifm_mlp_ratio,
                    "nms_sigma": self.nms_sigma, "max_intervals": self.max_intervals,
                    "backbone.embed_dim": b.embed_dim, "backbone.depth": b.depth, "backbone.num_heads": b.num_heads,
                    "backbone.mlp_ratio": b.mlp_ratio, "backbone.patch_size": b.patch_size,
                    "backbone.tubelet_size": b.tubelet_size, "backbone.pretrain_image_size": b.pretrain_image_size}
        non_negative = {"neck_layers": self.neck_layers, "fifm_blocks": self.fifm_blocks,
                        "backbone.init_values": b.init_values}
        problems = [f"{k}={v!r:.40} must be a positive number" for k, v in positive.items() if not is_positive_number(v)]
        problems += [f"{k}={v!r} must be 0 or more" for k, v in non_negative.items() if not (_is_finite_real(v) and v >= 0)]
        # Upper bounds far above any real network (ViT-g: 40 blocks, 1408 wide), so that a
        # config.json edited by hand is refused here, not built for hours or past the memory.
        largest = {"backbone.depth": (b.depth, MAX_LAYERS), "neck_layers": (self.neck_layers, MAX_LAYERS),
                   "head_layers": (self.head_layers, MAX_LAYERS), "fifm_blocks": (self.fifm_blocks, MAX_LAYERS),
                   "num_levels": (self.num_levels, MAX_LAYERS), "backbone.embed_dim": (b.embed_dim, MAX_WIDTH),
                   "neck_dim": (self.neck_dim, MAX_WIDTH), "iga_dim": (self.iga_dim, MAX_WIDTH),
                   "backbone.num_heads": (b.num_heads, MAX_WIDTH), "neck_heads": (self.neck_heads, MAX_WIDTH),
                   "backbone.mlp_ratio": (b.mlp_ratio, 64), "fifm_mlp_ratio": (self.fifm_mlp_ratio, 64),
                   "max_intervals": (self.max_intervals, 100_000)}
        problems += [f"{k}={v!r} is more than {most}" for k, (v, most) in largest.items() if _is_finite_real(v) and v > most]
        if is_positive_number(self.fps) and not MIN_FPS <= self.fps <= MAX_FPS:
            problems.append(f"fps={self.fps!r} must be from {MIN_FPS:g} to {MAX_FPS:g}")
        if not is_score_threshold(self.score_threshold):
            problems.append(f"score_threshold={self.score_threshold!r} must be a score in [0, 1)")
        return problems

    def validate(self) -> None:
        b = self.backbone
        problems = self._range_problems()
        if problems:
            raise ConfigError("invalid FGSL config: " + "; ".join(problems))
        if self.window_frames <= 0 or self.window_frames % CHUNK_FRAMES:
            problems.append(f"window_frames={self.window_frames} is not a positive multiple of {CHUNK_FRAMES}")
        elif self.window_frames > MAX_WINDOW_FRAMES:
            problems.append(f"window_frames={self.window_frames} is more than {MAX_WINDOW_FRAMES}")
        if self.image_size > MAX_IMAGE_SIZE:
            problems.append(f"image_size={self.image_size} is more than {MAX_IMAGE_SIZE}")
        if CHUNK_FRAMES % b.tubelet_size:
            problems.append(f"tubelet_size={b.tubelet_size} does not divide {CHUNK_FRAMES}")
        if self.image_size % b.patch_size:
            problems.append(f"image_size={self.image_size} is not a multiple of patch_size={b.patch_size}")
        if b.embed_dim % b.num_heads:
            problems.append(f"embed_dim={b.embed_dim} is not divisible by num_heads={b.num_heads}")
        if self.neck_dim % self.neck_heads:
            problems.append(f"neck_dim={self.neck_dim} is not divisible by neck_heads={self.neck_heads}")
        bad_taps = [i for i in self.iga_blocks if not (type(i) is int and 0 <= i < b.depth)]
        if bad_taps or len(set(self.iga_blocks)) != len(self.iga_blocks):
            problems.append(f"iga_blocks={list(self.iga_blocks)} must be distinct indices in [0, {b.depth})")
        if self.num_levels != 4:
            problems.append("num_levels must be 4 (FIFM reads levels L, L/2, L/4, L/8)")
        elif not problems and self.tokens % (1 << (self.num_levels - 1)):
            problems.append(f"window of {self.tokens} tokens cannot be halved {self.num_levels - 1} times")
        if self.fifm_form not in ("freq", "conv"):
            problems.append(f"fifm_form={self.fifm_form!r} must be 'freq' or 'conv'")
        if self.head_layers < 2:
            problems.append(f"head_layers={self.head_layers} must be at least 2 (a tower and an output conv)")
        if not self.classes:
            problems.append("classes must not be empty")
        elif (not all(isinstance(c, str) and c.strip() for c in self.classes)
              or len(set(self.classes)) != len(self.classes)):
            problems.append(f"classes={list(self.classes)} must be distinct non-empty names")
        if problems:
            raise ConfigError("invalid FGSL config: " + "; ".join(problems))

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def graph_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` less the decoding settings (:data:`DECODING_FIELDS`): what the network,
        and so an exported or compiled graph, depends on. A tuned threshold changes no graph."""
        return {key: value for key, value in self.to_dict().items() if key not in DECODING_FIELDS}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | None = None) -> "FGSLConfig":
        """The config ``data`` describes. ``source`` names where it was read (a config.json, an
        engine manifest): fields it leaves out are then said in one warning (:func:`missing_keys`)."""
        if not isinstance(data, dict):
            raise ConfigError("config must be a JSON object")
        missing = missing_keys(data) if source is not None else []
        data = dict(data)
        backbone = data.pop("backbone", {})
        _reject_unknown(BackboneConfig, backbone, "backbone")
        _reject_unknown(cls, data, "config")
        _reject_wrong_types(BackboneConfig, backbone, "backbone.")
        _reject_wrong_types(cls, data, "")
        for key in ("iga_blocks", "classes"):
            if key in data:
                if not isinstance(data[key], list):  # ("abcd" would become four classes)
                    raise ConfigError(f"invalid FGSL config: {key} must be a list, got {data[key]!r}")
                data[key] = tuple(data[key])
        try:
            cfg = cls(backbone=BackboneConfig(**backbone), **data)
        except TypeError as exc:  # wrong value types, e.g. a string where an int belongs
            raise ConfigError(f"invalid FGSL config: {exc}") from None
        if missing:
            warnings.warn(f"{source} gives no {', '.join(missing)}: the defaults are used "
                          f"({', '.join(f'{key}={_value(cfg, key)!r}' for key in missing)}); "
                          "every config this project writes has them all", stacklevel=2)
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> "FGSLConfig":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from None
        try:
            return cls.from_dict(data, source=str(path))
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def replace(self, **changes: Any) -> "FGSLConfig":
        """A copy with ``changes`` applied, validated like any new config (``__post_init__``).

        The one way the project derives a config from another (a tuned ``score_threshold``, a
        preset override), rather than ``dataclasses.replace`` here and there: callers need not
        import :mod:`dataclasses`, and a search for ``.replace(`` finds them all.
        """
        return dataclasses.replace(self, **changes)


def missing_keys(data: dict[str, Any]) -> list[str]:
    """The fields a config object leaves to their defaults (``backbone.depth`` for nested ones).

    ``fgsl.train`` and ``engines.build`` write every field, so a missing one means a file
    edited by hand or written elsewhere, and a default silently taking its place could decode
    with a window, threshold or class list the weights were not trained with: said, not refused.
    """
    backbone = data.get("backbone", {})
    missing = [f.name for f in dataclasses.fields(FGSLConfig) if f.name not in data]
    if isinstance(backbone, dict) and "backbone" in data:
        missing += [f"backbone.{f.name}" for f in dataclasses.fields(BackboneConfig) if f.name not in backbone]
    return missing


def _value(cfg: "FGSLConfig", key: str) -> Any:
    """The value of ``key`` (``backbone.depth`` for nested ones) in ``cfg``, as JSON has it."""
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return list(value) if isinstance(value, tuple) else value


def _reject_unknown(kind: type, data: Any, where: str) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a JSON object")
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {where} keys: {', '.join(unknown)}")


#: JSON value types each scalar field takes (a whole number is a float too; a bool is no number).
_JSON_TYPES: dict[type, tuple[type, ...]] = {int: (int,), float: (int, float), str: (str,)}
_ITEM_TYPES = {"iga_blocks": int, "classes": str}


def _reject_wrong_types(kind: type, data: dict[str, Any], prefix: str) -> None:
    """One line naming the field whose value has the wrong JSON type (``"window_frames": "32"``
    in a hand-edited config.json), before the range checks compare it and fail with Python's
    "'<=' not supported between instances of 'str' and 'int'", which names no field; and
    ``"name": 5`` was taken as it came."""
    for f in dataclasses.fields(kind):
        if f.name not in data:
            continue
        value, expected = data[f.name], f.default
        if f.name in _ITEM_TYPES:
            item = _ITEM_TYPES[f.name]
            if isinstance(value, list) and not all(isinstance(v, item) and not isinstance(v, bool) for v in value):
                raise ConfigError(f"invalid FGSL config: {prefix}{f.name} must be a list of "
                                  f"{'whole numbers' if item is int else 'strings'}, got {value!r}")
            continue
        allowed = _JSON_TYPES.get(type(expected))
        if allowed and (isinstance(value, bool) or not isinstance(value, allowed)):
            what = {int: "a whole number", float: "a number", str: "a string"}[type(expected)]
            raise ConfigError(f"invalid FGSL config: {prefix}{f.name} must be {what}, got {value!r}")


VIT_S = BackboneConfig(embed_dim=384, depth=12, num_heads=6)
VIT_B = BackboneConfig(embed_dim=768, depth=12, num_heads=12)
VIT_L = BackboneConfig(embed_dim=1024, depth=24, num_heads=16)
VIT_G = BackboneConfig(embed_dim=1408, depth=40, num_heads=16, mlp_ratio=48 / 11)

PRESETS: dict[str, FGSLConfig] = {
    # ViT-S, 112², 64-frame windows (four 16-frame chunks): the live default.
    "realtime": FGSLConfig(name="realtime", backbone=VIT_S, image_size=112),
    "balanced": FGSLConfig(name="balanced", backbone=VIT_S, image_size=160),
    "accurate": FGSLConfig(
        name="accurate", backbone=VIT_B, image_size=224, iga_blocks=(3, 7, 11), neck_dim=384, neck_heads=6
    ),
    # A small network with the full structure, for tests and from-scratch CPU training on
    # synthetic data. 32-frame windows: with 16, a 15-frame event fills the whole window and
    # the from-scratch encoder never learns to tell it from background (docs/training.md).
    "tiny": FGSLConfig(
        name="tiny",
        backbone=BackboneConfig(embed_dim=48, depth=2, num_heads=2, pretrain_image_size=64),
        image_size=32,
        window_frames=32,
        iga_blocks=(0, 1),
        iga_dim=8,
        neck_dim=32,
        neck_heads=2,
        neck_layers=1,
        attn_window=5,
        fifm_blocks=1,
        head_layers=2,
    ),
}


#: The preset a command uses when it builds a network without weights and no --preset is given.
DEFAULT_PRESET = "realtime"


def preset(name: str, **overrides: Any) -> FGSLConfig:
    """A named preset, optionally with fields replaced (e.g. ``window_frames=16``)."""
    try:
        base = PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
    return base.replace(**overrides) if overrides else base
