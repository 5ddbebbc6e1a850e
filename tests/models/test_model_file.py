import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="model files hold torch networks (train extra)")

from safetensors.torch import save_file  # noqa: E402

from bitface.data.crop import CropSpec  # noqa: E402
from bitface.data.pipeline import InputSpec  # noqa: E402
from bitface.io import DataError, Sample  # noqa: E402
from bitface.models import create_model  # noqa: E402
from bitface.models.model_file import LandmarkModel, calibrate_points_crop, load_model  # noqa: E402
from bitface.schemes import get_scheme  # noqa: E402
from conftest import FACE5, blob_image, write_image  # noqa: E402


def small_model(**options) -> LandmarkModel:
    options = {"structure": "10-20-40-80", "method": "acn1bit", **options}
    return LandmarkModel(
        network=create_model("regression", **options).eval(),
        model_name="regression",
        model_options=options,
        scheme=get_scheme("5pt"),
        crop=CropSpec(size=39, margin=0.05),
        input=InputSpec(),
    )


def test_a_model_file_round_trips_weights_and_settings(tmp_path):
    model = small_model()
    path = model.save(tmp_path / "m.safetensors")
    loaded = load_model(path)
    assert (loaded.model_options, loaded.crop, loaded.input) == (model.model_options, model.crop, model.input)
    crops = np.random.default_rng(1).integers(0, 255, (2, 39, 39), dtype=np.uint8)
    np.testing.assert_array_equal(loaded.predict_crops(crops), model.predict_crops(crops))


def test_a_float64_network_is_evaluated_in_float64():
    """The precision reference of the runtime benchmark: network.double() runs in float64 end to end."""
    import copy
    import dataclasses

    model = small_model(method="cnn")
    exact = dataclasses.replace(model, network=copy.deepcopy(model.network).double())
    x = np.random.default_rng(2).normal(size=(3, 1, 39, 39)).astype(np.float32)
    out32, out64 = model.forward(x), exact.forward(x)
    assert (out32.dtype, out64.dtype) == (np.float32, np.float64)
    np.testing.assert_allclose(out64, out32, atol=1e-5)
    assert not np.array_equal(out64, out32.astype(np.float64))  # not float32 results widened


def test_the_decoding_settings_round_trip_and_bad_ones_are_refused(tmp_path):
    from bitface.data.predictor import settings_from

    model = small_model()
    model.heatmap_smooth = 1.5
    assert load_model(model.save(tmp_path / "m.safetensors")).heatmap_smooth == 1.5
    meta = model.metadata()
    assert settings_from({k: v for k, v in meta.items() if k != "heatmap_smooth"})["heatmap_smooth"] == 0.0  # older
    for bad in (-1, "1.5", True, float("nan")):
        with pytest.raises(ValueError, match="heatmap_smooth"):
            settings_from({**meta, "heatmap_smooth": bad})


def test_bad_model_files_are_named(tmp_path):
    with pytest.raises(DataError, match="no such model file"):
        load_model(tmp_path / "none.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a model")
    with pytest.raises(DataError, match="junk.safetensors: not a readable safetensors"):
        load_model(tmp_path / "junk.safetensors")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(DataError, match="without bitface metadata"):
        load_model(tmp_path / "plain.safetensors")
    model = small_model()
    path = model.save(tmp_path / "m.safetensors")
    model.model_options = {**model.model_options, "structure": "20-40-60-80"}  # weights no longer fit
    model.network = create_model("regression", structure="10-20-40-80", method="acn1bit")
    save_file(
        {k: v for k, v in model.network.state_dict().items() if "fc2" not in k},
        str(path),
        metadata={"bitface": __import__("json").dumps(small_model().metadata())},
    )
    with pytest.raises(DataError, match="inconsistent model file"):
        load_model(path)


def test_predictions_map_back_to_the_original_image_and_unreadable_images_are_counted(tmp_path):
    image = write_image(tmp_path / "face.png", blob_image(FACE5, 120, 100))
    box = np.array([20.0, 22.0, 100.0, 100.0])
    samples = [Sample(image, FACE5, box=box), Sample(tmp_path / "missing.png", FACE5, box=box)]
    model = small_model()
    result = model.predict_samples(samples)
    assert result.indices == [0] and len(result.errors) == 1 and "missing.png" in result.errors[0]
    matrix = model.crop.matrix(box)
    crop = __import__("bitface.data.geometry", fromlist=["warp"]).warp(
        __import__("bitface.io", fromlist=["load_image"]).load_image(image, "gray"), matrix, 39
    )
    in_crop = model.predict_crops(crop[None])[0]
    back = in_crop @ np.linalg.inv(matrix)[:2, :2].T + np.linalg.inv(matrix)[:2, 2]
    np.testing.assert_allclose(result.points[0], back, atol=1e-6)


def test_the_points_crop_reproduces_the_box_crop_for_consistent_faces():
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(50):  # boxes that sit in a fixed relation to the points, at random scales and places
        scale, offset = rng.uniform(0.5, 2.0), rng.uniform(0, 200, 2)
        points = FACE5 * scale + offset
        box = np.array([20, 22, 100, 100]) * scale + np.tile(offset, 2)
        samples.append(Sample("x.png", points, box=box))
    crop = CropSpec(size=39, margin=0.05)
    fallback = calibrate_points_crop(samples, crop)
    for sample in samples[:5]:
        np.testing.assert_allclose(fallback.matrix_for(Sample("x.png", sample.points)), crop.matrix_for(sample))
