"""Capture distortions: what a page goes through between the printer and a data set.

Each `apply()` call draws its parameters from the page's RNG and returns them, so the sidecar
records exactly what was done. Geometry uses OpenCV warps; everything works on HxWx3 uint8 RGB.

light: a flatbed scan / careful photo (small rotation and keystone, mild blur, slight tone shift).
heavy: a phone photo of a printout (rotation up to 7 deg, strong perspective, shadow gradient,
       creases, colour cast, sensor noise, low JPEG quality, crop/padding).
photo: a hand-held phone photo: camera tilt up to 30 deg and roll up to 15 deg (a true camera
       homography), paper curl (a smooth cylinder-like warp), the page on a table, uneven light and
       a soft shadow, sometimes glare, creases, or (1 in 4) a photo of a screen with moire and no
       curl; optics or motion blur, sensor noise, JPEG 40..85.

Geometry of a distorted page, for mapping truth: `warp_out["homography"]` maps clean-page pixels to
distorted-page pixels; "photo" pages may also have `warp_out["warp"]`, a curl applied to the clean
page before the homography. `map_points(points, homography, warp)` maps clean-page points exactly
(the page's resampling grid is interpolated from a 4x coarser one: < 0.01 px apart, measured);
`warp_image(mask, homography, warp)` resamples any clean-page-sized image (e.g. a trace mask) the
way the page was. Creases, shadows and moire are photometric only (they move no pixel).
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

LEVELS = ("none", "light", "heavy", "photo")
PHOTO_MAX_PX = 4032  # "photo" output: the longer side at most this (a 12 Mpx phone camera)


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
    if level == "photo":
        return _photo(a, rng, warp_out)
    R = _ranges(level)
    h, w = a.shape[:2]
    p: dict[str, Any] = {"level": level}
    # --- geometry: one homography = crop/pad + rotation + perspective
    ang = rng.uniform(-R["rot"], R["rot"])
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    jit = rng.uniform(-R["persp"], R["persp"], size=(4, 2)) * np.array([w, h], np.float32)
    # crop (>0: zoom in) or pad (<0: zoom out, background shows)
    cz = rng.uniform(-R["crop"], R["crop"])
    shift = rng.uniform(-R["crop"], R["crop"], size=2) * np.array([w, h], np.float32) * 0.5
    c = np.array([w / 2, h / 2], np.float32)
    dst = (src - c) * (1 + cz) + c + jit + shift
    th = math.radians(ang)
    rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]], np.float32)
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


# ------------------------------------------------------------------------------------------------
# "photo": camera homography + paper curl


def _curl_scale(u: np.ndarray, warp: dict[str, Any]) -> np.ndarray:
    """Apparent magnification of the paper at normalised coordinate u (-1..1 across the curl axis):
    the paper's height z = depth * u^2 + asym * u^3 (in units of the camera distance) brings it closer."""
    z = warp["depth"] * u**2 + warp["asym"] * u**3
    return 1.0 / (1.0 - z)


def curl_forward(x: np.ndarray, y: np.ndarray, warp: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Clean-page -> curled-page coordinates (exact): points move away from (or toward) the page
    centre by the magnification of the paper's local height, which depends on one coordinate only
    (x for axis "x": lines along x bow, lines along y stay straight)."""
    cx, cy = warp["centre"]
    half = warp["half"]
    if warp["axis"] == "x":
        s = _curl_scale((x - cx) / half, warp)
    else:
        s = _curl_scale((y - cy) / half, warp)
    return cx + (x - cx) * s, cy + (y - cy) * s


def _curl_inverse(xc: np.ndarray, yc: np.ndarray, warp: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Curled -> clean coordinates (the 1-D monotone part inverted on a 0.02 px table)."""
    cx, cy = warp["centre"]
    half = warp["half"]
    u = np.linspace(-1.6, 1.6, 40001)
    v = u * _curl_scale(u, warp)  # monotone for |depth|, |asym| < 0.2
    if warp["axis"] == "x":
        us = np.interp((xc - cx) / half, v, u)
        s = _curl_scale(us, warp)
        return cx + us * half, cy + (yc - cy) / s
    us = np.interp((yc - cy) / half, v, u)
    s = _curl_scale(us, warp)
    return cx + (xc - cx) / s, cy + us * half


def map_points(points: Any, homography: Any, warp: dict[str, Any] | None = None) -> np.ndarray:
    """Clean-page pixel points (N x 2) -> distorted-page pixels: the curl `warp` (if any), then `homography`."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    x, y = pts[:, 0], pts[:, 1]
    if warp is not None:
        x, y = curl_forward(x, y, warp)
    H = np.asarray(homography, np.float64)
    q = H @ np.stack([x, y, np.ones_like(x)])
    return np.stack([q[0] / q[2], q[1] / q[2]], 1)


def _maps(
    homography: Any, warp: dict[str, Any] | None, out_wh: tuple[int, int], step: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """cv2.remap maps (distorted px -> clean px), computed every `step` px and interpolated."""
    w, h = out_wh
    Hi = np.linalg.inv(np.asarray(homography, np.float64))
    gw, gh = (w + step - 1) // step + 1, (h + step - 1) // step + 1
    gx = (np.arange(gw) + 0.5) * step - 0.5
    gy = (np.arange(gh) + 0.5) * step - 0.5
    X, Y = np.meshgrid(gx, gy)
    q = np.einsum("ij,jhw->ihw", Hi, np.stack([X, Y, np.ones_like(X)]))
    xc, yc = q[0] / q[2], q[1] / q[2]
    if warp is not None:
        xc, yc = _curl_inverse(xc, yc, warp)
    big = (gw * step, gh * step)
    mx = cv2.resize(xc.astype(np.float32), big, interpolation=cv2.INTER_LINEAR)[:h, :w]
    my = cv2.resize(yc.astype(np.float32), big, interpolation=cv2.INTER_LINEAR)[:h, :w]
    return np.ascontiguousarray(mx), np.ascontiguousarray(my)


def warp_image(
    a: np.ndarray,
    homography: Any,
    warp: dict[str, Any] | None = None,
    out_wh: tuple[int, int] | None = None,
    border: Any = 0,
    interpolation: int = cv2.INTER_LINEAR,
) -> np.ndarray:
    """`a` (a clean-page-sized image or mask) resampled the way a distorted page was."""
    w, h = out_wh or (a.shape[1], a.shape[0])
    if warp is None:
        H = np.asarray(homography, np.float64)
        return cv2.warpPerspective(
            a, H, (w, h), flags=interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=border
        )
    mx, my = _maps(homography, warp, (w, h))
    return cv2.remap(a, mx, my, interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=border)


def _camera_homography(
    rng: np.random.Generator, w: int, h: int, p: dict[str, Any], out_wh: tuple[int, int]
) -> np.ndarray:
    """A pinhole camera looking at the page (a plane) tilted by up to 30 deg and rolled up to 15 deg,
    then scaled and shifted so the page fills 80..102% of the frame."""
    tilt = math.radians(rng.uniform(0, 30))
    phi = rng.uniform(0, 2 * math.pi)
    pitch, yaw = tilt * math.cos(phi), tilt * math.sin(phi)
    roll = math.radians(rng.uniform(-15, 15))
    f = rng.uniform(0.9, 1.6) * math.hypot(w, h)
    cxp, cyp = w / 2, h / 2
    rx = np.array([[1, 0, 0], [0, math.cos(pitch), -math.sin(pitch)], [0, math.sin(pitch), math.cos(pitch)]])
    ry = np.array([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]])
    rz = np.array([[math.cos(roll), -math.sin(roll), 0], [math.sin(roll), math.cos(roll), 0], [0, 0, 1]])
    R = rz @ rx @ ry
    K = np.array([[f, 0, 0], [0, f, 0], [0, 0, 1.0]])
    M = K @ np.stack([R[:, 0], R[:, 1], R[:, 2] * 0 + np.array([0, 0, f])], 1)  # [r1 r2 t], t = (0, 0, f)
    T = np.array([[1, 0, -cxp], [0, 1, -cyp], [0, 0, 1.0]])
    H0 = M @ T
    corners = np.array([[0, 0, 1], [w, 0, 1], [w, h, 1], [0, h, 1]], np.float64).T
    q = H0 @ corners
    qx, qy = q[0] / q[2], q[1] / q[2]
    ow, oh = out_wh
    fill = rng.uniform(0.8, 1.02)
    sc = fill * min(ow / (qx.max() - qx.min()), oh / (qy.max() - qy.min()))
    jx, jy = rng.uniform(-0.04, 0.04) * ow, rng.uniform(-0.04, 0.04) * oh
    ox = ow / 2 + jx - sc * (qx.max() + qx.min()) / 2
    oy = oh / 2 + jy - sc * (qy.max() + qy.min()) / 2
    S = np.array([[sc, 0, ox], [0, sc, oy], [0, 0, 1.0]])
    p.update(
        tilt_deg=_r(math.degrees(tilt), 2),
        tilt_direction_deg=_r(math.degrees(phi), 1),
        roll_deg=_r(math.degrees(roll), 2),
        focal_px=_r(f, 1),
        fill=_r(fill),
        shift_px=[_r(jx, 1), _r(jy, 1)],
    )
    H = S @ H0
    return H / H[2, 2]


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    g = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)


def _photo(
    a: np.ndarray, rng: np.random.Generator, warp_out: dict[str, Any] | None
) -> tuple[np.ndarray, dict[str, Any]]:
    h, w = a.shape[:2]
    p: dict[str, Any] = {"level": "photo"}
    screen = bool(rng.random() < 0.25)
    p["screen"] = screen
    # --- geometry
    warp: dict[str, Any] | None = None
    if not screen:
        axis = "x" if rng.random() < 0.7 else "y"
        warp = {
            "kind": "curl",
            "axis": axis,
            "depth": float(rng.uniform(-0.03, 0.07)),
            "asym": float(rng.uniform(-0.02, 0.02)),
            "centre": [w / 2.0, h / 2.0],
            "half": (w if axis == "x" else h) / 2.0,
        }
        p["curl"] = {k: (_r(v, 4) if isinstance(v, float) else v) for k, v in warp.items()}
    # a phone camera's frame: at most 4032 px wide, so 300..600 dpi pages come out smaller
    f_out = min(1.0, PHOTO_MAX_PX / max(w, h))
    ow, oh = int(round(w * f_out)), int(round(h * f_out))
    H = _camera_homography(rng, w, h, p, (ow, oh))
    p["homography"] = np.round(H, 6).tolist()
    p["size"] = [ow, oh]
    mx, my = _maps(H, warp, (ow, oh))
    h, w = oh, ow  # from here on: the photo
    ch, cw = a.shape[:2]
    inside = ((mx >= 0) & (mx <= cw - 1) & (my >= 0) & (my <= ch - 1)).astype(np.uint8)
    f_src = min(1.0, 1.5 * f_out * 1.2)
    if f_src < 1.0:  # a much smaller photo: area-average the page first (no aliasing of 1 px lines)
        small = cv2.resize(a, (int(round(cw * f_src)), int(round(ch * f_src))), interpolation=cv2.INTER_AREA)
        fx, fy = small.shape[1] / cw, small.shape[0] / ch
        mxs, mys = (mx + 0.5) * fx - 0.5, (my + 0.5) * fy - 0.5
        out = cv2.remap(small, mxs, mys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    else:
        out = cv2.remap(a, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    # --- background: a table (or a screen's bezel), with low-frequency texture (built at 1/4 size)
    if screen:
        base = np.array([rng.uniform(5, 35)] * 3, np.float32)
    else:
        lvl = rng.uniform(40, 200)  # a table: grey to brown, not a saturated colour
        base = (lvl + np.array([20.0, 0.0, -20.0]) * rng.uniform(0, 1.5) + rng.uniform(-10, 10, 3)).astype(np.float32)
    qh, qw = (h + 3) // 4, (w + 3) // 4
    tex = _smooth_noise(rng, qh, qw, 12) * float(rng.uniform(3, 15))
    bg_small = np.clip(base[None, None, :] + tex[:, :, None], 0, 255).astype(np.uint8)
    bg = cv2.resize(bg_small, (w, h), interpolation=cv2.INTER_LINEAR)
    p["background"] = [int(v) for v in base]
    out = cv2.copyTo(out, inside, bg)
    # --- light (paper reflectance x illumination): gradient + vignette + one soft shadow, at 1/8 size;
    # creases at 1/2 size; moire (screens) at full size; applied at once as an 8-bit gain (x/200)
    hh, hw = (h + 7) // 8, (w + 7) // 8
    yy, xx = np.mgrid[0:hh, 0:hw].astype(np.float32)
    xx, yy = xx / hw - 0.5, yy / hh - 0.5
    g_ang = rng.uniform(0, 2 * math.pi)
    g_depth = rng.uniform(0.05, 0.35)
    L = 1 - g_depth * (0.5 + (xx * math.cos(g_ang) + yy * math.sin(g_ang)))
    vig = rng.uniform(0.0, 0.35)
    L *= 1 - vig * (xx**2 + yy**2) * 2
    sh: dict[str, Any] | None = None
    if rng.random() < 0.7:
        s_ang = rng.uniform(0, 2 * math.pi)
        off = rng.uniform(-0.3, 0.3)
        soft = rng.uniform(0.02, 0.12)
        dark = rng.uniform(0.2, 0.55)
        d = xx * math.cos(s_ang) + yy * math.sin(s_ang) - off
        L *= 1 - dark / (1 + np.exp(-d / soft))
        sh = {"angle_deg": _r(math.degrees(s_ang), 1), "offset": _r(off), "softness": _r(soft), "depth": _r(dark)}
    p["light"] = {"gradient": _r(g_depth), "gradient_angle_deg": _r(math.degrees(g_ang), 1), "vignette": _r(vig)}
    if sh:
        p["shadow"] = sh
    glare = None
    if rng.random() < 0.3 and not screen:
        gx, gy, gr = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.08, 0.25)
        gs = rng.uniform(40, 120)
        glare = np.exp(-((xx + 0.5 - gx) ** 2 + (yy + 0.5 - gy) ** 2) / (2 * gr**2)) * gs
        p["glare"] = {"x": _r(gx), "y": _r(gy), "radius": _r(gr), "strength": _r(gs, 1)}
    h2, w2 = (h + 1) // 2, (w + 1) // 2
    F = cv2.resize(L.astype(np.float32), (w2, h2), interpolation=cv2.INTER_LINEAR)
    creases = []
    if not screen:  # dark fold lines with a lit side (photometric only)
        for _ in range(int(rng.integers(0, 3))):
            vertical = bool(rng.random() < 0.5)
            pos, tilt, strength, width = (
                rng.uniform(0.2, 0.8),
                rng.uniform(-0.05, 0.05),
                rng.uniform(0.05, 0.15),
                rng.uniform(2, 6),
            )
            wd = width / 2  # at half size
            if vertical:
                coord = np.arange(w2, dtype=np.float32)[None, :] - (
                    pos * w2 + tilt * np.arange(h2, dtype=np.float32)[:, None]
                )
            else:
                coord = np.arange(h2, dtype=np.float32)[:, None] - (
                    pos * h2 + tilt * np.arange(w2, dtype=np.float32)[None, :]
                )
            band = np.abs(coord) < 150  # only a band around the fold changes
            c = coord[band]
            F[band] *= (
                1
                - strength * np.exp(-0.5 * (c / wd) ** 2)
                + 0.5 * strength * np.tanh(c / (8 * wd)) * np.exp(-np.abs(c) / 100)
            )
            creases.append(
                {
                    "vertical": vertical,
                    "pos": _r(pos),
                    "tilt": _r(tilt),
                    "strength": _r(strength),
                    "width_px": _r(width, 1),
                }
            )
    if creases:
        p["creases"] = creases
    Ff = cv2.resize(F, (w, h), interpolation=cv2.INTER_LINEAR)
    if screen:  # moire: the camera's pixel grid beating with the screen's (separable cosines)
        m_amp = rng.uniform(0.05, 0.18)
        per = rng.uniform(3.0, 9.0)
        m_ang = rng.uniform(0, math.pi)
        X, Y = np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)
        k1, k2 = 2 * math.pi / per, 2 * math.pi / (per * 1.07)
        ax, ay = X * (k1 * math.cos(m_ang)), Y * (k1 * math.sin(m_ang))
        bx, by = X * (k2 * math.cos(m_ang + 0.3)), Y * (k2 * math.sin(m_ang + 0.3))
        # cos(ax + ay) and cos(bx - by), each as a sum of two outer products
        c1 = np.outer(np.cos(ay), np.cos(ax)) - np.outer(np.sin(ay), np.sin(ax))
        c2 = np.outer(np.cos(by), np.cos(bx)) + np.outer(np.sin(by), np.sin(bx))
        Ff *= 1 - m_amp * (0.5 + 0.25 * c1 + 0.25 * c2)
        p["moire"] = {"amplitude": _r(m_amp), "period_px": _r(per, 2), "angle_deg": _r(math.degrees(m_ang), 1)}
    gain = np.clip(Ff * 200.0, 0, 255).astype(np.uint8)
    gain[inside == 0] = 200
    out = cv2.multiply(out, cv2.merge([gain, gain, gain]), scale=1 / 200.0)
    if glare is not None:
        gu = cv2.resize(np.clip(glare, 0, 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)
        gu[inside == 0] = 0
        out = cv2.add(out, cv2.merge([gu, gu, gu]))
    # colour: white balance, contrast, gamma (one lookup table per channel)
    wb = rng.uniform(0.88, 1.08, size=3)
    contrast = rng.uniform(0.8, 1.1)
    gamma = rng.uniform(0.8, 1.25)
    v = np.arange(256, dtype=np.float64)
    luts = [255.0 * (np.clip((v * wb[k] - 128) * contrast + 128, 0, 255) / 255.0) ** gamma for k in range(3)]
    lut = np.clip(np.stack(luts, 1), 0, 255).astype(np.uint8).reshape(1, 256, 3)
    out = cv2.LUT(np.ascontiguousarray(out), lut)
    p.update(white_balance=np.round(wb, 3).tolist(), contrast=_r(contrast), gamma=_r(gamma))
    # blur: optics or hand shake
    if rng.random() < 0.3:
        n = int(rng.integers(3, 10))
        ang = rng.uniform(0, 180)
        k = np.zeros((n, n), np.float32)
        k[n // 2, :] = 1.0
        k = np.asarray(cv2.warpAffine(k, cv2.getRotationMatrix2D(((n - 1) / 2, (n - 1) / 2), ang, 1.0), (n, n)))
        k /= max(float(k.sum()), 1e-6)
        out = cv2.filter2D(out, -1, k)
        p["motion_blur"] = {"length_px": n, "angle_deg": _r(ang, 1)}
        p["blur_sigma"] = 0.0
    else:
        sig = rng.uniform(0.3, 2.0)
        out = cv2.GaussianBlur(out, (0, 0), sig)
        p["blur_sigma"] = _r(sig, 2)
    # sensor noise, 2 px grain
    ns = rng.uniform(1.5, 7.0)
    nz = rng.standard_normal((h2, w2), dtype=np.float32) * ns
    nzf = np.asarray(cv2.resize(nz, (w, h), interpolation=cv2.INTER_NEAREST))
    pos_n = np.clip(nzf, 0, 255).astype(np.uint8)
    neg_n = np.clip(-nzf, 0, 255).astype(np.uint8)
    out = cv2.subtract(cv2.add(out, cv2.merge([pos_n] * 3)), cv2.merge([neg_n] * 3))
    p["noise_sigma"] = _r(ns, 2)
    p["jpeg_quality"] = int(rng.integers(40, 86))
    if warp_out is not None:
        warp_out.update(homography=H.astype(np.float64).tolist(), warp=warp)
    return np.ascontiguousarray(out), p
