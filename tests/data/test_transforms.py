"""Preprocessing: aspect kept, letterbox for other shapes, portrait turned, views invertible."""

import numpy as np
import pytest
import torch
from PIL import Image

from skinlesion.data.transforms import VIEWS, Augmentation, Preprocessing, apply_view


def _image(w: int, h: int) -> Image.Image:
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2] = (200, 30, 30)  # red top half: lets us see orientation and padding
    return Image.fromarray(a)


def test_same_aspect_fills_the_whole_frame():
    out = Preprocessing(width=64, height=48).fit(_image(200, 150))
    assert out.size == (64, 48)
    assert np.asarray(out)[0, 0, 0] > 150 and np.asarray(out)[-1, 0, 0] < 20


def test_other_aspect_is_letterboxed_with_the_mean_colour():
    prep = Preprocessing(width=64, height=48)
    out = np.asarray(prep.fit(_image(200, 100)))  # 2:1 -> 64x32 content, 8 rows of padding each side
    assert out.shape == (48, 64, 3)
    assert tuple(out[0, 0]) == prep.fill and tuple(out[-1, 0]) == prep.fill
    assert out[10, 0, 0] > 150  # the image itself starts below the top band
    # the padding normalises to (about) zero
    assert prep.normalize(torch.from_numpy(out.copy()).permute(2, 0, 1)[None])[0, :, 0, 0].abs().max() < 0.01


def test_portrait_is_turned_to_landscape_not_shrunk():
    out = Preprocessing(width=64, height=48).fit(_image(150, 200))
    arr = np.asarray(out)
    assert out.size == (64, 48)
    assert not (arr == Preprocessing().fill).all(axis=2).any()  # no letterbox band needed


def test_normalised_batch_shape_and_range():
    x = Preprocessing(width=32, height=24)([_image(200, 150), _image(100, 75)])
    assert x.shape == (2, 3, 24, 32) and x.dtype == torch.float32
    assert -1.01 <= float(x.min()) and float(x.max()) <= 1.01


@pytest.mark.parametrize("view", VIEWS)
def test_each_view_is_its_own_inverse(view):
    x = torch.arange(24.0).view(1, 1, 4, 6)
    assert torch.equal(apply_view(apply_view(x, view), view), x)


def test_unknown_view_and_bad_config_are_rejected():
    with pytest.raises(ValueError, match="hflip"):
        apply_view(torch.zeros(1, 1, 2, 2), "rot90")
    with pytest.raises(ValueError, match="resample"):
        Preprocessing(resample="nearest")


def test_preprocessing_round_trips_through_its_dict():
    prep = Preprocessing(width=96, height=72, resample="bilinear")
    assert Preprocessing.from_dict(prep.to_dict()) == prep


def test_augmentation_is_seeded():
    batch = torch.randint(0, 255, (4, 3, 8, 8), dtype=torch.uint8)
    aug = Augmentation()
    a = aug(batch, torch.Generator().manual_seed(3))
    b = aug(batch, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.dtype == torch.uint8 and not torch.equal(a, batch)
