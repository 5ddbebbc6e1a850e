"""`bitface ...`: thin subcommands over the library. Errors are one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .schemes import NORMALIZERS as NORMALIZER_NAMES

MAX_LISTED_ERRORS = 100


def _data_info(args) -> int:
    from .io import read_annotations

    result = read_annotations(args.source, args.format, strict=args.strict, check=args.check, image_root=args.images)
    counts = sorted({s.num_points for s in result.samples})
    info = {
        "source": str(result.source),
        "format": result.format,
        "faces": len(result.samples),
        "points": counts[0] if len(counts) == 1 else counts,
        "images": len({s.image_path for s in result.samples}),
        "boxes": sum(s.box is not None for s in result.samples),
        "skipped": result.skipped,
        "errors": result.errors[:MAX_LISTED_ERRORS],
    }
    if result.skipped > MAX_LISTED_ERRORS:
        info["errors_listed"] = MAX_LISTED_ERRORS
    print(json.dumps(info, indent=2))
    return 0


def _data_show(args) -> int:
    import numpy as np

    from .data import AugmentSpec, CropSpec, make_example
    from .draw import draw_landmarks, save_image
    from .io import DataError, load_image, read_annotations
    from .schemes import scheme_for_count

    result = read_annotations(args.source, args.format, check="exists", image_root=args.images)
    if not 0 <= args.index < len(result.samples):
        raise DataError(f"{args.source}: --index {args.index} is out of range (0..{len(result.samples) - 1})")
    sample = result.samples[args.index]
    image = load_image(sample.image_path, "rgb")
    points, box = sample.points, sample.box
    if args.augment:
        crop = CropSpec(size=args.size, source="box", margin=0.25)
        augment = AugmentSpec(rotation=30, scale=(0.7, 1.3), translation=0.05, flip=0.5, brightness=0.1, contrast=0.3)
        example = make_example(
            image, sample, crop, scheme_for_count(sample.num_points), augment, np.random.default_rng(args.seed)
        )
        image, points, box = example.crop, example.points, None
    save_image(args.out, draw_landmarks(image, points, box, numbers=args.numbers))
    print(json.dumps({"out": str(args.out), "image": str(sample.image_path), "source": sample.source}))
    return 0


def _parse_options(pairs: list[str]) -> dict:
    """KEY=VALUE strings -> dict; values are read as YAML scalars (numbers, booleans, lists)."""
    import yaml

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        options[key] = yaml.safe_load(value) if value else ""
        if isinstance(options[key], list):
            options[key] = tuple(options[key])
    return options


def _summary(args) -> int:
    from .bundled import index

    if Path(args.model).suffix == ".bitface" or args.model in index()["models"]:
        from .bundled import model_path
        from .export.format import header_bytes, load_packed

        path = Path(args.model) if Path(args.model).suffix == ".bitface" else model_path(args.model)
        table = load_packed(path).layer_table()
        totals = {
            "file_bytes": path.stat().st_size,
            "header_bytes": header_bytes(path),
            "tensor_bytes": sum(r["stored_bytes"] for r in table),
            "memory_bits": sum(r["memory_bits"] for r in table),
        }
        if args.json:
            print(json.dumps({"model": str(path), "layers": table, "totals": totals}, indent=2))
        else:
            print(f"{'#':>3}  {'op':<10}{'shape':<22}{'stored bytes':>13}{'paper bits':>12}")
            for r in table:
                shape = "" if r["shape"] is None else "x".join(map(str, r["shape"]))
                print(f"{r['index']:>3}  {r['op']:<10}{shape:<22}{r['stored_bytes']:>13,}{r['memory_bits']:>12,}")
            print(
                f"file {totals['file_bytes']:,} bytes on disk: tensors {totals['tensor_bytes']:,} + graph and "
                f"metadata {totals['header_bytes']:,} | paper-style memory {totals['memory_bits'] / 8:,.0f} bytes "
                "(1 bit per binary weight and per sign-bit scale, 8 per int8 weight, 32 per other real value)"
            )
        return 0
    try:
        from .models import create_model
        from .models.summary import summarize
    except ImportError as exc:
        raise ValueError(f"`bitface summary` of an architecture needs the train extra (torch): {exc}") from None
    options = _parse_options(args.set)
    if args.model == "blocks":
        return _summary_of_blocks(options, args.json)
    target = Path(args.model)
    if target.suffix in (".yaml", ".yml"):
        from .train.recipe import load_recipe

        recipe = load_recipe(target, {f"model.options.{k}": v for k, v in options.items()})
        name, options, model = recipe.model.name, recipe.model.options, recipe.build_model()
        shape = (recipe.input.channels, recipe.crop.size, recipe.crop.size)
    elif target.suffix == ".safetensors":
        loaded = load_any_model(target)
        name, options, model = loaded.model_name, loaded.model_options, loaded.network
        shape = (loaded.input.channels, loaded.crop.size, loaded.crop.size)
    else:
        try:
            model = create_model(args.model, **options)
        except TypeError as exc:
            raise ValueError(f"model {args.model!r}: {exc}") from None
        name = args.model
        size = getattr(model, "input_size", 128)
        shape = (getattr(model, "channels", 3), size, size)
    summary = summarize(model, shape)
    print(
        json.dumps({"model": name, "options": options, **summary.to_dict()}, indent=2) if args.json else summary.table()
    )
    return 0


def _summary_of_blocks(options: dict, as_json: bool) -> int:
    """`bitface summary blocks`: the paper's blocks side by side, with its parameter comparisons."""
    from .models.summary import blocks_table, compare_blocks

    unknown = set(options) - {"width", "binarization"}
    if unknown:
        raise ValueError(f"`bitface summary blocks` takes --set width=N and binarization=NAME, not {sorted(unknown)}")
    width, binarization = options.get("width", 256), options.get("binarization", "xnor")
    if not isinstance(width, int) or isinstance(width, bool) or width < 8:
        raise ValueError(f"--set width: a whole number of channels of at least 8, got {width!r}")
    rows = compare_blocks(width, str(binarization))
    print(json.dumps({"width": width, "binarization": binarization, "blocks": rows}, indent=2) if as_json else
          blocks_table(rows, str(binarization)))  # fmt: skip
    return 0


def _train(args) -> int:
    try:
        from .train.recipe import load_recipe
        from .train.trainer import Trainer
    except ImportError as exc:
        raise ValueError(f"`bitface train` needs the train extra (pip install 'bitface[train]'): {exc}") from None
    overrides = {key: value for key, value in _parse_options(args.set).items()}
    recipe = load_recipe(args.recipe, overrides)
    out = args.out or Path("runs") / recipe.name
    trainer = Trainer(recipe, out, progress=not args.quiet)
    history = trainer.fit(resume=args.resume, until_epoch=args.until)
    last = history[-1] if history else {}
    print(json.dumps({"run": str(out), "model": str(trainer.files.model), "epochs": trainer.epoch, "last": last}))
    return 0


def load_any_model(path: Path):
    """A model by its name or file: a bundled model (`bitface models`), a packed model (.bitface, runs
    without torch) or a trained checkpoint (.safetensors, needs torch)."""
    from .bundled import index, model_path

    if not path.exists() and str(path) in index()["models"]:
        path = model_path(str(path))
    if path.suffix == ".bitface":
        from .runtime import load_packed_model

        return load_packed_model(path)
    if not path.suffix:
        raise ValueError(f"{path}: neither a bundled model (`bitface models` lists them) nor a model file")
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: unknown model file type {path.suffix!r} (expected .bitface or .safetensors)")
    try:
        from .models.model_file import load_model
    except ImportError as exc:
        raise ValueError(f"{path}: running a .safetensors checkpoint needs the train extra (torch): {exc}") from None
    return load_model(path)


def _export(args) -> int:
    try:
        from .export.convert import export_model
    except ImportError as exc:
        raise ValueError(f"`bitface export` reads torch checkpoints and needs the train extra: {exc}") from None
    from .evaluate.results import git_revision

    model = load_any_model(args.checkpoint)
    if args.checkpoint.suffix != ".safetensors":
        raise ValueError(f"{args.checkpoint}: export takes a training checkpoint (.safetensors)")
    if args.out.suffix == ".onnx":
        from .export.onnx import export_onnx

        print(json.dumps(export_onnx(model, args.out)))
        return 0
    out = args.out if args.out.suffix == ".bitface" else args.out.with_suffix(".bitface")
    packed = export_model(model, {"exported_from": str(args.checkpoint), "git_revision": git_revision()})
    packed.save(out)
    print(json.dumps({"file": str(out), "bytes": out.stat().st_size, "ops": len(packed.graph)}))
    return 0


def _eval(args) -> int:
    from tqdm import tqdm

    from .evaluate.protocol import evaluate_model
    from .io import read_annotations

    model = load_any_model(args.model)
    model.flip_test = args.flip_test
    result = read_annotations(args.source, args.format, check="exists", image_root=args.images)
    if result.samples[0].num_points != model.scheme.num_points:
        raise ValueError(
            f"{args.source} has {result.samples[0].num_points}-point faces but {args.model} predicts "
            f"{model.scheme.num_points} points"
        )
    progress = None if args.quiet else (lambda items: tqdm(items, desc="predicting", leave=False))
    report = evaluate_model(
        model, result.samples, args.normalize, name=args.name or args.source.name, progress=progress
    )
    report.extra["model"] = str(args.model)
    report.extra["flip_test"] = args.flip_test
    report.extra["source"] = str(args.source)
    report.extra["unread_annotations"] = result.skipped
    data = report.to_dict()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    if args.report:
        report.save(args.report)
    keys = ("name", "faces", "normalizer", "nme", "auc", "fr", "skipped")
    print(json.dumps({k: data[k] for k in keys} | ({"pckh": data["pckh"]["total"]} if "pckh" in data else {})))
    return 0


FLIP_TEST_HELP = "also run each face mirrored and average the two (more accurate, twice the network time)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bitface", description="Facial landmarks with tiny binarized and compressed networks."
    )
    parser.add_argument("--version", action="version", version=f"bitface {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = commands.add_parser("data", help="inspect annotated face data").add_subparsers(
        dest="data_command", required=True, metavar="ACTION"
    )

    def source_args(p):
        p.add_argument("source", type=Path, help="annotation file or folder")
        p.add_argument("--format", help="force the annotation format (default: detected)")
        p.add_argument("--images", type=Path, help="folder the image paths are relative to (list formats)")

    info = data.add_parser("info", help="count faces and points; report skipped samples as JSON")
    source_args(info)
    info.add_argument("--strict", action="store_true", help="stop at the first bad sample")
    info.add_argument(
        "--check",
        default="header",
        choices=("none", "exists", "header", "decode"),
        help="how far to verify images (default: header: exists, readable size, points inside)",
    )
    info.set_defaults(run=_data_info)

    show = data.add_parser("show", help="draw one sample's points to a PNG")
    source_args(show)
    show.add_argument("--index", type=int, default=0, help="which face (0-based)")
    show.add_argument("--out", type=Path, required=True, help="output image (.png, .jpg)")
    show.add_argument("--augment", action="store_true", help="crop and apply a random training augmentation")
    show.add_argument("--seed", type=int, default=0, help="augmentation seed")
    show.add_argument("--size", type=int, default=256, help="crop size with --augment")
    show.add_argument("--numbers", action="store_true", help="label each point with its index")
    show.set_defaults(run=_data_show)

    summary = commands.add_parser("summary", help="per-layer bits, memory and MACs of a model")
    summary.add_argument(
        "model",
        help="bundled model name (see `bitface models`), packed model file (.bitface), registered architecture "
        "name (e.g. regression), recipe (.yaml), training checkpoint (.safetensors), or `blocks`: the hourglass "
        "blocks side by side with the paper's parameter comparisons (--set width=256 --set binarization=xnor)",
    )
    summary.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="architecture option (repeatable)"
    )
    summary.add_argument("--json", action="store_true", help="print JSON instead of a table")
    summary.set_defaults(run=_summary)

    train = commands.add_parser("train", help="train a model from a recipe (YAML)")
    train.add_argument("recipe", type=Path, help="recipe file, e.g. configs/acn_table2/20-40-60-80_acn.yaml")
    train.add_argument("--out", type=Path, help="run folder (default: runs/<recipe name>)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    train.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key, e.g. train.epochs=5"
    )
    train.add_argument("--until", type=int, metavar="EPOCH", help="stop after this epoch (continue with --resume)")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(run=_train)

    export = commands.add_parser(
        "export", help="pack a trained checkpoint into a .bitface file (bits, folded BN), or write .onnx"
    )
    export.add_argument("checkpoint", type=Path, help="model.safetensors from `bitface train`")
    export.add_argument(
        "-o",
        "--out",
        type=Path,
        required=True,
        help="output file: .bitface (packed, for bitface.runtime) or .onnx (float graph, checked with onnxruntime)",
    )
    export.set_defaults(run=_export)

    ev = commands.add_parser("eval", help="score a model on an annotated set (NME, AUC, failure rate)")
    ev.add_argument(
        "model", type=Path, help="bundled model name (bitface models), .bitface (packed) or .safetensors (checkpoint)"
    )
    source_args(ev)
    ev.add_argument("--normalize", help="normalizer (default: the scheme's): " + ", ".join(NORMALIZER_NAMES))
    ev.add_argument("--json", type=Path, help="write the full report as JSON here")
    ev.add_argument("--report", type=Path, help="also write STEM.json, STEM.md and STEM_ced.png")
    ev.add_argument("--name", help="name of the set in the report (default: the source's file name)")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.add_argument("--flip-test", action="store_true", help=FLIP_TEST_HELP)
    ev.set_defaults(run=_eval)
    predict = commands.add_parser("predict", help="landmarks on images, folders (recursive) and videos")
    predict.add_argument("inputs", nargs="*", type=Path, help="image files, folders or video files")
    predict.add_argument("--sample", action="store_true", help="also run on the bundled sample image")
    predict.add_argument("--model", help="bundled model name (bitface models) or a .bitface file")
    predict.add_argument(
        "--detector",
        default="opencv-haar",
        help="face detector: opencv-haar (default), dlib-hog (needs dlib)",
    )
    predict.add_argument(
        "--refine",
        type=int,
        help="passes that crop each detected face again from its own landmarks (default: 1 for the 68-point "
        "models, 0 for the 5-point ones; 0: the detector's box only)",
    )
    predict.add_argument(
        "--detect-every",
        type=int,
        help="video: run the detector every N frames and follow faces by their landmarks in between "
        "(default: 10 where the model can, else 1)",
    )
    predict.add_argument("--flip-test", action="store_true", help=FLIP_TEST_HELP)
    predict.add_argument("--json", type=Path, help="write results here (default: print them)")
    predict.add_argument("--draw", type=Path, help="write annotated images (and videos) into this folder")
    predict.add_argument("--quiet", action="store_true", help="no per-file lines or progress bar")
    predict.add_argument(
        "--no-smooth", dest="smooth", action="store_false", help="video: no temporal smoothing (One Euro filter)"
    )
    predict.set_defaults(run=_predict)

    models = commands.add_parser("models", help="list the bundled models")
    models.add_argument("--json", action="store_true", help="as JSON")
    models.set_defaults(run=_models)

    bench = commands.add_parser("bench", help="measure the bundled models (and installed peers): accuracy, size, speed")
    bench.add_argument("--models", nargs="+", help="bundled model names (default: all)")
    bench.add_argument("--data", type=Path, help="the shared data folder (default: $BITFACE_DATA or ../shared/data)")
    bench.add_argument("--out", type=Path, default=Path("bench"), help="writes OUT.json, OUT.md and OUT.png")
    bench.add_argument("--rounds", type=int, default=30, help="interleaved timing rounds")
    bench.add_argument("--max-faces", type=int, help="score only the first N test faces (a quick look)")
    bench.add_argument("--no-peers", dest="peers", action="store_false", help="skip dlib even when installed")
    bench.add_argument(
        "--record", action="store_true", help="maintainers: store the latencies in the bundled index (`bitface models`)"
    )
    bench.set_defaults(run=_bench)
    return parser


def _predict(args) -> int:
    from . import bundled
    from .predict import predict

    inputs = args.inputs or []
    if args.sample:
        inputs.append(bundled.sample_image())
    if not inputs:
        raise ValueError("give images, folders or videos (or --sample for the bundled sample image)")
    return predict(
        [Path(p) for p in inputs],
        args.model,
        args.detector,
        args.json,
        args.draw,
        args.quiet,
        args.smooth,
        args.refine,
        args.detect_every,
        args.flip_test,
    )


def _bench(args) -> int:
    from .bench import run_bench

    if args.rounds < 1 or (args.max_faces is not None and args.max_faces < 1):
        raise ValueError("--rounds and --max-faces must be at least 1")
    result = run_bench(args.models, args.data, args.out, args.peers, args.rounds, args.max_faces)
    for row in result["rows"]:
        nme = "n/a" if row["nme"] is None else f"{row['nme']:.3f}%"
        crop, api = (row[k] for k in ("latency_us_median", "api_latency_us_median"))
        crop = "-" if crop is None else f"{crop:.1f}"
        print(f"{row['model']:28} {row['file_bytes']:>10,} B  NME {nme:>8}  {crop:>9} us/crop  {api:9.1f} us/image+box")
    for note in result["notes"]:
        print(note)
    print(f"wrote {args.out.with_suffix('.md')}, {args.out.with_suffix('.json')} and {args.out}.png")
    if args.record:
        from .export.bundle import record_latency

        recorded = record_latency(result["rows"], result["provenance"])
        print(f"recorded the latency of {', '.join(recorded)} in the bundled index")
    return 0


def _models(args) -> int:
    from . import bundled

    rows = bundled.list_models()
    if args.json:
        print(json.dumps({"default": bundled.default_model(), "models": rows}, indent=1))
        return 0
    default = bundled.default_model()
    names = [row["name"] + (" (default)" if row["name"] == default else "") for row in rows]
    width, kind_width = max(map(len, names + ["name"])), max(len(row["kind"]) for row in rows)
    header = f"{'name':{width}} {'scheme':6} {'kind':{kind_width}} {'bytes':>9} {'us/face':>8} {'us/image':>8}"
    print(header + "  test NME (%)")
    timed = []
    for name, row in zip(names, rows, strict=True):
        test, nme = next(iter(row["nme"].items()))
        latency = row.get("latency_us")
        timed += [latency] if latency else []
        speed = " ".join(
            f"{v:8.1f}" if v is not None else f"{'-':>8}"
            for v in ((latency or {}).get("median"), (latency or {}).get("image_and_box_median"))
        )
        size = f"{row['file_bytes']:>9,}"
        print(f"{name:{width}} {row['scheme']:6} {row['kind']:{kind_width}} {size} {speed}  {nme:.3f} ({test})")
    if timed:
        kernels = [f"{t['kernel_path']} kernels" if t.get("kernel_path") else "kernels not recorded" for t in timed]
        where = sorted({f"{t['cpu']} ({k}), {t['date'][:10]}" for t, k in zip(timed, kernels, strict=True)})
        print(
            f"us/face: median of bitface bench ({timed[0]['what']}); us/image: a 256 x 256 gray image and a box "
            f"through Landmarker; measured on {'; '.join(where)}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    from .io import DataError
    from .train.errors import TrainingDiverged

    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (DataError, KeyError, ValueError, OSError, TrainingDiverged) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"bitface: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
