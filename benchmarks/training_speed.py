"""Training speed of the 68-point hourglass rows: one training step (forward, loss, backward, optimizer
update) of each ablation row's network on a batch of its recipe's size, single thread, pinned, the rows
interleaved round by round; and one row's step with the STE sign's backward fused (one
`hardtanh_backward` kernel, `bitface.nn.quantizers.ste_gradient`) against the element-wise formula it
replaced, side by side in the same rounds.

    .venv/bin/python benchmarks/training_speed.py [--rounds 5] [--steps 3] [--rows hpm_xnor ...]

The network's step only: data loading, augmentation and validation come on top (the rows' measured
epochs are in benchmarks/results/hourglass_68.md, column `train min`).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from bitface.evaluate.results import markdown_table, pin_single_thread, provenance, write_results
from bitface.nn import quantizers
from bitface.train.recipe import load_recipe
from bitface.train.trainer import _loss_fn, make_optimizer, task_loss

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "configs" / "hourglass68"
# the ablation rows (benchmarks/hourglass_68.py), one per network: the loss and augmentation rows
# train the same networks as hpm_xnor
ROWS = ("hpm_xnor", "hpm_real", "hpm_acn", "hpm_acn1bit", "hpm48_xnor", "hpm48_real", "bottleneck_xnor",
        "bottleneck_real", "multiscale_xnor", "multiscale_real", "multiscale_no1x1_xnor", "multiscale_no1x1_real",
        "wider_xnor", "wider_real")  # fmt: skip
FUSED_ROW = "hpm_acn1bit"  # the shipped 1-bit network's row: STE fused against unfused
TRAIN_FACES = 870 + 3462  # 300-W HELEN trainset + YTF training: the rows' epoch


def unfused_ste_gradient(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The straight-through gradient as ste_gradient computed it before it was fused."""
    return grad * (x.abs() <= 1).to(grad.dtype)


class Step:
    """One row's network, optimizer, batch and targets; calling it runs one training step."""

    def __init__(self, row: str, ste=quantizers.ste_gradient):
        recipe = load_recipe(RECIPES / f"{row}.yaml")
        torch.manual_seed(0)
        self.network = recipe.build_model().to(memory_format=torch.channels_last).train()
        spec = recipe.train
        self.optimizer = make_optimizer(self.network, spec)
        self.loss = _loss_fn(spec.loss)
        self.batch = spec.batch_size
        self.epochs = spec.epochs
        size, cells = recipe.crop.size, recipe.crop.size // recipe.target.stride
        self.images = torch.randn(self.batch, recipe.input.channels, size, size).contiguous(
            memory_format=torch.channels_last
        )
        self.targets = torch.rand(self.batch, recipe.scheme.num_points, cells, cells)
        self.ste = ste

    def __call__(self) -> None:
        saved, quantizers.ste_gradient = quantizers.ste_gradient, self.ste  # what _SignSTE.backward calls
        try:
            loss = task_loss(self.loss, self.network(self.images), self.targets)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        finally:
            quantizers.ste_gradient = saved


def seconds_per_step(step: Step, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (medians are reported)")
    parser.add_argument("--steps", type=int, default=3, help="training steps per candidate per round")
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "training_speed")
    args = parser.parse_args()
    core = pin_single_thread()
    torch.set_num_threads(1)
    candidates = {row: Step(row) for row in args.rows}
    candidates["unfused STE"] = Step(FUSED_ROW, ste=unfused_ste_gradient)
    candidates.setdefault(FUSED_ROW, Step(FUSED_ROW))
    for step in candidates.values():
        step()  # warm up: oneDNN picks its kernels on the first call
    times = {name: [] for name in candidates}
    for round_ in range(args.rounds):
        for name, step in candidates.items():
            times[name].append(seconds_per_step(step, args.steps))
        print(f"round {round_ + 1}/{args.rounds} done", flush=True)
    median = {name: statistics.median(values) for name, values in times.items()}
    rows = []
    for row in args.rows:
        step = candidates[row]
        steps_per_epoch = -(-TRAIN_FACES // step.batch)
        rows.append(
            {
                "row": row,
                "batch": step.batch,
                "step_ms": 1000 * median[row],
                "epochs": step.epochs,
                "network_minutes": median[row] * steps_per_epoch * step.epochs / 60,
            }
        )
    ste = {
        "row": FUSED_ROW,
        "fused_step_ms": 1000 * median[FUSED_ROW],
        "unfused_step_ms": 1000 * median["unfused STE"],
        "speedup": median["unfused STE"] / median[FUSED_ROW],
    }
    chosen = ["--rows", *args.rows] if args.rows != list(ROWS) else []
    command = " ".join(["python benchmarks/training_speed.py", f"--rounds {args.rounds}", f"--steps {args.steps}"])
    command = " ".join([command, *chosen])
    data = {
        "provenance": provenance(command, threads=1, core=core, torch=torch.__version__),
        "train_faces": TRAIN_FACES,
        "rows": rows,
        "ste_backward": ste,
    }
    table = markdown_table(
        [
            {
                "row": r["row"],
                "batch": r["batch"],
                "ms per step": r["step_ms"],
                "epochs": r["epochs"],
                "network minutes": r["network_minutes"],
            }
            for r in rows
        ],
        ["row", "batch", "ms per step", "epochs", "network minutes"],
        {"ms per step": ".0f", "network minutes": ".1f"},
    )
    body = (
        f"One training step (forward, loss, backward, update) of each ablation row's network, 128 px, single "
        f"thread, median of {args.rounds} interleaved rounds of {args.steps} steps. 'network minutes': the step "
        "times the steps of an epoch (the training set's faces in batches of the recipe's size) times the "
        "recipe's epochs, without data loading and validation.\n\n"
        + table
        + f"\nThe STE sign's backward fused into one kernel against the element-wise formula, {FUSED_ROW}'s "
        f"step: {ste['fused_step_ms']:.0f} ms against {ste['unfused_step_ms']:.0f} ms, "
        f"{ste['speedup']:.2f}x faster.\n"
    )
    write_results(args.out, data, "Training speed: hourglass rows, one step", body)


if __name__ == "__main__":
    main()
