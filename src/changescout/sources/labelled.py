"""A labelled date pair of a change-detection dataset (OSCD city, A/B/label pair): what a benchmark scores."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import xarray as xr


@dataclass(eq=False)
class LabelledPair:
    """Its two-date cube, the change ``label`` and where the label can be trusted (``valid``).

    ``label`` and ``valid`` are ``(H, W)`` bool arrays on the cube's grid; ``valid`` is False where either date
    has no data in some band. ``files`` names the files read.
    """

    name: str
    cube: xr.DataArray
    label: np.ndarray
    valid: np.ndarray
    files: dict = field(default_factory=dict)

    @property
    def change_fraction(self) -> float:
        return float(self.label[self.valid].mean()) if self.valid.any() else float("nan")
