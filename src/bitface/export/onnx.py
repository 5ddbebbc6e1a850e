"""ONNX export of a checkpoint: real-valued networks, and the float simulation of binary ones (signs
and scales computed as in training), checked against the PyTorch output with onnxruntime."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from ..models.model_file import LandmarkModel

OPSET = 17


def export_onnx(model: LandmarkModel, path: str | Path, check: bool = True) -> dict:
    """Write PATH (input 'image' (batch, C, H, W) float32, normalized as the model's metadata says;
    output 'output'). With check, run onnxruntime on random input and return the largest difference."""
    path = Path(path)
    network = model.network.eval()
    shape = (1, model.input.channels, model.crop.size, model.crop.size)
    example = torch.zeros(shape)
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on the quantizers' Python branches
        torch.onnx.export(
            network,
            (example,),
            str(tmp),
            input_names=["image"],
            output_names=["output"],
            dynamic_axes={"image": {0: "batch"}, "output": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    tmp.replace(path)
    report = {"path": str(path), "opset": OPSET, "input_shape": list(shape[1:])}
    if check:
        report["max_abs_diff"] = check_onnx(network, path, shape)
    return report


def check_onnx(network: torch.nn.Module, path: Path, shape: tuple[int, ...], batch: int = 8) -> float:
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeError("checking an ONNX export needs onnxruntime (pip install onnxruntime)") from None
    x = np.random.default_rng(0).normal(size=(batch, *shape[1:])).astype(np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x})[0]
    with torch.no_grad():
        expected = network(torch.from_numpy(x)).numpy()
    return float(np.abs(got - expected).max())
