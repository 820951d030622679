"""The seeded image augmentation: each transform against a hand-computed result, dtype and determinism."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from headstart.config import AugmentConfig
from headstart.data.augment import Augment, _affine


def _rng(key: int = 0) -> np.random.Generator:
    return np.random.default_rng((5, 0, key, 0))


def test_rotation_and_zoom_about_the_centre() -> None:
    x = np.zeros((1, 5, 5), np.uint8)
    x[0, 0, 2] = 200  # top middle
    np.testing.assert_array_equal(_affine(x, 1.0, 90.0), np.rot90(x, k=1, axes=(1, 2)))  # counter-clockwise
    np.testing.assert_array_equal(_affine(x, 1.0, 0.0), x)
    square = np.zeros((1, 9, 9), np.float32)
    square[0, 3:6, 3:6] = 1.0  # 3x3 block at the centre
    zoomed = _affine(square, 2.0, 0.0)
    assert zoomed.dtype == np.float32
    assert 5 * 5 <= (zoomed[0] > 0.5).sum() <= 7 * 7  # twice the side: ~6x6 bright pixels
    assert zoomed[0, 4, 4] == 1.0 and zoomed[0, 0, 0] == 0.0  # centre kept, corner stays background


def test_dilate_invert_erase() -> None:
    x = np.zeros((1, 9, 9), np.uint8)
    x[0, 4, 4] = 255
    sizes = {int((Augment(dilate=2)(x, _rng(k)) > 0).sum()) for k in range(30)}
    assert sizes == {1, 4, 9}  # 0, 1 or 2 extra pixels: 1x1, 2x2, 3x3 blocks
    np.testing.assert_array_equal(Augment(invert=1.0)(x, _rng()), 255 - x)
    floats = np.full((1, 9, 9), 0.25, np.float32)
    np.testing.assert_allclose(Augment(invert=1.0)(floats, _rng()), 0.75)
    erased = Augment(erase=1.0)(np.full((2, 20, 20), 7, np.uint8), _rng())
    hole = erased[0] == 0
    assert 0.02 * 400 - 10 <= hole.sum() <= 0.25 * 400 + 10 and (erased[1] == 0).sum() == hole.sum()
    rows, cols = np.nonzero(hole)
    assert hole[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # one rectangle, both channels


def test_seeded_and_shape_preserving() -> None:
    img = np.random.default_rng(0).integers(0, 256, size=(3, 12, 16), dtype=np.uint8)
    aug = Augment(shift=2, scale=(0.8, 1.5), rotate=15, dilate=1, invert=0.5, erase=0.5, hflip=0.5)
    out = aug(img, _rng(3))
    assert out.shape == img.shape and out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, aug(img, _rng(3)))  # same key, same pixels (resume-safe)
    assert len({aug(img, _rng(k)).tobytes() for k in range(6)}) == 6
    assert not Augment().active and Augment(erase=0.1).active and Augment(scale=(1.0, 1.2)).active


def test_config_checks_the_zoom_range() -> None:
    cfg = AugmentConfig(scale=[0.9, 1.5], rotate=10, dilate=1)
    assert Augment(**cfg.model_dump()) == Augment(scale=(0.9, 1.5), rotate=10.0, dilate=1)  # what fit builds
    with pytest.raises(ValidationError, match=r"scale must be \[low, high\] with 0 < low <= high .*got \[1.5, 0.9\]"):
        AugmentConfig(scale=[1.5, 0.9])
    with pytest.raises(ValidationError, match="less than or equal to 1"):
        AugmentConfig(invert=1.5)
    with pytest.raises(ValueError, match=r"augment\.scale must be"):
        Augment(scale=(0.0, 1.0))
