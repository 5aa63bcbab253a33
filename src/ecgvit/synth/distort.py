"""Capture distortions: what a page goes through between the printer and a data set.

Each `apply()` call draws its parameters from the page's RNG and returns them, so the sidecar
records exactly what was done. Geometry uses OpenCV warps; everything works on HxWx3 uint8 RGB.

light: a flatbed scan / careful photo (small rotation and keystone, mild blur, slight tone shift).
heavy: a phone photo of a printout (rotation up to 7 deg, strong perspective, shadow gradient,
       creases, colour cast, sensor noise, low JPEG quality, crop/padding).
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

LEVELS = ("none", "light", "heavy")


def _r(x: float, nd: int = 3) -> float:
    return round(float(x), nd)


def _ranges(level: str) -> dict[str, Any]:
    if level == "light":
        return dict(
            rot=1.5,
            persp=0.008,
            crop=0.015,
            blur=(0.0, 0.9),
            contrast=0.08,
            bright=10,
            cast=6,
            shadow=(0.0, 0.0),
            creases=(0, 0),
            noise=(0.0, 2.5),
            quality=(70, 92),
            p_shadow=0.0,
        )
    return dict(
        rot=7.0,
        persp=0.05,
        crop=0.05,
        blur=(0.4, 2.2),
        contrast=0.25,
        bright=30,
        cast=18,
        shadow=(0.15, 0.45),
        creases=(0, 3),
        noise=(2.0, 9.0),
        quality=(35, 80),
        p_shadow=0.8,
    )


def apply(
    a: np.ndarray, rng: np.random.Generator, level: str, warp_out: dict[str, Any] | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Distorted copy of page `a` and the parameters used ({} for level "none").

    The returned dict has "jpeg_quality" (to encode with) besides the image operations. If
    `warp_out` is a dict, it receives the exact geometry: "homography" (3x3 list, clean-page px ->
    distorted px, full precision) and "warp" (None, or the non-projective warp applied before the
    homography; see `map_points`).
    """
    if level not in LEVELS:
        raise ValueError(f"distort={level!r}: expected one of {', '.join(LEVELS)}")
    if level == "none":
        return a, {}
    R = _ranges(level)
    h, w = a.shape[:2]
    p: dict[str, Any] = {"level": level}
    # --- geometry: one homography = crop/pad + rotation + perspective
    ang = rng.uniform(-R["rot"], R["rot"])
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    jit = rng.uniform(-R["persp"], R["persp"], size=(4, 2)) * np.float32([w, h])
    # crop (>0: zoom in) or pad (<0: zoom out, background shows)
    cz = rng.uniform(-R["crop"], R["crop"])
    shift = rng.uniform(-R["crop"], R["crop"], size=2) * np.float32([w, h]) * 0.5
    c = np.float32([w / 2, h / 2])
    dst = (src - c) * (1 + cz) + c + jit + shift
    th = math.radians(ang)
    rot = np.float32([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    dst = (dst - c) @ rot.T + c
    H = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
    bg_val = rng.uniform(40, 200) if level == "heavy" else rng.uniform(225, 255)
    bg = tuple(float(np.clip(bg_val + rng.uniform(-15, 15), 0, 255)) for _ in range(3))
    out = cv2.warpPerspective(a, H, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=bg)
    p.update(
        rotation_deg=_r(ang, 2),
        perspective_jitter_px=np.round(jit, 1).tolist(),
        zoom=_r(1 + cz),
        shift_px=np.round(shift, 1).tolist(),
        background=[int(v) for v in bg],
    )
    p["homography"] = np.round(H, 6).tolist()
    if warp_out is not None:
        warp_out.update(homography=H.astype(np.float64).tolist(), warp=None)
    # --- tone: shadow gradient and creases act on paper reflectance; computed at half size
    hh, hw = (h + 1) // 2, (w + 1) // 2
    f = np.ones((hh, hw), np.float32)
    if rng.random() < R["p_shadow"]:
        s0, s1 = R["shadow"]
        depth = rng.uniform(s0, s1)
        d_ang = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:h:8, 0:w:8].astype(np.float32)
        g = (xx / w - 0.5) * math.cos(d_ang) + (yy / h - 0.5) * math.sin(d_ang)
        g = (g - g.min()) / max(float(g.max() - g.min()), 1e-6)
        small = 1 - depth * g**1.5
        f *= cv2.resize(small, (hw, hh), interpolation=cv2.INTER_LINEAR)
        p["shadow"] = {"depth": _r(depth), "angle_deg": _r(math.degrees(d_ang), 1)}
    n_cr = int(rng.integers(R["creases"][0], R["creases"][1] + 1))
    creases = []
    for _ in range(n_cr):
        vertical = rng.random() < 0.5
        pos = rng.uniform(0.2, 0.8)
        tilt = rng.uniform(-0.05, 0.05)
        strength = rng.uniform(0.06, 0.18)
        width = rng.uniform(2, 6)
        wd = width / 2  # at half size
        if vertical:
            coord = np.arange(hw, dtype=np.float32)[None, :] - (
                pos * hw + tilt * np.arange(hh, dtype=np.float32)[:, None]
            )
        else:
            coord = np.arange(hh, dtype=np.float32)[:, None] - (
                pos * hh + tilt * np.arange(hw, dtype=np.float32)[None, :]
            )
        # a dark fold line with a lighter side (the paper's two facets); only a band around it
        band = np.abs(coord) < 300
        c = coord[band]
        f[band] *= (
            1
            - strength * np.exp(-0.5 * (c / wd) ** 2)
            + 0.5 * strength * np.tanh(c / (8 * wd)) * np.exp(-np.abs(c) / 100)
        )
        creases.append(
            {"vertical": vertical, "pos": _r(pos), "tilt": _r(tilt), "strength": _r(strength), "width_px": _r(width, 1)}
        )
    if creases:
        p["creases"] = creases
    out = np.ascontiguousarray(out)
    if n_cr or "shadow" in p:
        fu = cv2.resize(np.clip(f * 200.0, 0, 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)
        out = cv2.multiply(out, cv2.merge([fu, fu, fu]), scale=1 / 200.0)
    # --- colour: contrast, brightness, per-channel cast (one lookup table per channel)
    contrast = 1 + rng.uniform(-R["contrast"], R["contrast"])
    bright = rng.uniform(-R["bright"], R["bright"])
    cast = rng.uniform(-R["cast"], R["cast"], size=3)
    p.update(contrast=_r(contrast), brightness=_r(bright, 1), colour_cast=np.round(cast, 1).tolist())
    v = np.arange(256, dtype=np.float32)
    luts = [np.clip((v - 128.0) * contrast + 128.0 + bright + cast[k], 0, 255).astype(np.uint8) for k in range(3)]
    out = cv2.merge([cv2.LUT(ch, lut) for ch, lut in zip(cv2.split(out), luts, strict=False)])
    # --- blur (optics / motion), then sensor or scanner noise (2 px grain)
    sig = rng.uniform(*R["blur"])
    if sig > 0.3:
        out = cv2.GaussianBlur(out, (0, 0), sig)
    p["blur_sigma"] = _r(sig, 2)
    ns = rng.uniform(*R["noise"])
    if ns > 0.2:
        n = rng.standard_normal((hh, hw), dtype=np.float32) * ns
        n = cv2.resize(n, (w, h), interpolation=cv2.INTER_NEAREST)
        pos = np.clip(n, 0, 255).astype(np.uint8)
        neg = np.clip(-n, 0, 255).astype(np.uint8)
        out = cv2.subtract(cv2.add(out, cv2.merge([pos, pos, pos])), cv2.merge([neg, neg, neg]))
    p["noise_sigma"] = _r(ns, 2)
    p["jpeg_quality"] = int(rng.integers(R["quality"][0], R["quality"][1] + 1))
    return out, p
