"""Seeded train-time image augmentation, per image in NumPy/SciPy (no torchvision).

Every draw comes from the generator the dataset passes in, keyed by ``(seed, epoch, row)``, so a resumed run
and an uninterrupted one see identical pixels whatever the number of loader workers. The transforms are the
ones that make a source dataset teach *generic* features before a shift: zoom and rotation (glyphs of other
sizes and slants), stroke dilation (thicker pens and bold fonts), inversion (dark-on-light images) and
random erasing (occlusion), besides the plain shift / pad-and-crop / flip.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Augment", "check_scale"]


@dataclass(frozen=True)
class Augment:
    """Order: dilate, zoom/rotate about the centre, shift/crop, flip, invert, erase. Zero is the background
    fill, so inversion comes after the geometric steps (their fill turns light with the image).

    - ``shift``: translate by up to this many pixels; ``pad``: random crop back to size after padding.
    - ``hflip``: probability of a horizontal flip (off by default: glyphs change meaning when mirrored).
    - ``scale``: ``(low, high)`` zoom factor drawn uniformly (log scale); above 1 zooms in.
    - ``rotate``: rotation drawn uniformly in ``[-rotate, rotate]`` degrees.
    - ``dilate``: grey dilation by a square of ``0 .. dilate`` extra pixels (thicker strokes).
    - ``invert``: probability of inverting intensities (``max - x``).
    - ``erase``: probability of zeroing one random rectangle of 2-25% of the image (random erasing).
    """

    shift: int = 0
    pad: int = 0
    hflip: float = 0.0
    scale: tuple[float, float] | None = None
    rotate: float = 0.0
    dilate: int = 0
    invert: float = 0.0
    erase: float = 0.0

    def __post_init__(self) -> None:
        if self.scale is not None:
            object.__setattr__(self, "scale", check_scale(self.scale))

    @property
    def active(self) -> bool:
        return bool(self.shift or self.pad or self.hflip or self.scale or self.rotate or self.dilate
                    or self.invert or self.erase)

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.dilate:
            img = _dilate(img, int(rng.integers(0, self.dilate + 1)))
        if self.scale is not None or self.rotate:
            zoom = math.exp(rng.uniform(math.log(self.scale[0]), math.log(self.scale[1]))) if self.scale else 1.0
            angle = rng.uniform(-self.rotate, self.rotate) if self.rotate else 0.0
            img = _affine(img, zoom, angle)
        reach = self.shift + self.pad
        if reach:
            c, h, w = img.shape
            canvas = np.zeros((c, h + 2 * reach, w + 2 * reach), dtype=img.dtype)
            canvas[:, reach:reach + h, reach:reach + w] = img
            dy, dx = (int(v) for v in rng.integers(-reach, reach + 1, size=2))
            img = canvas[:, reach + dy:reach + dy + h, reach + dx:reach + dx + w]
        if self.hflip and rng.random() < self.hflip:
            img = img[:, :, ::-1]
        if self.invert and rng.random() < self.invert:
            img = (255 if img.dtype == np.uint8 else 1.0) - img
        if self.erase and rng.random() < self.erase:
            img = _erase(img, rng)
        return np.ascontiguousarray(img, dtype=img.dtype)


def check_scale(scale: Sequence[float]) -> tuple[float, float]:
    """A zoom range as ``(low, high)`` floats; the one check behind both the config and the dataclass."""
    low, high = (float(v) for v in scale)
    if not 0 < low <= high:
        raise ValueError(f"augment.scale must be [low, high] with 0 < low <= high (e.g. [0.9, 1.5]), got "
                         f"{list(scale)}.")
    return low, high


def _dilate(img: np.ndarray, k: int) -> np.ndarray:
    if k <= 0:
        return img
    from scipy.ndimage import grey_dilation

    return np.stack([grey_dilation(channel, size=(k + 1, k + 1)) for channel in img])


def _affine(img: np.ndarray, zoom: float, angle_deg: float) -> np.ndarray:
    """Zoom and rotate about the image centre (bilinear, zero fill), keeping the size and dtype."""
    from scipy.ndimage import affine_transform

    _, h, w = img.shape
    theta = math.radians(angle_deg)
    # affine_transform maps output coordinates to input ones: the inverse of "rotate by theta, zoom by z".
    inverse = np.array([[math.cos(theta), math.sin(theta)], [-math.sin(theta), math.cos(theta)]]) / zoom
    centre = np.array([(h - 1) / 2.0, (w - 1) / 2.0])
    offset = centre - inverse @ centre
    out = [affine_transform(channel.astype(np.float32), inverse, offset=offset, order=1, mode="constant", cval=0.0)
           for channel in img]
    stacked = np.stack(out)
    if img.dtype == np.uint8:
        return np.clip(np.rint(stacked), 0, 255).astype(np.uint8)
    return stacked.astype(img.dtype)


def _erase(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    _, h, w = img.shape
    area = rng.uniform(0.02, 0.25) * h * w
    aspect = math.exp(rng.uniform(math.log(0.3), math.log(3.3)))
    eh = max(1, min(h, round(math.sqrt(area * aspect))))
    ew = max(1, min(w, round(math.sqrt(area / aspect))))
    top, left = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
    img = img.copy()
    img[:, top:top + eh, left:left + ew] = 0
    return img
