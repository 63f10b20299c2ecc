"""位置坐标 — latitude/longitude pairs, and single latitude or longitude columns.

A pair in one value: ``39.9042,116.4074``, ``39.9042 116.4074``, ``(39.9042, 116.4074)``
or ``POINT(116.4074 39.9042)`` (WKT order is lon lat). Both numbers need a decimal point
and must be in range (|lat| ≤ 90, |lon| ≤ 180). With four or more decimals (about 11 m)
the location is precise, which GB/T 35273 lists as sensitive (精准定位信息, 行踪轨迹).

Single columns of bare decimals are too common to flag from values alone; they are read as
coordinates only when the header says latitude/longitude (纬度/经度, lat/lng).
"""

from __future__ import annotations

import re

from dataspace.catalog.classify.base import BaseDetector, HeaderVocab, to_halfwidth

PRECISE_DECIMALS = 4

_NUM = r"[-+]?\d{1,3}\.(\d+)"
_PAIR = re.compile(rf"^\(?\s*({_NUM})\s*[,;\s]\s*({_NUM})\s*\)?$")
_WKT = re.compile(rf"^POINT\s*\(\s*({_NUM})\s+({_NUM})\s*\)$", re.IGNORECASE)
_SINGLE = re.compile(rf"^{_NUM}$")

_PAIR_VOCAB = HeaderVocab(
    zh=("经纬度", "坐标", "定位", "位置", "轨迹"),
    en=("latlng", "latlon", "lat_lng", "lat_lon", "lnglat", "coord", "coords", "coordinates",
        "location", "gps", "geo", "geolocation", "geo_point", "wkt"),
)
_AXIS_VOCAB = HeaderVocab(
    zh=("纬度", "经度"),
    en=("lat", "latitude", "lng", "lon", "longitude"),
)


def parse_pair(value: str) -> tuple[float, float, int] | None:
    """(lat, lon, fewest decimals) of a coordinate pair, or None."""
    text = to_halfwidth(value).strip()
    m = _PAIR.match(text)
    if m:
        lat, lat_dec, lon, lon_dec = m.group(1), m.group(2), m.group(3), m.group(4)
    else:
        m = _WKT.match(text)
        if not m:
            return None
        lon, lon_dec, lat, lat_dec = m.group(1), m.group(2), m.group(3), m.group(4)
    la, lo = float(lat), float(lon)
    if abs(la) > 90 or abs(lo) > 180:
        return None
    return la, lo, min(len(lat_dec), len(lon_dec))


def _axis_decimals(value: str) -> int | None:
    m = _SINGLE.match(to_halfwidth(value).strip())
    if not m or abs(float(m.group(0))) > 180:
        return None
    return len(m.group(1))


class _GeoDetector(BaseDetector):
    min_decimals = 0
    vocab = _PAIR_VOCAB

    def header_hint(self, name: str) -> str | None:
        return _PAIR_VOCAB.hint(name) or _AXIS_VOCAB.hint(name)

    def match(self, value: str, *, hinted: bool = False) -> bool:
        pair = parse_pair(value)
        if pair is not None:
            return pair[2] >= self.min_decimals
        if hinted:
            decimals = _axis_decimals(value)
            return decimals is not None and decimals >= self.min_decimals
        return False


class PreciseGeoDetector(_GeoDetector):
    category = "geo_point_precise"
    rank = 45
    strength = 0.85
    min_decimals = PRECISE_DECIMALS
    evidence = f"coordinates with {PRECISE_DECIMALS} or more decimals (precise to ~11 m)"


class GeoDetector(_GeoDetector):
    category = "geo_point"
    rank = 44
    strength = 0.8
    min_decimals = 2
    evidence = "latitude/longitude coordinates (two or more decimals)"
