"""Speed of the native runtime against PyTorch FP32 and onnxruntime FP32, single thread, pinned.

    python benchmarks/runtime_speed.py          # writes benchmarks/results/runtime_speed.{json,md}

Measured in one run, candidates interleaved round by round, the median of rounds quoted:
- the core's binary peak: a micro-benchmark of the kernel path's XOR + popcount + ADD on independent
  registers (VPOPCNTQ on AVX-512; on AVX2 the kernel's own inner loop: nibble-table lookups of
  operands split into nibbles beforehand), and its FP32 peak: a single-thread
  512 x 512 matrix product in PyTorch; their ratio is the physical limit of binary over FP32 here;
- per binary layer (the shapes of our 5-point networks and hourglass-sized ones with 64+ channels):
  our kernel inside a plan (sign bits in, thresholded sign bits out) in binary MACs per second, its
  fraction of the peak measured in the same round (this machine's speed drifts within a run, so a
  peak from another moment can put a layer above 1), and the speed-up over
  torch.nn.functional.conv2d FP32 of the same shape;
- per binary network (the bundled 1-bit 5-point models and 68-point binary hourglasses and, where
  trained, the Table 2 XNOR-Net and 1-bit ACN runs and other binary hourglass rows): one face
  through our runtime, through the same structure as an FP32 network in PyTorch
  (channels_last) and in onnxruntime, and the training-time binary simulation in PyTorch; one face
  including preprocessing of an already cropped face (uint8 crop -> points); file size against the
  trained network's memory as the papers count it (`bitface summary`); and, where ../shared/data
  is present, the largest landmark difference from the PyTorch model over the whole test set of
  its scheme (CUHK test; HELEN testset for 68), and from the same PyTorch model evaluated in
  float64 (as PyTorch's own float32 result is).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import filecmp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bitface import bundled  # noqa: E402
from bitface.evaluate.results import markdown_table, pin_single_thread, provenance, write_results  # noqa: E402
from bitface.export.convert import export_model  # noqa: E402
from bitface.export.format import PackedModel, header_bytes, pack_signs  # noqa: E402
from bitface.models import create_model  # noqa: E402
from bitface.models.model_file import load_model  # noqa: E402
from bitface.models.summary import summarize  # noqa: E402
from bitface.runtime import _native  # noqa: E402
from bitface.runtime.model import PackedLandmarker  # noqa: E402
from bitface.runtime.native import Network  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
TEST_SETS = {  # landmark scheme: the test set the packed and PyTorch models are compared on
    "5pt": DATA / "cuhk_lfw_net_5pt" / "testImageList.txt",
    "68pt": DATA / "300w_helen_68pt" / "testset",
}
# (in channels, out channels, kernel, input height = width, padding)
LAYERS = [
    (40, 60, 3, 18, 0),  # 40-60-80-100: conv 2
    (60, 80, 3, 8, 0),  # conv 3
    (20, 40, 3, 18, 1),  # 8-conv net: conv 3
    (64, 64, 3, 32, 1),  # hourglass-sized layers
    (128, 128, 3, 16, 1),
    (128, 128, 3, 32, 1),
    (256, 256, 3, 8, 1),
    (256, 256, 3, 16, 1),
    (256, 256, 1, 16, 0),
]


def best_of(fn, calls: int) -> float:
    """Seconds per call: the fastest of `calls` timed calls."""
    best = float("inf")
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def interleaved(candidates: dict, rounds: int, calls: int) -> dict[str, float]:
    """Median over rounds of each candidate's best call; candidates alternate within every round."""
    times = {name: [] for name in candidates}
    for fn in candidates.values():
        fn()  # warm up
    for _ in range(rounds):
        for name, fn in candidates.items():
            times[name].append(best_of(fn, calls))
    return {name: statistics.median(values) for name, values in times.items()}


def measure_fp32_peak(rounds: int, side: int = 512) -> float:
    """FP32 MACs per second of a single-thread matrix product (sgemm runs near the FMA peak)."""
    a, b = torch.randn(side, side), torch.randn(side, side)
    return side**3 / min(best_of(lambda: torch.mm(a, b), 10) for _ in range(rounds))


def measure_peak(rounds: int, iterations: int = 2_000_000) -> float:
    """Binary MACs per second of the micro-benchmark: the best of `rounds` runs."""
    _native.peak(iterations // 10)
    rates = []
    for _ in range(rounds):
        t = time.perf_counter()
        macs = _native.peak(iterations)
        rates.append(macs / (time.perf_counter() - t))
    return max(rates)


def layer_plan(cin: int, cout: int, k: int, size: int, pad: int) -> Network:
    """sign(input) -> [pad] -> the layer (to sign bits) -> a 1x1 binary layer to floats."""
    rng = np.random.default_rng(0)
    graph, tensors = [], {}
    if pad:
        graph.append({"op": "pad", "pad": [pad] * 4})
    for cin_, cout_, k_ in ((cin, cout, k), (cout, 16, 1)):
        i = len(graph)
        graph.append({"op": "binconv", "in_channels": cin_, "kernel": [k_, k_], "binary_input": True})
        tensors[f"{i}.bits"] = pack_signs(rng.normal(size=(cout_, cin_, k_, k_)))
        tensors[f"{i}.scale"] = rng.uniform(0.5, 1.5, cout_).astype(np.float32)
        tensors[f"{i}.shift"] = rng.normal(0, 3, cout_).astype(np.float32)
    return Network(PackedModel(graph, tensors, {"input_shape": [cin, size, size]}))


def bench_layers(rounds: int) -> list[dict]:
    rows = []
    for cin, cout, k, size, pad in LAYERS:
        net = layer_plan(cin, cout, k, size, pad)
        stage = 2  # input, sign, the layer, the 1x1 layer
        image = np.random.default_rng(1).normal(size=(cin, size, size)).astype(np.float32)
        x = torch.randn(1, cin, size, size).to(memory_format=torch.channels_last)
        w = torch.randn(cout, cin, k, k).to(memory_format=torch.channels_last)
        conv = lambda x=x, w=w, pad=pad: torch.nn.functional.conv2d(x, w, padding=pad)  # noqa: E731
        conv(), net.plan.profile(image, 5)
        out = size + 2 * pad - k + 1
        macs = out * out * cout * cin * k * k
        ours, theirs, fractions = [], [], []
        for _ in range(rounds):  # alternate: the peak, our stage's best of 50, torch's best of 50
            peak = measure_peak(3, 200_000)
            ours.append(net.plan.profile(image, 50)[stage])
            theirs.append(best_of(conv, 50))
            fractions.append(macs / ours[-1] / peak)
        ours, theirs = statistics.median(ours), statistics.median(theirs)
        rows.append(
            {
                "shape": f"{cin}->{cout} {k}x{k} {size}x{size} pad {pad}",
                "binary_macs": macs,
                "ours_us": ours * 1e6,
                "torch_fp32_us": theirs * 1e6,
                "gbmacs": macs / ours / 1e9,
                "peak_fraction": statistics.median(fractions),
                "speedup_vs_torch": theirs / ours,
            }
        )
        print(rows[-1], flush=True)
    return rows


def onnx_session(network: torch.nn.Module, shape: tuple[int, ...]):
    import onnxruntime as ort

    path = Path(tempfile.mkdtemp()) / "fp32.onnx"
    torch.onnx.export(network, (torch.zeros(shape),), str(path), input_names=["image"], dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def landmark_agreement(model, packed: PackedLandmarker) -> dict | None:
    """The largest landmark difference between the packed and the PyTorch model on the whole test set,
    and how far float32 itself decides the landmarks: the same PyTorch model evaluated in float64 (a
    pre-sign value within float32 rounding of 0, or two near-equal heatmap peaks, can go either way)."""
    source = TEST_SETS.get(model.scheme.name)
    if source is None or not source.exists():
        return None
    from bitface.train.trainer import read_samples

    samples = read_samples(str(source), None)
    ours = packed.predict_samples(samples).points
    theirs = model.predict_samples(samples).points
    exact = dataclasses.replace(model, network=copy.deepcopy(model.network).double()).predict_samples(samples).points

    def off(a, b):  # faces with any point more than 1e-3 px apart
        return np.flatnonzero(np.abs(a - b).max((-1, -2)) > 1e-3)

    error = np.abs(ours - theirs).max(-1)  # per face and point
    return {
        "faces": len(samples),
        "test_set": str(source.relative_to(DATA)),
        "max_px": float(error.max()),
        "mean_px": float(error.mean()),
        "faces_over_1e-3_px": len(off(ours, theirs)),
        "faces_over_1e-3_px_from_torch_fp64": len(off(ours, exact)),
        "torch_fp32_faces_over_1e-3_px_from_fp64": len(off(theirs, exact)),
        "faces_off_indices": off(ours, theirs).tolist(),  # indices into the test set, for a closer look
    }


def fp32_twin(model) -> torch.nn.Module:
    """The same architecture with real-valued layers (what the binary network is compared against)."""
    real = {"regression": {"method": "cnn"}, "hourglass": {"binarization": "real"}}[model.model_name]
    return create_model(model.model_name, **dict(model.model_options, **real)).eval()


def bench_network(name: str, checkpoint: Path, rounds: int, limit: float) -> dict:
    model = load_model(checkpoint)
    packed_model = export_model(model)
    with tempfile.TemporaryDirectory() as folder:
        path = packed_model.save(Path(folder) / "m.bitface")
        file_bytes = path.stat().st_size
        metadata_bytes = header_bytes(path)
    packed = PackedLandmarker(packed_model, name)
    shape = (1, model.input.channels, model.crop.size, model.crop.size)
    fp32 = fp32_twin(model).to(memory_format=torch.channels_last)
    session = onnx_session(fp32, shape)
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    xt = torch.from_numpy(x).to(memory_format=torch.channels_last)
    crop = np.random.default_rng(0).integers(0, 256, (1, model.crop.size, model.crop.size), dtype=np.uint8)
    calls = max(5, min(200, int(0.05 / best_of(lambda: packed.network(x), 3))))  # about 50 ms a candidate
    with torch.inference_mode():
        t = interleaved(
            {
                "runtime": lambda: packed.network(x),
                "face": lambda: packed.predict_crops(crop),
                "torch_fp32": lambda: fp32(xt),
                "torch_binary_sim": lambda: model.network(xt),
                "onnxruntime_fp32": lambda: session.run(None, {"image": x}),
            },
            rounds,
            calls,
        )
    # the papers' count of the trained network (the model card's), not of the packed graph: the gap
    # between the two is what the packed form stores beyond it
    paper_bits = summarize(model.network, shape[1:]).memory_bits
    row = {
        "network": name,
        "structure": model.model_options.get("structure") or model.model_options.get("block"),
        "method": model.model_options.get("method") or model.model_options.get("binarization"),
        "kernel_path": packed.network.path,
        "runtime_ms": t["runtime"] * 1e3,
        "face_us": t["face"] * 1e6,
        "torch_fp32_ms": t["torch_fp32"] * 1e3,
        "torch_binary_sim_ms": t["torch_binary_sim"] * 1e3,
        "onnxruntime_fp32_ms": t["onnxruntime_fp32"] * 1e3,
        "speedup_vs_torch": t["torch_fp32"] / t["runtime"],
        "speedup_vs_onnxruntime": t["onnxruntime_fp32"] / t["runtime"],
        "fraction_of_physical_limit": t["torch_fp32"] / t["runtime"] / limit,
        "file_bytes": file_bytes,
        "paper_bytes": paper_bits / 8,
        "file_over_paper": file_bytes / (paper_bits / 8) - 1,
        "metadata_bytes": metadata_bytes,
        "tensors_over_paper": (file_bytes - metadata_bytes) / (paper_bits / 8) - 1,
        "agreement_with_torch": landmark_agreement(model, packed),
    }
    print({k: v for k, v in row.items()}, flush=True)
    return row


def networks() -> list[tuple[str, Path]]:
    found = [  # every bundled binary model (1-bit weights and activations), from its committed checkpoint
        (f"bundled {row['name']}", ROOT / "models" / f"{row['name']}.safetensors")
        for row in bundled.list_models()
        if row["method"] in ("xnor", "acn1bit")  # the methods that binarize activations too
    ]
    runs = ROOT / "runs" / "acn_table2"
    for structure in ("10-20-40-80", "20-40-60-80", "40-60-80-100", "20-20-40-40-60-60-80-80"):
        for method in ("xnor", "acn1bit"):
            path = runs / f"{structure}_{method}" / "model.safetensors"
            if path.is_file() and not any(filecmp.cmp(path, other, shallow=False) for _, other in found):
                found.append((f"table2 {structure} {method}", path))  # unless it is a bundled one
    from bitface.train.queue import finished_epochs
    from bitface.train.recipe import load_recipe

    for row in ("bottleneck_xnor", "hpm48_xnor", "hpm_acn1bit"):  # other binary hourglass rows, once trained
        folder = ROOT / "runs" / "hourglass68" / row
        recipe = ROOT / "configs" / "hourglass68" / f"{row}.yaml"
        if (folder / "model.safetensors").is_file() and finished_epochs(folder) >= load_recipe(recipe).train.epochs:
            found.append((f"hourglass68 {row}", folder / "model.safetensors"))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "runtime_speed")
    args = parser.parse_args()
    core = pin_single_thread()
    torch.set_num_threads(1)
    peak, fp32_peak = measure_peak(args.rounds), measure_fp32_peak(args.rounds)
    limit = peak / fp32_peak
    print(f"binary peak {peak / 1e12:.3f} T binary MAC/s, FP32 {fp32_peak / 1e9:.0f} G MAC/s", flush=True)
    layers = bench_layers(args.rounds)
    nets = [bench_network(name, path, args.rounds, limit) for name, path in networks()]
    data = {
        "provenance": provenance(threads=1, core=core, kernel_path=_native.isa(), torch=torch.__version__),
        "peak_bmacs": peak,
        "fp32_peak_macs": fp32_peak,
        "physical_limit": limit,
        "layers": layers,
        "networks": nets,
    }
    body = (
        f"Kernel path `{_native.isa()}`. Binary peak of this core (its XOR + popcount + ADD micro-benchmark): "
        f"{peak / 1e12:.3f} T binary MAC/s at the start of the run; FP32 peak (single-thread sgemm): "
        f"{fp32_peak / 1e9:.0f} G MAC/s; each layer's peak_fraction is against the peak measured in the same round "
        "(median over rounds).\n\n"
        "## Binary layers (sign bits in, thresholded sign bits out)\n\n"
        + markdown_table(
            layers,
            ["shape", "ours_us", "torch_fp32_us", "gbmacs", "peak_fraction", "speedup_vs_torch"],
            {
                "ours_us": ".2f",
                "torch_fp32_us": ".2f",
                "gbmacs": ".0f",
                "peak_fraction": ".2f",
                "speedup_vs_torch": ".1f",
            },
        )
        + "\n## Whole networks, one face (runtime_ms: the network; face_us: uint8 crop to points)\n\n"
        + markdown_table(
            [
                dict(
                    r,
                    max_px=(r["agreement_with_torch"] or {}).get("max_px"),
                    faces_off=(r["agreement_with_torch"] or {}).get("faces_over_1e-3_px"),
                    off_fp64=(r["agreement_with_torch"] or {}).get("faces_over_1e-3_px_from_torch_fp64"),
                    torch_off_fp64=(r["agreement_with_torch"] or {}).get("torch_fp32_faces_over_1e-3_px_from_fp64"),
                )
                for r in nets
            ],
            [
                "network",
                "runtime_ms",
                "face_us",
                "torch_fp32_ms",
                "onnxruntime_fp32_ms",
                "torch_binary_sim_ms",
                "speedup_vs_torch",
                "speedup_vs_onnxruntime",
                "file_bytes",
                "paper_bytes",
                "metadata_bytes",
                "tensors_over_paper",
                "file_over_paper",
                "max_px",
                "faces_off",
                "off_fp64",
                "torch_off_fp64",
            ],
            {
                "runtime_ms": ".4f",
                "face_us": ".1f",
                "torch_fp32_ms": ".4f",
                "onnxruntime_fp32_ms": ".4f",
                "torch_binary_sim_ms": ".4f",
                "speedup_vs_torch": ".1f",
                "speedup_vs_onnxruntime": ".1f",
                "paper_bytes": ".0f",
                "tensors_over_paper": ".1%",
                "file_over_paper": ".1%",
                "max_px": ".2e",
            },
        )
        + "\nmetadata_bytes: the file's JSON header (graph, preprocessing, provenance and the tensor index); "
        "paper_bytes: the trained network as the papers count it (`bitface summary` of the checkpoint, the "
        "model card's size: 1 bit per binary weight, 32 per real weight, XNOR's or ACN's scales and "
        "BatchNorm's 2 values per channel); tensors_over_paper: the rest of the file against it (what the "
        "packed form stores beyond the papers' count, or saves by folding).\n"
        + f"\nThe physical limit of binary over FP32 on this core is about {limit:.1f}x in MACs (the two peaks' "
        "ratio). "
        "max_px: the largest landmark difference from the PyTorch model over the test set of the model's "
        "scheme (CUHK test for 5 points, HELEN testset for 68), in pixels; faces_off: faces of that set "
        "with any point more than 1e-3 px away; off_fp64: the same against the PyTorch model evaluated in "
        "float64; torch_off_fp64: faces on which PyTorch's own float32 evaluation is that far from its "
        "float64 one. Binary layers are integer-exact against the numpy reference; differences come from "
        "float rounding in real layers flipping a sign that sits within rounding of 0 (or a heatmap peak "
        "between two near-equal pixels). off_fp64 against torch_off_fp64 compares ours and PyTorch's float32 "
        "with the same network evaluated in float64.\n"
    )
    write_results(args.out, data, "Native runtime speed (single thread, pinned)", body)


if __name__ == "__main__":
    main()
