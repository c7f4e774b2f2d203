"""Input sources: files and cubes opened as a lazy SeriesCube on one patch-snapped output grid.

>>> from changescout.sources import open_series
>>> cube = open_series("path/to/folder_of_geotiffs", patch_size=16)  # doctest: +SKIP
"""

from .registry import available_sources, check_exists, get_source, open_series, sniff_kind
from .warp import GridSpec

__all__ = ["GridSpec", "available_sources", "check_exists", "get_source", "open_series", "sniff_kind"]
