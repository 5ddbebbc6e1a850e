"""The training loop: one recipe in, a run folder out.

    RUN/recipe.yaml         the recipe as resolved (bases merged, paths absolute)
    RUN/model.safetensors   the model after the last finished epoch (weights + how to run it)
    RUN/state.pt            optimizer, schedule, RNG and history for an exact --resume
    RUN/log.jsonl           one line per epoch: loss, rates, validation NME, seconds, and what ran it
                            (bitface's git revision, CPU, torch version, threads: a resumed run may
                            span revisions and machines)

Both files are written atomically at the end of every epoch. Resume is exact: the shuffle order,
the augmentation of every face and dropout all derive from (seed, epoch), so a run stopped after
epoch k and resumed ends with the same weights as one that never stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from ..data.cache import PatchCache
from ..data.dataset import HeatmapSpec, LandmarkDataset, make_loader
from ..data.parts import PART_CLASSES, part_labels
from ..data.pipeline import to_original
from ..evaluate.protocol import reference_boxes
from ..evaluate.report import evaluate
from ..evaluate.results import cpu_model, git_revision
from ..evaluate.segmentation import confusion, segmentation_scores
from ..io import read_annotations
from ..io.sample import Sample
from ..models.model_file import LandmarkModel, calibrate_points_crop, load_model
from ..nn.quantizers import AmplitudeKernel
from .acn import AsyncAmplitudeOptimizer
from .attention import attention_loss, check_matched_blocks, record_blocks
from .errors import RecipeError, TrainingDiverged
from .recipe import OptimSpec, Recipe, recipe_from_dict

STATE_VERSION = 1


@dataclass
class RunFiles:
    folder: Path

    @property
    def recipe(self) -> Path:
        return self.folder / "recipe.yaml"

    @property
    def model(self) -> Path:
        return self.folder / "model.safetensors"

    @property
    def state(self) -> Path:
        return self.folder / "state.pt"

    @property
    def log(self) -> Path:
        return self.folder / "log.jsonl"


def cache_folder() -> Path:
    return Path(os.environ.get("BITFACE_CACHE", Path.home() / ".cache" / "bitface"))


def read_samples(source: str | tuple[str, ...], format: str | None) -> list[Sample]:
    """Every usable face of one source or several (lenient: bad lines are skipped and counted); a
    source with none at all is an error with the counts."""
    sources = (source,) if isinstance(source, str) else source
    return [s for one in sources for s in read_annotations(one, format, strict=False, check="header").samples]


def _loss_fn(name: str):
    return {
        "l2": torch.nn.functional.mse_loss,
        "l1": torch.nn.functional.l1_loss,
        "smooth_l1": lambda a, b: torch.nn.functional.smooth_l1_loss(a, b, beta=0.02),
        "bce": torch.nn.functional.binary_cross_entropy_with_logits,
        "cross_entropy": torch.nn.functional.cross_entropy,  # log-softmax + NLL over classes, per pixel
    }[name]


def task_loss(loss, prediction, target) -> torch.Tensor:
    """The loss of one output, or the sum over a stacked network's outputs (intermediate supervision)."""
    if isinstance(prediction, (list, tuple)):
        return sum(loss(p, target) for p in prediction)
    return loss(prediction, target)


def rate_factor(spec, step: int, steps_per_epoch: int) -> float:
    """Learning-rate multiplier at a global step: linear warmup, then constant, cosine to 0, or steps."""
    epoch = step / steps_per_epoch
    if epoch < spec.warmup_epochs:
        return (step + 1) / (spec.warmup_epochs * steps_per_epoch)
    if spec.schedule == "cosine":
        span = spec.epochs - spec.warmup_epochs
        return 0.5 * (1 + math.cos(math.pi * (epoch - spec.warmup_epochs) / span))
    if spec.schedule == "step":
        return spec.step_gamma ** sum(epoch >= e for e in spec.step_epochs)
    return 1.0


def start_from(network: torch.nn.Module, path: str | Path) -> list[str]:
    """Load the weights of a trained model file into `network` (train.init). Every tensor of the file
    must exist in the network with the same shape. The network's tensors the file lacks are returned;
    they keep their initialization, except the amplitude matrices of an ACN twin of a model without
    them, which start at the loaded kernels' mean |X| (as a fresh layer's start at its random ones')."""
    source = load_model(path).network.state_dict()
    own = network.state_dict()
    foreign = sorted(set(source) - set(own))
    if foreign:
        raise RecipeError(f"train.init: {path}: tensor {foreign[0]} has no place in this network (another model?)")
    for key, value in source.items():
        if value.shape != own[key].shape:
            raise RecipeError(
                f"train.init: {path}: {key} is {tuple(value.shape)} there, {tuple(own[key].shape)} in this network"
            )
    network.load_state_dict(source, strict=False)
    for name, layer in network.named_modules():
        quantizer = getattr(layer, "kernel_quantizer", None)
        if isinstance(quantizer, AmplitudeKernel) and f"{name}.kernel_quantizer.amplitude" not in source:
            quantizer.init_from(layer.weight)
    return sorted(set(own) - set(source))


def make_optimizer(network: torch.nn.Module, spec: OptimSpec) -> AsyncAmplitudeOptimizer:
    """The recipe's optimizer over the network (its ACN amplitudes with their own rate and update)."""
    return AsyncAmplitudeOptimizer(
        network,
        lr=spec.lr,
        amplitude_lr=spec.amplitude_lr or spec.lr,
        theta=spec.theta,
        weight_decay=spec.weight_decay,
        optimizer=spec.optimizer,
        amplitude_update=spec.amplitude_update,
    )


class Teacher:
    """A trained model whose outputs are the soft targets of distillation (train.teacher): its maps or
    coordinates in the space of the targets (through its own heatmap activation), computed without
    gradients, the network always in eval mode.

    A heatmap teacher may work at another crop size than the student (the same crop region at another
    resolution, e.g. a 128 px teacher for a 96 px student): the student's images are resized to the
    teacher's crop and its maps to the student's, both bilinearly with cell centres aligned
    (align_corners=False, as OutputSpace places them), antialiased when shrinking."""

    def __init__(self, path: str | Path, recipe: Recipe):
        model = load_model(path)
        self.resized = model.crop != recipe.crop and recipe.target.output == "heatmap"
        theirs_crop = dataclasses.replace(model.crop, size=recipe.crop.size) if self.resized else model.crop
        pairs = {  # what the teacher has and what this recipe has
            "scheme": (model.scheme.name, recipe.scheme.name),
            "crop": (theirs_crop, recipe.crop),
            "input": (model.input, recipe.input),
            "output": (model.output, recipe.target.output),
            "heatmap_stride": (model.heatmap_stride, recipe.target.stride),
        }
        for key, (theirs, mine) in pairs.items():
            if theirs != mine:
                raise RecipeError(f"train.teacher: {path}: its {key} is {theirs!r}, this recipe's {mine!r}")
        self.size, self.stride = model.crop.size, model.heatmap_stride
        self.model = model  # its with_mirror maps a mirrored crop's output back (train.teacher_flip)
        self.network = model.network.eval().requires_grad_(False).to(memory_format=torch.channels_last)
        self.activation = model.heatmap_activation
        self.probabilities = recipe.train.loss == "bce"  # soft targets of a cross-entropy lie in [0, 1]
        self.flip = recipe.train.teacher_flip

    def _raw(self, images: torch.Tensor) -> torch.Tensor:
        output = self.network(images)
        return output[-1] if isinstance(output, (list, tuple)) else output  # a stack's final output

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, blocks: list | None = None) -> torch.Tensor:
        """The soft targets; `blocks`, when given, receives the output of each of the teacher's residual
        blocks on the images (not their mirrors): the targets of train.attention."""
        seen = _resized(images, self.size) if self.resized else images  # at the teacher's crop size
        with record_blocks(self.network, blocks):
            output = self._raw(seen)
        if self.flip:  # raw outputs averaged before the activation, as flip_test does at inference
            mirrored = self._raw(seen.flip(-1))
            output = torch.from_numpy(self.model.with_mirror(output.numpy(), mirrored.numpy()))
        if self.activation == "sigmoid":
            output = torch.sigmoid(output)
        if self.resized:  # the student's map size: its crop over the shared stride
            output = _resized(output, images.shape[-1] // self.stride)
        return output.clamp(0, 1) if self.probabilities else output


def _resized(x: torch.Tensor, size: int) -> torch.Tensor:
    shrink = size < x.shape[-1]
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=shrink)


@torch.no_grad()
def score_parts(network: torch.nn.Module, dataset: LandmarkDataset) -> dict:
    """Part segmentation scores at crop resolution: the class logits upsampled bilinearly to the crop
    (cell centres sit where OutputSpace puts them, as align_corners=False assumes), against masks
    drawn from the crop's points at full resolution."""
    network.eval()
    size = dataset.crop.size
    matrix = np.zeros((len(PART_CLASSES), len(PART_CLASSES)), dtype=np.int64)
    for batch in make_loader(dataset, 64, shuffle=False):
        logits = torch.nn.functional.interpolate(network(batch["image"]), size=(size, size), mode="bilinear")
        predicted = logits.argmax(1).numpy()
        for points, labels in zip(batch["points"].numpy(), predicted, strict=True):
            matrix += confusion(part_labels(points, size, size), labels, len(PART_CLASSES))
    return segmentation_scores(matrix, PART_CLASSES)


class Trainer:
    def __init__(self, recipe: Recipe, folder: str | Path, progress: bool = True):
        self.recipe = recipe
        self.files = RunFiles(Path(folder))
        self.progress = progress
        spec = recipe.train
        torch.set_num_threads(spec.threads)
        torch.manual_seed(spec.seed)
        self.network = recipe.build_model()  # fails on an impossible architecture before any data is read
        # NHWC: oneDNN's convolutions, pooling and batch norm ran 1.15x (binary hourglass) to 1.5x
        # (regression nets) faster per step on this CPU than in NCHW; files store plain tensors
        self.network.to(memory_format=torch.channels_last)
        self.train_samples = read_samples(recipe.data.train, recipe.data.format)
        self.val_samples = read_samples(recipe.data.val, recipe.data.format) if recipe.data.val else []
        cache_dir = cache_folder() / "patches"
        heatmap = HeatmapSpec(recipe.target.stride, recipe.target.sigma)
        kwargs = dict(directory=cache_dir, progress=progress)
        self.train_set = LandmarkDataset(
            self.train_samples,
            recipe.scheme,
            recipe.crop,
            recipe.input,
            recipe.augment,
            output=recipe.target.output,
            heatmap=heatmap,
            cache=PatchCache.build(self.train_samples, recipe.crop, recipe.input, **kwargs),
            seed=spec.seed,
        )
        self.val_set = None
        if self.val_samples:
            self.val_set = LandmarkDataset(
                self.val_samples,
                recipe.scheme,
                recipe.crop,
                recipe.input,
                None,
                output=recipe.target.output,
                heatmap=heatmap,
                cache=PatchCache.build(self.val_samples, recipe.crop, recipe.input, context=1.0, **kwargs),
            )
        self.optimizer = make_optimizer(self.network, spec)
        for group in self.optimizer.param_groups:
            group["base_lr"] = group["lr"]
        # train.ema: the moving average (a copy; it takes the live weights at its first update, after
        # train.init has loaded them) is the network validated and saved
        self.averaged = None
        if spec.ema is not None:
            self.averaged = AveragedModel(self.network, multi_avg_fn=get_ema_multi_avg_fn(spec.ema), use_buffers=True)
        self.loss = _loss_fn(spec.loss)
        self.teacher = Teacher(spec.teacher, recipe) if spec.teacher else None
        if spec.attention:
            if self.teacher.resized:
                raise RecipeError(
                    f"train.attention: {spec.teacher}: the teacher works at {self.teacher.size} px and this "
                    f"recipe at {recipe.crop.size} px; attention maps are matched at the same resolution"
                )
            try:
                check_matched_blocks(
                    self.network, self.teacher.network, (recipe.input.channels, *[recipe.crop.size] * 2)
                )
            except ValueError as exc:
                raise RecipeError(f"train.attention: {spec.teacher}: {exc}") from None
        self.fallback_crop = calibrate_points_crop(self.train_samples, recipe.crop)
        self.epoch = 0  # epochs finished
        self.history: list[dict] = []
        # what trains the epochs of this process, logged with each (bitface's own checkout, not the cwd's)
        self.ran_on = {
            "git_revision": git_revision(Path(__file__).parent),
            "cpu": cpu_model(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        }

    # -- state ------------------------------------------------------------------------------------

    @property
    def result_network(self) -> torch.nn.Module:
        """The network that is validated and saved: the moving average where the recipe keeps one."""
        return self.network if self.averaged is None else self.averaged.module

    def landmark_model(self, network: torch.nn.Module | None = None) -> LandmarkModel:
        return LandmarkModel(
            network=self.result_network if network is None else network,
            model_name=self.recipe.model.name,
            model_options=dict(self.recipe.model.options),
            scheme=self.recipe.scheme,
            crop=self.recipe.crop,
            input=self.recipe.input,
            output=self.recipe.target.output,
            heatmap_stride=self.recipe.target.stride,
            heatmap_activation=self.recipe.heatmap_activation,
            heatmap_smooth=self.recipe.target.smooth,
            fallback_crop=self.fallback_crop,
            info={
                "recipe": self.recipe.name,
                "epoch": self.epoch,
                "val": self.history[-1].get("val") if self.history else None,
            },
        )

    def save(self) -> None:
        self.files.folder.mkdir(parents=True, exist_ok=True)
        self.landmark_model().save(self.files.model)
        state = {
            "version": STATE_VERSION,
            "epoch": self.epoch,
            "network": self.network.state_dict(),
            "averaged": None if self.averaged is None else self.averaged.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "history": json.dumps(self.history),
            "recipe": json.dumps(self.recipe.to_dict()),
        }
        tmp = self.files.state.with_name(self.files.state.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.files.state)

    def resume(self) -> None:
        if not self.files.state.is_file():
            raise FileNotFoundError(f"{self.files.state}: nothing to resume (no state file in {self.files.folder})")
        state = torch.load(self.files.state, weights_only=True)  # never unpickle arbitrary objects
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"{self.files.state}: state version {state.get('version')}, expected {STATE_VERSION}")
        saved = recipe_from_dict(json.loads(state["recipe"]))  # keys added since are read with their defaults
        if saved != self.recipe:
            raise ValueError(f"{self.files.state}: was written by a different recipe; start a new run folder")
        self.network.load_state_dict(state["network"])
        if self.averaged is not None:
            if state.get("averaged") is None:
                raise ValueError(f"{self.files.state}: holds no moving average (train.ema); start a new run folder")
            self.averaged.load_state_dict(state["averaged"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        self.epoch = int(state["epoch"])
        self.history = json.loads(state["history"])

    # -- loop -------------------------------------------------------------------------------------

    def fit(self, resume: bool = False, until_epoch: int | None = None) -> list[dict]:
        """Train to the recipe's last epoch, or stop after `until_epoch` (to split a long run across
        sessions; continue it with resume=True)."""
        self.files.folder.mkdir(parents=True, exist_ok=True)
        if resume:
            self.resume()
        elif self.files.state.exists():
            raise FileExistsError(f"{self.files.folder} already holds a run; pass --resume or choose another --out")
        elif self.recipe.train.init:
            start_from(self.network, self.recipe.train.init)
        self.files.recipe.write_text(yaml.safe_dump(self.recipe.to_dict(), sort_keys=False))
        if not resume and self.files.log.exists():
            self.files.log.unlink()
        spec = self.recipe.train
        stop = spec.epochs if until_epoch is None else min(until_epoch, spec.epochs)
        while self.epoch < stop:
            row = self._train_epoch(self.epoch)
            self.epoch += 1
            due = self.epoch % spec.val_every == 0 or self.epoch == spec.epochs
            row["val"] = self.validate() if due else None
            if due and self.averaged is not None:
                row["val_live"] = self.validate(self.network)
            self.history.append(row)
            self.save()
            with self.files.log.open("a") as log:
                log.write(json.dumps(row) + "\n")
            if self.progress:
                val = row["val"]
                nme = f", val NME {val['nme']:.3f}% ({val['normalizer']})" if val and "nme" in val else ""
                nme += f", val mean IU {val['mean_iu']:.2f}%" if val and "mean_iu" in val else ""
                tqdm.write(f"epoch {row['epoch']}/{spec.epochs}: loss {row['loss']:.5f}{nme}, {row['seconds']:.1f}s")
        return self.history

    def _train_epoch(self, epoch: int) -> dict:
        spec = self.recipe.train
        self.train_set.set_epoch(epoch)
        loader = make_loader(self.train_set, spec.batch_size, shuffle=True, workers=spec.workers, seed=spec.seed)
        loader.generator.manual_seed(spec.seed * 100_003 + epoch)  # the shuffle depends on (seed, epoch) only
        self.network.train()
        steps = len(loader)
        total, count, start = 0.0, 0, time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{spec.epochs}", disable=not self.progress, leave=False)
        for batch_index, batch in enumerate(bar):
            factor = rate_factor(spec, epoch * steps + batch_index, steps)
            for group in self.optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor
            blocks = [] if spec.attention else None  # the residual blocks' outputs, for train.attention
            with record_blocks(self.network, blocks):
                prediction = self.network(batch["image"])
            loss = self.objective(prediction, batch, blocks)
            if not torch.isfinite(loss):
                kept = f"the last good checkpoint ({self.epoch} epochs) is {self.files.model}"
                raise TrainingDiverged(
                    f"loss became {loss.item()} at epoch {epoch + 1}, batch {batch_index + 1}; "
                    + (kept if self.files.model.exists() else "no checkpoint was written yet")
                )
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            if self.averaged is not None:
                self.averaged.update_parameters(self.network)
            total += loss.item() * len(batch["image"])
            count += len(batch["image"])
            bar.set_postfix(loss=f"{total / count:.5f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}")
        return {
            "epoch": epoch + 1,
            "loss": total / count,
            "lr": self.optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - start,
            **self.ran_on,
        }

    def objective(self, prediction, batch: dict, blocks: list | None = None) -> torch.Tensor:
        """The task loss against the targets, mixed with the loss against the teacher's outputs when
        the recipe distills, plus the attention-transfer term when it matches attention (`blocks`: the
        student's residual-block outputs for this prediction, recorded with record_blocks)."""
        spec = self.recipe.train
        loss = task_loss(self.loss, prediction, batch["target"])
        if self.teacher is None:
            return loss
        if spec.attention and blocks is None:
            raise ValueError("train.attention: objective() needs the student's residual-block outputs (blocks)")
        teacher_blocks = [] if spec.attention else None
        soft = self.teacher(batch["image"], teacher_blocks)
        loss = (1 - spec.distill) * loss + spec.distill * task_loss(self.loss, prediction, soft)
        if spec.attention:
            loss = loss + spec.attention / 2 * attention_loss(blocks, teacher_blocks)
        return loss

    @torch.no_grad()
    def validate(self, network: torch.nn.Module | None = None) -> dict | None:
        """Validation scores of `network` (default: the result network)."""
        if self.val_set is None:
            return None
        network = self.result_network if network is None else network
        network.eval()
        if self.recipe.target.output == "parts":
            scores = score_parts(network, self.val_set)
            return {key: scores[key] for key in ("pixel_accuracy", "mean_accuracy", "mean_iu")} | {
                "faces": len(self.val_set)
            }
        model = self.landmark_model(network)
        predictions, truths, scored = [], [], []
        loader = make_loader(self.val_set, 512, shuffle=False)
        for batch in loader:
            in_crop = model.decode(network(batch["image"]).numpy())
            for points, matrix, index in zip(in_crop, batch["matrix"].numpy(), batch["index"].tolist(), strict=True):
                predictions.append(to_original(points, matrix))
                scored.append(self.val_samples[index])
                truths.append(scored[-1].points)
        normalizer = self.recipe.data.normalizer
        boxes = reference_boxes(scored, normalizer)
        report = evaluate(np.stack(predictions), np.stack(truths), self.recipe.scheme, normalizer, boxes=boxes)
        row = {"nme": report.nme, "normalizer": report.normalizer, "faces": report.faces}
        if "pckh" in report.extra:
            row["pckh"] = report.extra["pckh"]["total"]
        return row
