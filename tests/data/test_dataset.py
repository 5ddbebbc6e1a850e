import numpy as np
import pytest

from conftest import FACE5, blob_image, write_image

torch = pytest.importorskip("torch", reason="the Dataset glue needs the train extra (torch)")

from bitface.data import AugmentSpec, CropSpec, InputSpec, OutputSpace, decode_argmax, to_original  # noqa: E402
from bitface.data.cache import PatchCache  # noqa: E402
from bitface.data.dataset import HeatmapSpec, LandmarkDataset, make_loader  # noqa: E402
from bitface.io import Sample  # noqa: E402
from bitface.schemes import FIVE, IBUG68  # noqa: E402

AUG = AugmentSpec(rotation=20, scale=(0.9, 1.1), translation=0.05, flip=0.5, brightness=0.1, contrast=0.2)


@pytest.fixture
def samples(tmp_path):
    rng = np.random.default_rng(0)
    out = []
    for i in range(10):
        pts = FACE5 + rng.normal(0, 2, FACE5.shape)
        path = write_image(tmp_path / f"f{i}.png", blob_image(pts, 120, 100))
        out.append(Sample(image_path=path, points=pts, box=np.array([25, 20, 95, 100.0]), source=f"f{i}"))
    return out


def _collect(loader):
    return torch.cat([b["image"] for b in loader]), torch.cat([b["points"] for b in loader])


def test_items_are_reproducible_whatever_the_worker_count(samples):
    ds = LandmarkDataset(samples, FIVE, CropSpec(40, margin=0.1), augment=AUG, seed=3)
    one = _collect(make_loader(ds, 4, shuffle=False, workers=0))
    two = _collect(make_loader(ds, 4, shuffle=False, workers=2))
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])
    ds.set_epoch(1)
    other = _collect(make_loader(ds, 4, shuffle=False, workers=2))
    assert not torch.equal(one[1], other[1])  # a new epoch draws new augmentations, also in workers


def test_cached_patches_give_the_same_geometry(samples, tmp_path):
    crop = CropSpec(40, margin=0.1)
    cache = PatchCache.build(samples, crop, InputSpec(), directory=tmp_path / "cache", progress=False)
    again = PatchCache.build(samples, crop, InputSpec(), directory=tmp_path / "cache", progress=False)
    np.testing.assert_array_equal(cache.patches, again.patches)  # second build is a load
    plain = LandmarkDataset(samples, FIVE, crop, augment=AUG)
    cached = LandmarkDataset(samples, FIVE, crop, augment=AUG, cache=cache)
    for i in range(len(samples)):
        a, b = plain[i], cached[i]
        assert torch.equal(a["points"], b["points"]) and torch.equal(a["matrix"], b["matrix"])
        assert (a["image"] - b["image"]).abs().mean() < 0.03  # one extra resampling, in [-1, 1] units


def test_two_runs_writing_one_cache_at_once_both_succeed(samples, tmp_path, monkeypatch):
    # two training runs started together build the same cache; the first writer's file must not be
    # renamed away under the second (this failed a two-row training queue)
    import bitface.data.cache as cache_module

    crop, real_savez, writes = CropSpec(40, margin=0.1), np.savez, []

    def savez_with_a_rival(file, **arrays):
        real_savez(file, **arrays)
        if not writes:  # while the first writer holds its temporary file, the rival writes and renames
            writes.append(1)
            PatchCache.build(samples, crop, InputSpec(), directory=tmp_path / "cache", progress=False)

    monkeypatch.setattr(cache_module.np, "savez", savez_with_a_rival)
    cache = PatchCache.build(samples, crop, InputSpec(), directory=tmp_path / "cache", progress=False)
    loaded = PatchCache.build(samples, crop, InputSpec(), directory=tmp_path / "cache", progress=False)
    np.testing.assert_array_equal(cache.patches, loaded.patches)
    assert not list((tmp_path / "cache").glob("*.tmp*"))  # no temporary file left behind


def test_cache_leaves_out_undecodable_images(samples, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    bad = Sample(image_path=tmp_path / "bad.png", points=FACE5, box=np.array([25, 20, 95, 100.0]), source="bad")
    cache = PatchCache.build([*samples, bad], CropSpec(40), InputSpec(), progress=False)
    assert len(cache.kept) == len(samples) and "bad.png" in cache.errors[0]
    assert len(LandmarkDataset([*samples, bad], FIVE, CropSpec(40), cache=cache)) == len(samples)


def test_heatmap_targets_decode_back_to_original_points(samples):
    ds = LandmarkDataset(samples, FIVE, CropSpec(64, margin=0.1), output="heatmap", heatmap=HeatmapSpec(4, 1.0))
    item = ds[2]
    assert item["target"].shape == (5, 16, 16) and item["image"].shape == (1, 64, 64)
    decoded = decode_argmax(item["target"].numpy())
    back = to_original(OutputSpace("heatmap", 16, 4).to_crop(decoded.points), item["matrix"].numpy())
    assert np.abs(back - samples[2].points).max() < 1e-3


def test_dataset_refuses_mismatched_points():
    with pytest.raises(ValueError, match="do not have 68 points"):
        LandmarkDataset([Sample(image_path=None, points=FACE5)], IBUG68, CropSpec(32))


def test_a_cache_of_other_samples_is_refused(samples):
    cache = PatchCache.build(samples[:3], CropSpec(40), InputSpec(), progress=False)
    with pytest.raises(ValueError, match="holds 3 faces but 10 samples"):
        LandmarkDataset(samples, FIVE, CropSpec(40), cache=cache)
