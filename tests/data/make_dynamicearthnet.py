"""Seeded generator of a tiny FAKE DynamicEarthNet dataset in the official layout (the real data is not here).

    <out>/planet.<zone>/<cube>/PF-SR/YYYY-MM-DD.tif                      4 bands B, G, R, NIR, uint16 x 10000
    <out>/labels/<cube>_<zone>/Labels/Raster/<tile>/<tile>-YYYY_MM_01.tif  7 bands, 255 in the class's band

Instead of 1024 x 1024 px the images are :data:`SIZE` px at 3 m in UTM (EPSG:326<zone>), with images on the
days :data:`DAYS` of each month of :data:`MONTHS`. Every cube has the same planted land cover (class indices of
``changescout.sources.dynamicearthnet.CLASSES``):

* left half agriculture (1), right half forest (2), a water square (5) at :data:`WATER`;
* :data:`BUILT` turns agriculture -> impervious (0) from the second month on (the only real change);
* :data:`SNOW` is snow & ice (6) in the first month only (ignored), agriculture afterwards;
* :data:`UNLABELLED` has no class band set in any month (ignored).

The second cube's labels use the ``YYYY-MM-01`` spelling that also occurs in the real data, sits under an extra
``<lon-lat>`` folder when ``nested=True``, and an ``.aux.xml`` file lies beside one label. The numbers mean
nothing: they only exercise the loaders. ``python tests/data/make_dynamicearthnet.py OUT`` writes one into OUT.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
from affine import Affine

SEED = 11
CUBES = (("1311_3077_13", "10N"), ("2196_3885_13", "17N"))
MONTHS = ("2018-01", "2018-02", "2018-03")
DAYS = (1, 15)
SIZE = 64
RES = 3.0
BUILT = (slice(8, 24), slice(8, 24))
SNOW = (slice(40, 48), slice(8, 16))
WATER = (slice(40, 52), slice(40, 52))
UNLABELLED = (slice(0, 4), slice(56, 64))
#: Surface reflectance x 10000 (blue, green, red, NIR) per class index.
SPECTRA = {0: (1500, 1600, 1700, 2000), 1: (500, 800, 600, 3500), 2: (300, 500, 300, 3000), 3: (400, 600, 500, 1500),
           4: (1100, 1300, 1600, 2200), 5: (600, 500, 300, 100), 6: (8000, 8000, 8000, 7000)}


def class_map(month: int, size: int = SIZE) -> np.ndarray:
    """Planted classes of month index ``month`` (``(size, size)`` uint8; 255 where no class is set)."""
    classes = np.full((size, size), 1, np.uint8)
    classes[:, size // 2 :] = 2
    classes[WATER] = 5
    if month >= 1:
        classes[BUILT] = 0
    if month == 0:
        classes[SNOW] = 6
    classes[UNLABELLED] = 255
    return classes


def transform_of(index: int, size: int = SIZE) -> Affine:
    return Affine(RES, 0, 500_000.0 + 10_000 * index, 0, -RES, 4_400_000.0 + size * RES)


def crs_of(zone: str) -> str:
    return f"EPSG:{32600 + int(zone[:-1])}" if zone.endswith("N") else f"EPSG:{32700 + int(zone[:-1])}"


def make_dataset(out, *, cubes=CUBES, months=MONTHS, days=DAYS, size: int = SIZE, seed: int = SEED,
                 nested: bool = False) -> Path:
    """Write the fake dataset into ``out`` and return it (see the module docstring)."""
    out = Path(out)
    for index, (cube, zone) in enumerate(cubes):
        crs, transform = crs_of(zone), transform_of(index, size)
        planet = out / f"planet.{zone}" / ("9E-42N" if nested and index == 1 else "") / cube / "PF-SR"
        tile = f"{zone}-{122 - index}W-{40 - index}N-L3H-SR"
        raster = out / "labels" / f"{cube}_{zone}" / "Labels" / "Raster" / tile
        for m, month in enumerate(pd.PeriodIndex(list(months), freq="M")):
            classes = class_map(m, size)
            for day in days:
                rng = np.random.default_rng([seed, index, m, day])
                image = _image(classes, rng)
                _write(planet / f"{month.year}-{month.month:02d}-{day:02d}.tif", image, crs, transform)
            sep = "-" if index == 1 else "_"
            name = f"{tile}-{month.year}{sep}{month.month:02d}{sep}01.tif"
            _write(raster / name, _one_hot(classes), crs, transform)
            if index == 1 and m == 0:
                (raster / f"{name}.aux.xml").write_text("<PAMDataset/>\n")
    return out


def _image(classes: np.ndarray, rng) -> np.ndarray:
    spectra = np.array([SPECTRA[c] if c in SPECTRA else SPECTRA[1] for c in range(256)], np.float64)
    values = spectra[classes].transpose(2, 0, 1) + rng.normal(0, 40, (4, *classes.shape))
    return np.clip(values, 1, 10000).astype(np.uint16)


def _one_hot(classes: np.ndarray) -> np.ndarray:
    hot = np.zeros((7, *classes.shape), np.uint8)
    for c in range(7):
        hot[c][classes == c] = 255
    return hot


def _write(path: Path, data: np.ndarray, crs: str, transform: Affine) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0], dtype=data.dtype.name,
                   crs=crs, transform=transform)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


if __name__ == "__main__":
    print(make_dataset(sys.argv[1] if len(sys.argv) > 1 else "dynamicearthnet_fake"))
