"""Training-input throughput: faces per second through crop + augmentation + normalization, decoding
the JPEG every time vs reading the preprocessed patch cache. Single thread, pinned, interleaved.

    .venv/bin/python benchmarks/data_pipeline.py [--data ../shared/data] [--faces 500] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from bitface.data import AugmentSpec, CropSpec, InputSpec
from bitface.data.cache import PatchCache
from bitface.data.dataset import HeatmapSpec, LandmarkDataset
from bitface.evaluate.results import markdown_table, pin_single_thread, provenance, write_results
from bitface.io import read_annotations
from bitface.schemes import get_scheme

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    # name: (source, scheme, crop, input, output, augmentation)
    "5pt regression, CUHK train, 39 px gray": (
        "cuhk_lfw_net_5pt/trainImageList_subset.txt", "5pt", CropSpec(39, "box", 0.0), InputSpec(1), "normalized",
        AugmentSpec(rotation=15, scale=(0.9, 1.1), translation=0.05, flip=0.5, brightness=0.1, contrast=0.2),
    ),
    "68pt heatmaps, HELEN train, 128 px RGB": (
        "300w_helen_68pt/trainset", "68pt", CropSpec(128, "points", 0.15), InputSpec(3), "heatmap",
        AugmentSpec(rotation=30, scale=(0.7, 1.3), translation=0.05, flip=0.5, brightness=0.1, contrast=0.2),
    ),
}  # fmt: skip


def faces_per_second(dataset, count: int) -> float:
    start = time.perf_counter()
    for i in range(count):
        dataset[i % len(dataset)]
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--faces", type=int, default=500, help="faces per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "data_pipeline")
    args = parser.parse_args()
    core = pin_single_thread()
    rows = []
    for name, (source, scheme, crop, spec, output, augment) in CASES.items():
        samples = read_annotations(args.data / source).samples[: args.faces]
        build_start = time.perf_counter()
        cache = PatchCache.build(samples, crop, spec, progress=False)
        build_seconds = time.perf_counter() - build_start
        common = dict(scheme=get_scheme(scheme), crop=crop, input_spec=spec, augment=augment, output=output)
        if output == "heatmap":
            common["heatmap"] = HeatmapSpec(stride=4, sigma=1.5)
        decode = LandmarkDataset(samples, **common)
        cached = LandmarkDataset(samples, cache=cache, **common)
        rates = {"decode": [], "cache": []}
        for _ in range(args.rounds):  # interleaved, so drifts in machine speed hit both alike
            rates["decode"].append(faces_per_second(decode, len(samples)))
            rates["cache"].append(faces_per_second(cached, len(samples)))
        decode_rate, cache_rate = (statistics.median(rates[k]) for k in ("decode", "cache"))
        rows.append({
            "case": name, "faces": len(samples), "decode_faces_per_s": round(decode_rate, 1),
            "cache_faces_per_s": round(cache_rate, 1), "cache_speedup": round(cache_rate / decode_rate, 2),
            "cache_build_s": round(build_seconds, 2), "cache_mb": round(cache.patches.nbytes / 1e6, 1),
        })  # fmt: skip
        print(rows[-1])
    data = {
        "provenance": provenance(
            "python benchmarks/data_pipeline.py", threads=1, core=core, data=os.path.relpath(args.data, ROOT),
            faces_per_round=args.faces, rounds=args.rounds, statistic="median over rounds",
        ),
        "rows": rows,
    }  # fmt: skip
    columns = ["case", "faces", "decode_faces_per_s", "cache_faces_per_s", "cache_speedup", "cache_build_s", "cache_mb"]
    write_results(args.out, data, "Data pipeline throughput (single thread)", markdown_table(rows, columns))
    print(f"wrote {args.out}.json and .md")


if __name__ == "__main__":
    main()
