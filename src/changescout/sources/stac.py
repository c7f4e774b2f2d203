"""STAC items as a series: a static catalog or collection (``catalog.json``/``collection.json``, or the folder
holding it, as pystac writes them), or a search's results saved as an ItemCollection (a GeoJSON
``FeatureCollection`` of items; ``item-collection.json``, or the folder holding it, as ``stac-asset download``
writes them with local copies of the assets).

An item's date is the solar day of its ``datetime`` (else its ``start_datetime``): its UTC time shifted by the
longitude of its bbox (:func:`_by_date`; the UTC day without a bbox). Items of one date are the tiles of one pass
(Sentinel-2's MGRS tiles, Landsat's WRS rows), mosaicked: each pixel is read from the first of them, by item id,
that has data there (:class:`.warp.WarpedSeries`). Items of one date that repeat one acquisition (reprocessed, or
of another baseline: acquired within minutes, of one processing level, of the same Sentinel-2 MGRS tile or Landsat
WRS path/row, or, without those properties, with bboxes sharing more than 80 % of the smaller) are one: the newest
is read (the highest processing baseline, then the latest ``updated`` or ``created``, then the last id), and the
run names those left out (:func:`_newest`). A tile imaged twice a day from neighbouring orbits (at high latitudes)
is two acquisitions, mosaicked. Other items of one date over much the same ground are refused, and
so are tiles of one date that say different processing baselines (radiometry reads one per date).

An item's bands are its raster assets (GeoTIFF, COG, JPEG 2000), named by their asset keys: those with the
``reflectance`` role when any has it (Landsat Collection 2, Earth Search), else the ``data`` ones (Planetary
Computer's Sentinel-2), without thumbnails, overviews, true-colour images, multi-band assets, Sentinel-2's
aerosol and water-vapour layers, angle layers (``SAA``, ``SZA``, ``VAA``, ``VZA``) and the thermal ``B10`` and ``B11``
of HLS L30 items. HLS S30 and L30 items together are read under S30's band names, the bands both products have
kept (an item lacking a band the other items of its product have is refused), and an L30 item that shares its
date and tile with an S30 item left out for it, as a folder of their files is read (:mod:`.geotiff`; the cube's
``band_harmonisation`` and ``hls_second_sensor`` say so); with other products' items they are refused. ``bands`` (``--bands``) selects them by asset key, by the band name their
``eo:bands``/``bands`` give (``B04``, ``SR_B4``) or by common name (``red``: where one asset has it). Of two
assets of one band (Earth Search's ``red`` and ``red-jp2``) the GeoTIFF is read. Every item must hold the
bands of the first. A mask asset (``SCL``, ``qa_pixel``, ``Fmask``) is the date's quality mask, read by the
convention its name says (an ``Fmask`` of an ``HLS.`` item by HLS's bit flags).

Values: the ``scale`` and ``offset`` of an asset's ``raster:bands`` (or STAC 1.1 ``bands``) are applied as a
GeoTIFF's declared ones are (:func:`.warp.open_scenes`) unless ``scale_factor``/``offset`` are given, and its
``nodata`` is no data as a GeoTIFF's own is (where the file declares none, its 0 is then no unsaid nodata); an item
that says Earth Search already applied Sentinel-2's offset (``earthsearch:boa_offset_applied``) is read as
DN / 10000. Otherwise the radiometry stage
reads each date's product from the item (``s2:product_uri``, ``landsat:scene_id`` or its id) and its
``s2:processing_baseline``, as for files named after their products.

Assets are read where their hrefs point: local files (relative hrefs from the item's file), or URLs that GDAL
reads over the network (``https://``: Earth Search's COGs; ``s3://`` with the AWS settings GDAL reads, such as
``AWS_NO_SIGN_REQUEST=YES`` for public buckets; Planetary Computer's hrefs once signed, which expire). A URL
is read in byte ranges, window by window; config.json records it by the digest of its URL, not of its content.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from ..cube import check_band_names
from ..errors import SourceError
from .dates import hls_product, parse_baseline, parse_level
from .masks import convention_for, infer_convention, is_mask_name
from .warp import DEFAULT_SCALE, MOSAIC_OVERLAP, Layer, Scene, is_remote, open_scenes, shared_fraction, shown

#: Files a folder of a static catalog is opened by, in this order.
ROOT_FILES = ("catalog.json", "collection.json", "item-collection.json")
_RASTER_TYPES = ("image/tiff", "image/vnd.stac.geotiff", "image/jp2")
_RASTER_SUFFIXES = (".tif", ".tiff", ".jp2")
#: Asset roles that are never a band.
_NOT_BANDS = {"thumbnail", "overview", "visual", "metadata"}
#: Asset keys of raster layers that are not reflectance (Sentinel-2 L2A aerosol optical thickness, water vapour,
#: the true-colour image).
_AUXILIARY = {"aot", "wvp", "tci", "visual", "saa", "sza", "vaa", "vza"}  # (the last: HLS's and Landsat's angles)
_STAC_TYPES = {"Catalog", "Collection", "FeatureCollection", "Feature"}


def sniff(path) -> bool:
    """A folder holding ``catalog.json``, ``collection.json`` or ``item-collection.json``, or a ``.json`` file of
    STAC."""
    p = Path(path)
    if p.is_dir():
        return any((p / name).is_file() for name in ROOT_FILES)
    return p.is_file() and p.suffix.lower() in (".json", ".geojson") and _stac_type(p) is not None


def _stac_type(path: Path) -> str | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("type") not in _STAC_TYPES:
        return None
    if doc["type"] == "FeatureCollection":  # any GeoJSON is one: its features must be STAC items
        features = doc.get("features") or []
        return doc["type"] if features and all(isinstance(f, dict) and "stac_version" in f for f in features) else None
    return doc["type"] if "stac_version" in doc else None


def open(path, *, bands=None, grid=None, patch_size=16, mask=None, mask_convention=None, chunks=1024, level=None,
         scale_factor=None, offset=None):
    """Open STAC items as a SeriesCube (see the module docstring)."""
    if mask is not None:
        raise SourceError("takes its masks from the items' mask assets (SCL, qa_pixel, Fmask); --mask is for GeoTIFF "
                          "folders and stacked files", path)
    root = _root_file(Path(path))
    items = load_items(root)
    scenes, names = [], None
    by_date = _by_date(items, root)
    second = _hls_second_sensor(by_date)
    dated, repeated = _newest(by_date)
    pairs = [(time, item) for time, group in dated.items() for item in group]
    # HLS S30 and L30 items together: read under S30's band names (sources.geotiff.HLS_L30_AS_S30)
    products = [_hls_product(item) for _, item in pairs]
    harmonised = {"S30", "L30"} <= set(products)
    left_out: list[str] = []
    if harmonised and None in products:  # (HLS with other products, whose band numbers are their own)
        other = next(item for (_, item), p in zip(pairs, products) if p is None)
        raise SourceError(f"item {other.id!r} is no HLS item, among HLS S30 and L30 items: HLS's two sensors are read "
                          "together under S30's band names on their own only; leave the other items out, or run them apart",
                          root)
    if harmonised and bands is None:  # the bands both products have, in S30's order; an incomplete item is refused
        from .geotiff import hls_shared_bands

        named = [_bands(item, None, root, False, p == "L30")[0] for (_, item), p in zip(pairs, products)]
        bands, left_out = hls_shared_bands(named, products, [f"item {item.id!r}" for _, item in pairs], lambda i: root)
    for (time, item), product in zip(pairs, products):
        these, layers, mask_layer, scaling = _bands(item, bands, root, scale_factor is None and offset is None,
                                                    harmonised and product == "L30")
        if names is None:
            names = these
        elif these != names:
            missing = [b for b in names if b not in these]
            raise SourceError(f"item {item.id!r} has bands {these} but the first item has {names}"
                              + (f" (it lacks {missing})" if missing else "") + "; every date needs the same bands "
                              "(--bands NAMES reads those of every item)", root)
        if scaling is not None:
            layers = [replace(la, scaling=scaling) for la in layers]
        conv = convention_for(mask_layer[0], mask_convention, shown(mask_layer[1].path)) if mask_layer else ""
        if conv == "fmask" and not mask_convention and product is not None:
            conv = "hls"  # (HLS v2 names its bit-flag layer Fmask, as the classic codes' files are named)
        scenes.append(Scene(time, tuple(layers), mask_layer[1] if mask_layer else None, name=_product(item),
                            convention=conv))
    baselines = [_baseline(group, time, root) for time, group in dated.items()]
    cube = open_scenes(scenes, names, source=root.parent if root.name in ROOT_FILES else root, grid=grid,
                       patch_size=patch_size, chunks=chunks, scale_factor=scale_factor, offset=offset,
                       level=level or _level(items))
    coords = {"product": ("time", [_product(group[0]) for group in dated.values()])}
    if any(baselines):
        coords["s2:processing_baseline"] = ("time", [b or None for b in baselines])
    platforms = [group[0].properties.get("platform") for group in dated.values()]
    if all(platforms) and "platform" not in cube.coords:
        coords["platform"] = ("time", [str(p).lower() for p in platforms])
    cube = cube.assign_coords(coords)
    if repeated:
        cube.attrs["repeated_items"] = repeated
    from .geotiff import hls_attrs

    return hls_attrs(cube, harmonised, left_out, second, "items")


def _hls_product(item) -> str | None:
    """``"S30"``, ``"L30"`` or None: the HLS product an item is of (by its id)."""
    return hls_product(item.id)[0]


def _hls_second_sensor(by_date: dict) -> list[str]:
    """Where HLS S30 and L30 items are read together, the L30 items that share their date and tile with an S30
    item, taken out of ``by_date`` (in place) and returned by id (:func:`.geotiff.hls_second_sensor`)."""
    from .geotiff import hls_second_sensor

    if {_hls_product(i) for group in by_date.values() for i in group} != {"S30", "L30"}:  # (as open reads them)
        return []
    left = []
    for time, group in by_date.items():
        keep = hls_second_sensor([time] * len(group), [str(i.id) for i in group], [_hls_product(i) for i in group])
        left += [str(i.id) for i, k in zip(group, keep) if not k]
        by_date[time] = [i for i, k in zip(group, keep) if k]
    return left


def _root_file(path: Path) -> Path:
    if path.is_dir():
        found = next((path / n for n in ROOT_FILES if (path / n).is_file()), None)
        if found is None:
            raise SourceError(f"holds no {' or '.join(ROOT_FILES)}: not a static STAC catalog", path)
        return found
    return path


def load_items(path: Path) -> list:
    """The STAC items of a catalog, collection (their items, sub-catalogs included), ItemCollection or item."""
    import pystac

    kind = _stac_type(path)
    if kind is None:
        raise SourceError("is not a STAC catalog, collection, ItemCollection or item (JSON with a STAC 'type' and "
                          "'stac_version')", path)
    try:
        if kind == "FeatureCollection":
            items = list(pystac.ItemCollection.from_file(str(path)))
        elif kind == "Feature":
            items = [pystac.Item.from_file(str(path))]
        else:
            items = list(pystac.read_file(str(path)).get_items(recursive=True))
    except (pystac.STACError, OSError, ValueError, KeyError, TypeError) as exc:
        raise SourceError(f"cannot be read as STAC ({type(exc).__name__}: {exc})", path) from exc
    if not items:
        raise SourceError(f"holds no STAC item (its {kind.lower()} links to none)", path)
    return items


def _by_date(items, root: Path) -> dict[pd.Timestamp, list]:
    """``{date: items}`` in date order, by item id within a date (the tiles of one pass: their mosaic's order);
    :class:`SourceError` for an item without a date.

    An item's date is its solar day: its UTC time shifted by the longitude of its bbox's centre (15 degrees an
    hour), as odc-stac groups items. A pass that crosses midnight UTC (morning passes near 157 E) is then one date,
    and a date is the local one; an item without a bbox takes its UTC day."""
    dated = []
    for item in items:
        t = _acquired(item)
        if t is None:
            raise SourceError(f"item {item.id!r} has neither a datetime nor a start_datetime", root)
        lon = _longitude(item)
        dated.append(((t + pd.Timedelta(hours=lon / 15) if lon is not None else t).normalize(), item))
    out: dict[pd.Timestamp, list] = {}
    for time, item in sorted(dated, key=lambda d: (d[0], d[1].id)):
        out.setdefault(time, []).append(item)
    return out


def _newest(dated: dict) -> tuple[dict, list[str]]:
    """``dated`` with one item per scene of each date, the newest, and ``"<left out> (<read>)"`` for the others.

    Two items of one date repeat a scene when :func:`_same_scene` says so. The newest has the highest processing
    baseline, then the latest ``updated`` (else ``created``), then the last id."""
    out, repeated = {}, []
    for time, group in dated.items():
        kept: list = []
        for item in sorted(group, key=_recency, reverse=True):
            twin = next((k for k in kept if _same_scene(item, k)), None)
            if twin is None:
                kept.append(item)
            else:
                repeated.append(f"{item.id} ({twin.id} read)")
        out[time] = sorted(kept, key=lambda i: i.id)  # (the mosaic's order, as before)
    return out, repeated


def _item_baseline(item) -> str:
    """An item's Sentinel-2 processing baseline (``05.09``), from ``s2:processing_baseline`` or its product's
    name, or '' where neither says one."""
    named = parse_baseline(_product(item))
    return str(item.properties.get("s2:processing_baseline") or "") or (f"{named[0]:02d}.{named[1]:02d}" if named else "")


def _recency(item) -> tuple:
    said = _item_baseline(item)
    baseline = tuple(int(v) for v in said.split(".")) if re.fullmatch(r"\d+\.\d+", said) else (0, 0)
    when = item.common_metadata.updated or item.common_metadata.created
    return baseline, _naive(when) if when is not None else pd.Timestamp.min, item.id


def _scene_key(item) -> tuple | None:
    """The tile an item is of: Sentinel-2's MGRS tile or Landsat's WRS path and row, or None where it says none."""
    props = item.properties
    if props.get("s2:mgrs_tile"):
        return ("mgrs", str(props["s2:mgrs_tile"]).upper().removeprefix("T"))
    square = [props.get(k) for k in ("mgrs:utm_zone", "mgrs:latitude_band", "mgrs:grid_square")]
    if all(v is not None for v in square):
        return ("mgrs", f"{int(square[0]):02d}{square[1]}{square[2]}".upper())
    wrs = [props.get(k) for k in ("landsat:wrs_path", "landsat:wrs_row")]
    if all(v is not None for v in wrs):
        return ("wrs", int(wrs[0]), int(wrs[1]))
    return None


#: Items whose acquisition times differ by more than this are two acquisitions, even of one tile (Sentinel-2
#: images a northern tile twice a day from neighbouring orbits, numbered ``_0_`` and ``_1_`` as a reprocessing is).
SAME_ACQUISITION = pd.Timedelta(minutes=5)


def _acquired(item) -> pd.Timestamp | None:
    """When the item was acquired (its ``datetime``, else its ``start_datetime``), in UTC without a zone."""
    when = item.datetime or item.common_metadata.start_datetime
    return None if when is None else _naive(when)


def _naive(when) -> pd.Timestamp:
    t = pd.Timestamp(when)
    return t.tz_convert(None) if t.tzinfo else t


def _item_level(item) -> str:
    """The item's processing level, from ``processing:level`` or its Sentinel-2 product type (MSIL1C, MSIL2A)."""
    return str(item.properties.get("processing:level") or "").upper() or parse_level(_product(item)) or ""


def _same_scene(a, b) -> bool:
    """Whether two items of one date are one acquisition of one place twice (reprocessed, another baseline):
    acquired within ``SAME_ACQUISITION``, of one processing level (where both say one), of one tile (or, where
    either names none, bboxes sharing more than ``MOSAIC_OVERLAP`` of the smaller one)."""
    ta, tb = _acquired(a), _acquired(b)
    if ta is None or tb is None or abs(ta - tb) > SAME_ACQUISITION:
        return False
    la, lb = _item_level(a), _item_level(b)
    if la and lb and la != lb:  # L1C and L2A of one scene: refused below (one level per series), not chosen
        return False
    ka, kb = _scene_key(a), _scene_key(b)
    if ka is not None and kb is not None:
        return ka == kb
    if not a.bbox or not b.bbox:
        return False
    boxes = [(float(i.bbox[0]), float(i.bbox[1]), float(i.bbox[len(i.bbox) // 2]), float(i.bbox[len(i.bbox) // 2 + 1]))
             for i in (a, b)]
    if any(w > e for w, _, e, _ in boxes):  # across the antimeridian: not compared
        return False
    return shared_fraction(*boxes) > MOSAIC_OVERLAP


def _longitude(item) -> float | None:
    """The longitude of the centre of an item's bbox (WGS 84; one that crosses the antimeridian, west > east,
    taken across it), or None without a bbox."""
    bbox = item.bbox
    if not bbox or len(bbox) not in (4, 6):
        return None
    west, east = float(bbox[0]), float(bbox[len(bbox) // 2])
    centre = (west + east + (360.0 if west > east else 0.0)) / 2
    return (centre + 180.0) % 360.0 - 180.0


def _baseline(items, time: pd.Timestamp, root: Path) -> str:
    """The Sentinel-2 processing baseline of one date's items ('' when none says one), from their
    ``s2:processing_baseline`` or their product's name; :class:`SourceError` when its tiles say different ones
    (their -1000 offsets would differ within the date's mosaic)."""
    said = {_item_baseline(item) for item in items}
    said.discard("")  # (a tile that says none takes the date's, as radiometry reads names)
    if len(said) > 1:
        raise SourceError(f"items {[item.id for item in items]} of {time:%Y-%m-%d} (tiles of one date, "
                          f"mosaicked) say different processing baselines {sorted(said)}: the date's reflectance offset "
                          "would differ from tile to tile; keep tiles of one baseline", root)
    return said.pop() if said else ""


def _href(item, key: str, asset, root: Path) -> str:
    """Where ``asset`` is read from: its URL (:func:`.warp.is_remote`: GDAL reads it over the network), else
    its local path; :class:`SourceError` for a local file that is not there or a scheme GDAL does not read."""
    href = asset.get_absolute_href() or asset.href
    if is_remote(href):
        return href
    scheme = urlparse(href).scheme
    if scheme == "file":
        href = urlparse(href).path
    elif len(scheme) > 1:  # (a Windows drive letter is one letter)
        raise SourceError(f"item {item.id!r}: asset {key!r} is at {href}, which changescout cannot read (it reads local "
                          "files and http(s), s3, gs and az URLs); download it first (stac-asset download)", root)
    path = Path(href)
    if not path.is_absolute():  # an ItemCollection's relative hrefs: from the folder of its file
        path = root.parent / path
    if not path.is_file():
        raise SourceError(f"item {item.id!r}: asset {key!r} is not there ({path})", root)
    return str(path.resolve())


def _band_info(asset) -> list[dict]:
    """The band entries of an asset: STAC 1.1 ``bands``, else ``eo:bands`` (with ``raster:bands`` beside them)."""
    bands = asset.extra_fields.get("bands") or asset.extra_fields.get("eo:bands") or []
    raster = asset.extra_fields.get("raster:bands") or []
    return [{**(raster[i] if i < len(raster) else {}), **b} for i, b in enumerate(bands)] or list(raster)


def _nodata(asset) -> float | None:
    """The no-data value an asset declares (its first band's ``nodata`` in ``raster:bands`` or STAC 1.1 ``bands``,
    else the asset's own), None for none or NaN (read as no data anyway). Catalogues often declare it there alone:
    a GeoTIFF that declares none had its -9999 fill read as reflectance -0.9999, clear (a review)."""
    info = _band_info(asset)
    value = info[0].get("nodata") if info and info[0].get("nodata") is not None else asset.extra_fields.get("nodata")
    try:
        value = None if value is None else float(value)  # ("nan", "inf", "-inf": the raster extension's strings)
    except (TypeError, ValueError):
        return None
    return None if value is None or np.isnan(value) else value


def _is_raster(asset) -> bool:
    media = str(asset.media_type or "").lower()
    return any(t in media for t in _RASTER_TYPES) or Path(urlparse(asset.href).path).suffix.lower() in _RASTER_SUFFIXES


def _stem(key: str) -> str:
    """An asset key without the format suffix of a twin (Earth Search's ``red-jp2``, ``scl-jp2``)."""
    return re.sub(r"[-_](?:jp2|cog|tif)$", "", key, flags=re.I)


def _bands(item, wanted, root: Path, own_scaling: bool, as_s30: bool = False):
    """``(band names, layers, (mask name, mask layer) or None, (scale, offset) or None)`` of one item; without
    ``own_scaling`` (the user gave scale_factor or offset) the item's scaling is not read. HLS L30 items leave
    out their thermal B10 and B11; with ``as_s30``, an L30 item's bands are named (and ``wanted`` read) as
    S30 names them (:data:`changescout.sources.geotiff.HLS_L30_AS_S30`)."""
    from .geotiff import HLS_L30_AS_S30

    rasters = {k: a for k, a in item.assets.items() if _is_raster(a) and not (set(a.roles or ()) & _NOT_BANDS)}
    if _hls_product(item) == "L30":  # (L30's B10 and B11 are thermal: S30's are cirrus and SWIR)
        rasters = {k: a for k, a in rasters.items() if _stem(k).upper() not in ("B10", "B11")}
    if as_s30 and wanted is not None:  # S30's band keys read as L30's own; common names (red, nir08) as they are
        back = {s30: l30 for l30, s30 in HLS_L30_AS_S30.items()}
        unknown = [w for w in wanted if re.fullmatch(r"B\d{1,2}A?", w, re.I) and w.upper() not in back]
        if unknown:
            raise SourceError(f"item {item.id!r} (HLS L30, read under S30's band names) has no band {unknown}: L30 has "
                              f"{', '.join(sorted(back, key=lambda b: (len(b), b)))} of S30's", root)
        wanted = [back.get(w.upper(), w) for w in wanted]
    masks = [k for k, a in rasters.items()
             if is_mask_name(_stem(k)) or any(is_mask_name(b.get("name", "")) for b in _band_info(a))]
    # the mask whose name says its convention, a GeoTIFF before its twin of another format
    mask = min(masks, key=lambda k: (not infer_convention(_stem(k)), _stem(k) != k), default=None)
    reflectance = any("reflectance" in (a.roles or ()) for a in rasters.values())
    candidates = {k: a for k, a in rasters.items() if k not in masks and _stem(k).lower() not in _AUXILIARY
                  and len(_band_info(a)) <= 1 and ("reflectance" in (a.roles or ()) if reflectance
                                                   else not a.roles or "data" in a.roles)}
    candidates = _one_per_band(candidates)
    if wanted is not None:
        chosen = [_find(item, rasters, w, root) for w in check_band_names(wanted, root, "--bands")]
    else:
        chosen = list(candidates)
    if not chosen:
        raise SourceError(f"item {item.id!r} has no reflectance asset (its assets: {list(item.assets)})", root)
    names = check_band_names(chosen, root, "the asset keys")
    if as_s30:
        names = [HLS_L30_AS_S30.get(n.upper(), n) for n in names]
    layers = [Layer(_href(item, k, rasters[k], root), 1, nodata=_nodata(rasters[k])) for k in chosen]
    mask_layer = (mask, Layer(_href(item, mask, rasters[mask], root), 1)) if mask is not None else None
    scaling = _scaling(item, [rasters[k] for k in chosen], root) if own_scaling else None
    return names, layers, mask_layer, scaling


def _one_per_band(assets: dict) -> dict:
    """One asset per band name: a GeoTIFF before another format of the same band (``red`` and ``red-jp2``)."""
    by_band: dict[str, str] = {}
    for key, asset in assets.items():
        info = _band_info(asset)
        band = str(info[0].get("name") or _stem(key)) if info else _stem(key)
        kept = by_band.get(band)
        if kept is None or ("jp2" in str(assets[kept].media_type or "") and "jp2" not in str(asset.media_type or "")):
            by_band[band] = key
    keep = set(by_band.values())
    return {k: a for k, a in assets.items() if k in keep}


def _find(item, rasters: dict, name: str, root: Path) -> str:
    """The asset key that ``name`` (a key, a band name or a common name) names in ``item``."""
    low = name.lower()
    for k in rasters:
        if k.lower() == low:
            return k
    for field in ("name", "common_name"):
        hits = sorted({k for k, a in rasters.items() if any(str(b.get(field, "")).lower() == low for b in _band_info(a))})
        hits = list(_one_per_band({k: rasters[k] for k in hits})) if hits else hits
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise SourceError(f"item {item.id!r}: --bands {name!r} is the {field.replace('_', ' ')} of several assets "
                              f"({hits}); name one by its asset key", root)
    raise SourceError(f"item {item.id!r} has no asset {name!r} (by asset key, band name or common name); its raster "
                      f"assets are {list(rasters)}", root)


def _scaling(item, assets: list, root: Path) -> tuple[float, float] | None:
    """The ``(scale, offset)`` the item gives its bands (one for all), or ``None`` when it gives none."""
    found = set()
    for asset in assets:
        info = _band_info(asset)
        scale, offset = (info[0].get("scale"), info[0].get("offset")) if info else (None, None)
        if scale is not None or offset is not None:
            found.add((float(1.0 if scale is None else scale), float(0.0 if offset is None else offset)))
    if len(found) > 1:
        raise SourceError(f"item {item.id!r} gives its bands different scales and offsets ({sorted(found)}); "
                          "changescout reads one for all: choose bands of one scaling with --bands, or give it with "
                          "scale_factor= and offset= in --config source_options", root)
    if found:
        return found.pop()
    if item.properties.get("earthsearch:boa_offset_applied") is True:  # harmonised: the -1000 is applied
        return (DEFAULT_SCALE, 0.0)
    return None


def _product(item) -> str:
    """The product name radiometry reads (platform, level, baseline): the Sentinel-2 product or Landsat scene
    the item names, else its id."""
    uri = item.properties.get("s2:product_uri")
    if uri:
        return str(uri).removesuffix(".SAFE")
    return str(item.properties.get("landsat:scene_id") or item.id)


def _level(items) -> str | None:
    levels = {str(i.properties.get("processing:level") or "").upper() for i in items} - {""}
    return levels.pop() if len(levels) == 1 else None
