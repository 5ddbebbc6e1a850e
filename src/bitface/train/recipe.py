"""Training recipes: YAML files read into typed dataclasses, checked before any training starts.

A recipe may name a `base:` recipe (a path relative to itself) whose keys it overrides, so a family
of runs (e.g. the 16 models of the ACN paper's Table 2) shares one base and differs in a few lines.
Relative data paths are taken relative to the recipe file that wrote them. Every error names the
file and the key: `configs/x.yaml: train.lr: must be > 0, got -0.001`.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..data.augment import AugmentSpec
from ..data.crop import CropSpec
from ..data.pipeline import InputSpec
from ..schemes import NORMALIZERS, get_scheme
from .errors import RecipeError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DataSpec:
    train: str | tuple[str, ...]  # one source, or several read in turn and joined
    val: str | None = None
    format: str | None = None  # forced annotation format; default: detected
    scheme: str = "5pt"
    normalizer: str = "box_width"  # for the validation NME

    def __post_init__(self):
        get_scheme(self.scheme)
        if self.normalizer not in NORMALIZERS:
            raise ValueError(f"normalizer must be one of {', '.join(NORMALIZERS)}, not {self.normalizer!r}")


@dataclass(frozen=True)
class TargetSpec:
    # normalized coordinates in [-1, 1] (regression), pixels, heatmap, or parts: a map of facial part
    # classes built from the 68 points (bitface.data.parts), one output channel per class
    output: str = "normalized"
    stride: int = 4  # heatmap and parts: crop pixels per output cell
    sigma: float = 1.5  # heatmap: Gaussian sigma in cells
    # heatmap decoding: the sigma (cells) of the Gaussian that smooths predicted maps before their argmax
    # (DARK's modulation); None: the targets' sigma, 0: no smoothing
    decode_smooth: float | None = None

    def __post_init__(self):
        if self.output not in ("normalized", "pixels", "heatmap", "parts"):
            raise ValueError(f"output must be normalized, pixels, heatmap or parts, not {self.output!r}")
        if self.stride < 1 or self.sigma <= 0:
            raise ValueError(f"need stride >= 1 and sigma > 0, got {self.stride} and {self.sigma}")
        if self.decode_smooth is not None and not 0 <= self.decode_smooth <= 100:
            raise ValueError(f"decode_smooth must be in [0, 100] cells, got {self.decode_smooth}")

    @property
    def smooth(self) -> float:
        """The decoding's smoothing sigma in cells (heatmap outputs; 0 for the others)."""
        if self.output != "heatmap":
            return 0.0
        return self.sigma if self.decode_smooth is None else self.decode_smooth


# bce: pixel-wise sigmoid cross-entropy on heatmaps; cross_entropy: log-softmax over part classes (parts)
LOSSES = ("l2", "l1", "smooth_l1", "bce", "cross_entropy")
SCHEDULES = ("constant", "cosine", "step")
OPTIMIZERS = ("adam", "sgd", "rmsprop")


@dataclass(frozen=True)
class OptimSpec:
    epochs: int = 60
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3  # eta1: kernels and every other parameter
    amplitude_lr: float | None = None  # eta2 for ACN amplitude matrices; default: lr
    theta: float = 5e-4  # ACN amplitude-loss weight
    amplitude_update: str = "joint"  # ACN: "joint" (inside Adam) or "decoupled" (plain steps; see train.acn)
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    step_epochs: tuple[int, ...] = ()  # epochs at which "step" multiplies the rates by step_gamma
    step_gamma: float = 0.1
    loss: str = "l2"
    seed: int = 0
    workers: int = 0
    threads: int = 1  # torch intra-op threads
    val_every: int = 1  # validate every N epochs and after the last (validation only draws the curves)
    # a trained model file (path relative to the recipe) whose weights start the network, e.g. a real-valued
    # run for its binary twin (Real-to-Binary style); tensors the file lacks (ACN amplitudes) keep their init
    init: str | None = None
    # a trained model file (path relative to the recipe) whose outputs are soft targets (distillation):
    # the loss is (1 - distill) * loss(prediction, target) + distill * loss(prediction, teacher's output
    # through the teacher's own heatmap activation), e.g. a real-valued teacher for its binary twin
    teacher: str | None = None
    distill: float = 0.5
    # the teacher's output averaged with that of each image's mirror image, mapped back (the test-time
    # flip of Landmarker(flip_test=True)): steadier soft targets for twice the teacher's time
    teacher_flip: bool = False
    # attention transfer (bitface.train.attention): the weight beta of beta / 2 * the sum over residual
    # blocks of the mean squared difference between the student's and the teacher's attention maps; the
    # teacher needs the student's blocks at the same resolutions (any widths). 0: off
    attention: float = 0.0
    # decay per step of an exponential moving average of the weights and batch-norm statistics; the
    # average is what is validated and saved (the live weights' NME is logged beside it as val_live).
    # Binary networks' signs flip from step to step, and their validation NME with them; None: off
    ema: float | None = None

    def __post_init__(self):
        checks = [
            ("epochs", self.epochs >= 1, "must be >= 1"),
            ("batch_size", self.batch_size >= 1, "must be >= 1"),
            ("optimizer", self.optimizer in OPTIMIZERS, f"must be one of {', '.join(OPTIMIZERS)}"),
            ("lr", self.lr > 0, "must be > 0"),
            ("amplitude_lr", self.amplitude_lr is None or self.amplitude_lr > 0, "must be > 0"),
            ("theta", self.theta >= 0, "must be >= 0"),
            ("weight_decay", self.weight_decay >= 0, "must be >= 0"),
            ("amplitude_update", self.amplitude_update in ("joint", "decoupled"), "must be joint or decoupled"),
            ("schedule", self.schedule in SCHEDULES, f"must be one of {', '.join(SCHEDULES)}"),
            ("warmup_epochs", 0 <= self.warmup_epochs < self.epochs, "must be >= 0 and below epochs"),
            ("step_gamma", 0 < self.step_gamma <= 1, "must be in (0, 1]"),
            ("loss", self.loss in LOSSES, f"must be one of {', '.join(LOSSES)}"),
            ("workers", self.workers >= 0, "must be >= 0"),
            ("threads", self.threads >= 1, "must be >= 1"),
            ("val_every", self.val_every >= 1, "must be >= 1"),
            ("distill", 0 <= self.distill <= 1, "must be in [0, 1]"),
            ("ema", self.ema is None or 0 < self.ema < 1, "must be in (0, 1), or null for none"),
            ("teacher", self.teacher is None or self.loss != "cross_entropy", "is not supported with cross_entropy"),
            ("teacher_flip", not self.teacher_flip or self.teacher is not None, "needs a teacher"),
            ("attention", self.attention >= 0, "must be >= 0"),
            ("attention", not self.attention or self.teacher is not None, "needs a teacher"),
        ]
        for key, ok, why in checks:
            if not ok:
                raise ValueError(f"{key}: {why}, got {getattr(self, key)!r}")


@dataclass(frozen=True)
class Recipe:
    name: str
    model: ModelSpec
    data: DataSpec
    crop: CropSpec
    train: OptimSpec = OptimSpec()
    input: InputSpec = InputSpec()
    augment: AugmentSpec | None = None
    target: TargetSpec = TargetSpec()

    def __post_init__(self):
        if self.train.loss == "bce" and self.target.output != "heatmap":
            raise ValueError("train.loss: bce (sigmoid cross-entropy) needs target.output: heatmap")
        if (self.train.loss == "cross_entropy") != (self.target.output == "parts"):
            raise ValueError("train.loss: cross_entropy and target.output: parts go together (part segmentation)")
        if self.target.output == "parts" and self.scheme.num_points != 68:
            raise ValueError("target.output: parts builds its masks from the 68 iBUG points; set data.scheme: 68pt")

    @property
    def scheme(self):
        return get_scheme(self.data.scheme)

    @property
    def heatmap_activation(self) -> str:
        """What turns the network's raw heatmaps into maps shaped like the targets: sigmoid for
        logits trained with cross-entropy, none for maps regressed directly."""
        return "sigmoid" if self.train.loss == "bce" else "none"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def build_model(self):
        """The recipe's network; an architecture it cannot build is a RecipeError naming the key."""
        from ..models import create_model

        try:
            return create_model(self.model.name, **self.model.options)
        except KeyError as exc:
            raise RecipeError(f"model.name: {exc.args[0]}") from None
        except (TypeError, ValueError) as exc:
            raise RecipeError(f"model.options: {exc}") from None


def load_recipe(path: str | Path, overrides: dict | None = None) -> Recipe:
    """Read, merge with its base chain, apply dotted `overrides` ({"train.lr": 0.01}), check."""
    path = Path(path)
    data = _read_with_bases(path, seen=())
    for key, value in (overrides or {}).items():
        _set_dotted(data, key, value, path)
    try:
        return recipe_from_dict(data)
    except RecipeError as exc:
        raise RecipeError(f"{path}: {exc}") from None


def recipe_from_dict(data: dict) -> Recipe:
    """A Recipe from plain data (as written by Recipe.to_dict or read from YAML)."""
    return _build(Recipe, data, "")


def _read_with_bases(path: Path, seen: tuple[Path, ...]) -> dict:
    if not path.is_file():
        raise RecipeError(f"{path}: no such recipe file")
    if path.resolve() in seen:
        raise RecipeError(f"{path}: recipes include each other in a loop")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of keys, got {type(data).__name__}")
    _resolve_paths(data, path.parent)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise RecipeError(f"{path}: base: must be a path, got {base!r}")
    merged = _read_with_bases(path.parent / base, seen + (path.resolve(),))
    return _merge(merged, data)


def _resolve_paths(data: dict, folder: Path) -> None:
    train = data.get("train")
    for key in ("init", "teacher"):
        if isinstance(train, dict) and isinstance(train.get(key), str):
            train[key] = str(Path(folder, train[key]).resolve())
    section = data.get("data")
    if not isinstance(section, dict):
        return
    for key in ("train", "val"):
        value = section.get(key)
        if isinstance(value, str):
            section[key] = str(Path(folder, value).resolve())
        elif isinstance(value, list):
            section[key] = [str(Path(folder, v).resolve()) if isinstance(v, str) else v for v in value]


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "options":
            out[key] = _merge(out[key], value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):  # model options merge too
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def _set_dotted(data: dict, key: str, value, path: Path) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise RecipeError(f"{path}: cannot set {key}: {part} is not a section")
    node[parts[-1]] = value


def _build(cls, data, where: str):
    if not isinstance(data, dict):
        raise RecipeError(f"{where or 'recipe'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise RecipeError(
            f"{_join(where, unknown[0])}: unknown key (known under {where or 'the top level'}: {', '.join(fields)})"
        )
    missing = [
        n
        for n, f in fields.items()
        if n not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise RecipeError(f"{_join(where, missing[0])}: required key is missing")
    values = {name: _convert(hints[name], value, _join(where, name)) for name, value in data.items()}
    try:
        return cls(**values)
    except (ValueError, KeyError) as exc:
        message = exc.args[0] if exc.args else str(exc)
        raise RecipeError(f"{where or 'recipe'}: {message}") from None


def _convert(hint, value, where: str):
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, where)
            except RecipeError as exc:
                errors.append(str(exc))
        raise RecipeError(errors[0])
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise RecipeError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {value!r}")
        return {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
            try:
                value = float(value)
            except ValueError:
                raise RecipeError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise RecipeError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"recipe field {where} has an unsupported type {hint}")


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
