"""Class-specific synthetic 12-lead ECGs (10 s, 500 Hz, millivolts).

Why not ``neurokit2.ecg_simulate(method="multileads")``: it takes ~0.6 s per 10 s record here
(measured, neurokit2 0.2.13), 3x the whole page budget of the 5 pages/s target, and it does not
expose per-lead ST/Q/T morphology, which the four classes are defined by. So this module uses an
ECGSYN-like sum-of-Gaussians beat model with explicit P/Q/R/S/ST/T parameters:

* Every wave is a time-domain pulse (Gaussian; asymmetric Gaussian for T; a smooth plateau for the
  ST segment) placed relative to each beat's QRS onset, with a per-lead signed amplitude.
* Limb leads come from frontal-plane vectors (amplitude, angle on the hexaxial system), so a
  territory's ST/Q/T change shows in the right leads with reciprocal changes for free. Only I and II
  are synthesised; III, aVR, aVL, aVF are derived (Einthoven/Goldberger), so the relations hold
  exactly also for the noise.
* Precordial leads V1-V6 get per-lead amplitudes from a randomised normal R/S progression.

Classes and their defining features are documented in :func:`simulate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
FS = 500  # samples per second
DURATION = 10.0  # seconds
N_SAMPLES = int(FS * DURATION)

# Leads each territory is read in (used by the generator and by tests).
TERRITORY_LEADS: dict[str, tuple[str, ...]] = {
    "anterior": ("V1", "V2", "V3", "V4"),
    "inferior": ("II", "III", "aVF"),
    "lateral": ("I", "aVL", "V5", "V6"),
}
TERRITORIES: tuple[str, ...] = tuple(TERRITORY_LEADS)
ABNORMAL_RHYTHMS: tuple[str, ...] = ("afib", "pvc", "bradycardia", "tachycardia", "av_block")

# Component rows of the basis matrix (lead-independent time courses).
_COMPONENTS = ("P", "Q", "R", "S", "ST", "T", "VR", "VT", "F")
_CI = {c: i for i, c in enumerate(_COMPONENTS)}
# Independent leads actually synthesised: I, II, V1..V6.
_IND = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")


@dataclass
class ECG:
    """A synthetic 12-lead record plus the ground truth used to build it."""

    signals: np.ndarray  # (12, N) float32, mV, lead order LEADS
    fs: int
    qrs_onsets: np.ndarray  # sample index of each ventricular beat's QRS onset
    beat_types: list[str]  # "N" (conducted/supraventricular) or "V" (premature ventricular)
    p_onsets: np.ndarray  # sample index of each P wave peak (empty in AF)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def heart_rate(self) -> float:
        return float(self.params.get("heart_rate", 0.0))


def _proj(amp: float, angle_deg: float) -> tuple[float, float]:
    """Projection of a frontal-plane vector on leads I (0 deg) and II (60 deg)."""
    a = math.radians(angle_deg)
    return amp * math.cos(a), amp * math.cos(a - math.radians(60))


def derive_limb(i: np.ndarray, ii: np.ndarray) -> dict[str, np.ndarray]:
    """III, aVR, aVL, aVF from I and II (Einthoven / Goldberger)."""
    return {"III": ii - i, "aVR": -(i + ii) / 2, "aVL": i - ii / 2, "aVF": ii - i / 2}


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


# --------------------------------------------------------------------------------------------
# Rhythm: beat schedule
# --------------------------------------------------------------------------------------------


def _sinus_rr(rng: np.random.Generator, hr: float, n_max: int, var: float) -> list[float]:
    """RR intervals of a sinus rhythm with respiratory sinus arrhythmia and small jitter."""
    rr0 = 60.0 / hr
    resp_f = _u(rng, 0.15, 0.35)
    phase = _u(rng, 0, 2 * math.pi)
    out, t = [], 0.0
    for _ in range(n_max):
        rr = rr0 * (1 + var * math.sin(2 * math.pi * resp_f * t + phase) + rng.normal(0, var / 3))
        out.append(rr)
        t += rr
    return out


def _schedule(
    rng: np.random.Generator, cls: str, rhythm: str, hr: float, extras: dict[str, Any]
) -> tuple[list[tuple[float, str, float]], list[float]]:
    """Ventricular beats as (qrs_onset_s, type, pr_s) and P-wave peak times (s).

    pr_s < 0 means "no P wave drawn for this beat" (AF, PVC, escape rhythm).
    """
    t0 = -_u(rng, 0.0, 60.0 / max(hr, 30))  # random phase: the page starts mid-cycle
    beats: list[tuple[float, str, float]] = []
    ps: list[float] = []
    pr = _u(rng, 0.13, 0.19)
    if rhythm == "afib":
        t = t0
        while t < DURATION + 1:
            # irregularly irregular: RR drawn independently, wide spread
            rr = 60.0 / hr * rng.gamma(9.0, 1 / 9.0)
            rr = float(np.clip(rr, 0.33, 1.9))
            t += rr
            beats.append((t, "N", -1.0))
    elif rhythm == "av_block":
        kind = extras["av_block"]
        if kind == "third_degree":
            atrial = 60.0 / _u(rng, 65, 100)
            vent = 60.0 / hr
            ta = t0
            while ta < DURATION + 1:
                ps.append(ta)
                ta += atrial * (1 + rng.normal(0, 0.02))
            tv = -_u(rng, 0, vent)
            while tv < DURATION + 1:
                beats.append((tv, "N", -1.0))  # escape rhythm, P waves dissociated
                tv += vent * (1 + rng.normal(0, 0.02))
        else:
            atrial = 60.0 / _u(rng, 70, 105)
            ratio = int(rng.integers(3, 6)) if kind == "mobitz1" else int(rng.integers(2, 5))
            extras["conduction_ratio"] = f"{ratio}:{ratio - 1}"
            ta = t0
            k = int(rng.integers(0, ratio))
            pr_i = pr
            while ta < DURATION + 1:
                ps.append(ta)
                pos = k % ratio
                if pos == ratio - 1:
                    pr_i = pr  # dropped beat, PR resets
                else:
                    if kind == "mobitz1":
                        pr_i = pr + 0.06 * pos + 0.02 * pos * pos
                    beats.append((ta + pr_i - 0.05, "N", pr_i))
                k += 1
                ta += atrial * (1 + rng.normal(0, 0.01))
    else:
        rr_list = _sinus_rr(rng, hr, 60, 0.03 if cls == "normal" else 0.04)
        t = t0
        for rr in rr_list:
            beats.append((t, "N", pr))
            t += rr
            if t > DURATION + 1:
                break
    # premature ventricular beats
    n_pvc = int(extras.get("n_pvc", 0))
    if n_pvc:
        cand = [i for i in range(1, len(beats) - 1) if 0.2 < beats[i][0] < DURATION - 0.3]
        rng.shuffle(cand)
        chosen: list[int] = []
        for i in cand:
            if all(abs(i - j) > 1 for j in chosen):
                chosen.append(i)
            if len(chosen) == n_pvc:
                break
        for i in sorted(chosen):
            prev = beats[i - 1][0]
            nxt = beats[i][0]
            coupling = _u(rng, 0.5, 0.7) * (nxt - prev)
            beats[i] = (prev + coupling, "V", -1.0)
            if rhythm != "afib":
                # full compensatory pause: the following sinus beat keeps its time, skip one
                shift = 2 * (nxt - prev) - (beats[i + 1][0] - prev)
                beats[i + 1] = (beats[i + 1][0] + max(shift, 0.0), beats[i + 1][1], beats[i + 1][2])
        extras["n_pvc"] = len(chosen)
    if rhythm not in ("afib",) and not (rhythm == "av_block"):
        ps = [b[0] - b[2] + 0.05 for b in beats if b[1] == "N" and b[2] > 0]
    elif rhythm == "av_block" and extras["av_block"] != "third_degree":
        pass
    return beats, ps


# --------------------------------------------------------------------------------------------
# Morphology
# --------------------------------------------------------------------------------------------


def _normal_weights(rng: np.random.Generator) -> tuple[np.ndarray, dict[str, float]]:
    """(8 leads x components) signed amplitudes of a normal beat, plus the axis parameters."""
    W = np.zeros((len(_IND), len(_COMPONENTS)))
    axis = _u(rng, -10, 80)
    t_axis = axis + _u(rng, -25, 20)
    amp_r = _u(rng, 0.8, 1.7)
    limb = {
        "P": (_u(rng, 0.10, 0.22), _u(rng, 35, 70)),
        "Q": (_u(rng, 0.03, 0.12), axis + 180 + _u(rng, -40, 40)),
        "R": (amp_r, axis),
        "S": (_u(rng, 0.08, 0.35), axis + 180 + _u(rng, -50, 50)),
        "ST": (_u(rng, 0.0, 0.03), t_axis),
        "T": (_u(rng, 0.18, 0.45), t_axis),
    }
    for c, (a, ang) in limb.items():
        W[0, _CI[c]], W[1, _CI[c]] = _proj(a, ang)
    # precordial R, S, T, Q (depth, positive), P
    table = {
        "V1": ((0.1, 0.4), (0.5, 1.2), (-0.12, 0.2), (0.0, 0.0)),
        "V2": ((0.3, 0.8), (0.9, 1.8), (0.25, 0.7), (0.0, 0.0)),
        "V3": ((0.6, 1.3), (0.5, 1.2), (0.25, 0.65), (0.0, 0.03)),
        "V4": ((1.0, 1.9), (0.25, 0.7), (0.25, 0.6), (0.0, 0.06)),
        "V5": ((0.9, 1.7), (0.1, 0.4), (0.2, 0.5), (0.03, 0.1)),
        "V6": ((0.6, 1.3), (0.0, 0.2), (0.12, 0.4), (0.03, 0.1)),
    }
    scale = _u(rng, 0.75, 1.25)
    for k, lead in enumerate(_IND[2:], start=2):
        (r0, r1), (s0, s1), (t0, t1), (q0, q1) = table[lead]
        W[k, _CI["R"]] = scale * _u(rng, r0, r1)
        W[k, _CI["S"]] = -scale * _u(rng, s0, s1)
        W[k, _CI["T"]] = _u(rng, t0, t1)
        W[k, _CI["Q"]] = -_u(rng, q0, q1)
        W[k, _CI["P"]] = _u(rng, -0.05, 0.06) if lead == "V1" else _u(rng, 0.04, 0.12)
        W[k, _CI["ST"]] = _u(rng, 0.0, 0.05) if lead in ("V2", "V3") else _u(rng, -0.01, 0.02)
    return W, {"axis_deg": round(axis, 1), "r_amp_mV": round(amp_r, 3)}


def _pvc_weights(rng: np.random.Generator, W: np.ndarray) -> None:
    """Wide ventricular complex, T discordant; LBBB-like or RBBB-like origin at random."""
    ang = _u(rng, -90, 180)
    amp = _u(rng, 1.0, 2.0)
    W[0, _CI["VR"]], W[1, _CI["VR"]] = _proj(amp, ang)
    W[0, _CI["VT"]], W[1, _CI["VT"]] = _proj(amp * _u(rng, 0.3, 0.5), ang + 180)
    lbbb = rng.random() < 0.5
    for k in range(2, 8):
        frac = (k - 2) / 5.0  # V1 -> V6
        v = (-1 + 2 * frac) if lbbb else (1 - 2 * frac)
        a = amp * (0.6 + 0.6 * abs(v)) * (1 if v >= 0 else -1) * _u(rng, 0.7, 1.1)
        if abs(v) < 0.25:
            a = amp * _u(rng, -0.6, 0.6)
        W[k, _CI["VR"]] = a
        W[k, _CI["VT"]] = -a * _u(rng, 0.3, 0.5)


def _apply_acute_mi(rng: np.random.Generator, W: np.ndarray, territory: str) -> dict[str, float]:
    e = _u(rng, 0.18, 0.5)  # mV ST elevation in the territory
    hyper = _u(rng, 1.4, 2.3)
    iv = {lead: k for k, lead in enumerate(_IND)}

    def add_limb(comp: str, amp: float, ang: float) -> None:
        d1, d2 = _proj(amp, ang)
        W[0, _CI[comp]] += d1
        W[1, _CI[comp]] += d2

    if territory == "anterior":
        prof = {
            "V1": _u(rng, 0.5, 1.0),
            "V2": 1.0,
            "V3": 1.0,
            "V4": _u(rng, 0.7, 1.0),
            "V5": _u(rng, 0.0, 0.4),
            "V6": 0.0,
        }
        ang = _u(rng, -80, -40)
        add_limb("ST", 0.3 * e, ang)
        add_limb("T", 0.3 * e, ang)
    elif territory == "inferior":
        prof = {"V1": -0.3, "V2": -0.35, "V3": -0.2, "V4": 0.0, "V5": _u(rng, 0.0, 0.3), "V6": _u(rng, 0.0, 0.4)}
        ang = _u(rng, 95, 120)
        add_limb("ST", 1.15 * e, ang)
        add_limb("T", (hyper - 1) * 0.5 + 0.6 * e, ang)
    else:  # lateral
        prof = {"V1": -0.3, "V2": -0.3, "V3": 0.0, "V4": _u(rng, 0.2, 0.5), "V5": _u(rng, 0.8, 1.0), "V6": 1.0}
        ang = _u(rng, -35, -5)
        add_limb("ST", 1.1 * e, ang)
        add_limb("T", (hyper - 1) * 0.4 + 0.6 * e, ang)
    for lead, f in prof.items():
        k = iv[lead]
        W[k, _CI["ST"]] += f * e
        if f > 0.5:
            W[k, _CI["T"]] = abs(W[k, _CI["T"]]) * hyper + 0.7 * e  # hyperacute T
    # an early Q may already be there in some
    return {"st_elevation_mV": round(e, 3), "hyperacute_t_factor": round(hyper, 2), "st_vector_deg": round(ang, 1)}


def _apply_old_mi(rng: np.random.Generator, W: np.ndarray, territory: str) -> dict[str, Any]:
    mode = str(rng.choice(["q", "q+t", "q+t", "t"]))
    if mode == "t":
        mode = "q+t" if rng.random() < 0.3 else "t"
    iv = {lead: k for k, lead in enumerate(_IND)}
    qd = _u(rng, 0.3, 0.8)
    out: dict[str, Any] = {"mode": mode}
    away = {"anterior": None, "inferior": _u(rng, -100, -75), "lateral": _u(rng, 150, 190)}[territory]
    if "q" in mode:
        out["q_depth_mV"] = round(qd, 3)
        if away is not None:
            d1, d2 = _proj(qd * 1.15, away)
            W[0, _CI["Q"]] += d1
            W[1, _CI["Q"]] += d2
            # loss of R in the territory: shrink R along the territory direction
            d1, d2 = _proj(_u(rng, 0.1, 0.4), away + 180)
            W[0, _CI["R"]] -= d1
            W[1, _CI["R"]] -= d2
        pre = {"anterior": ("V1", "V2", "V3", "V4"), "inferior": (), "lateral": ("V5", "V6")}[territory]
        if territory == "anterior" and rng.random() < 0.5:
            pre = ("V1", "V2", "V3")
        for lead in pre:
            k = iv[lead]
            W[k, _CI["Q"]] = -qd * _u(rng, 0.8, 1.2)
            W[k, _CI["R"]] *= _u(rng, 0.05, 0.4)
    if "t" in mode:
        ti = _u(rng, 0.15, 0.45)
        out["t_inversion_mV"] = round(ti, 3)
        if away is not None:
            W[0, _CI["T"]], W[1, _CI["T"]] = _proj(ti * 1.2, away)
        pre = {"anterior": ("V1", "V2", "V3", "V4"), "inferior": (), "lateral": ("V5", "V6")}[territory]
        for lead in pre:
            W[iv[lead], _CI["T"]] = -ti * _u(rng, 0.7, 1.2)
    # no ST elevation in an old infarct
    W[:, _CI["ST"]] = np.minimum(W[:, _CI["ST"]], 0.02)
    return out


# --------------------------------------------------------------------------------------------
# Assembly
# --------------------------------------------------------------------------------------------


def _add_gauss(row: np.ndarray, t: float, sigma: float, amp: float, sigma_r: float | None = None) -> None:
    """row += amp * Gaussian(t, sigma) on the sample grid (window +-5 sigma)."""
    sr = sigma if sigma_r is None else sigma_r
    lo = max(int((t - 5 * sigma) * FS), 0)
    hi = min(int((t + 5 * sr) * FS) + 1, row.size)
    if hi <= lo:
        return
    x = np.arange(lo, hi) / FS - t
    s = np.where(x < 0, sigma, sr)
    row[lo:hi] += amp * np.exp(-0.5 * (x / s) ** 2)


def _add_plateau(row: np.ndarray, t_on: float, t_off: float, amp: float) -> None:
    lo = max(int((t_on - 0.03) * FS), 0)
    hi = min(int((t_off + 0.12) * FS) + 1, row.size)
    if hi <= lo:
        return
    x = np.arange(lo, hi) / FS
    row[lo:hi] += amp / (1 + np.exp(-(x - t_on) / 0.005)) / (1 + np.exp((x - t_off) / 0.03))


def _basis(
    beats: list[tuple[float, str, float]], ps: list[float], rng: np.random.Generator, m: dict[str, float], af: bool
) -> np.ndarray:
    B = np.zeros((len(_COMPONENTS), N_SAMPLES))
    prev = None
    for t, kind, _pr in beats:
        rr = (t - prev) if prev is not None else 60.0 / m["hr"]
        prev = t
        rr = float(np.clip(rr, 0.3, 2.0))
        j = 1 + rng.normal(0, 0.03)  # beat-to-beat amplitude jitter
        qt = m["qtc"] * math.sqrt(rr)
        if kind == "V":
            _add_gauss(B[_CI["VR"]], t + 0.07, 0.035, j)
            _add_gauss(B[_CI["VT"]], t + qt + 0.02 - 0.09, 0.07, j, 0.05)
            continue
        q = m["q_sigma"]
        _add_gauss(B[_CI["Q"]], t + 0.5 * q + 0.008, q, j)
        _add_gauss(B[_CI["R"]], t + q + 0.03, m["r_sigma"], j)
        _add_gauss(B[_CI["S"]], t + q + 0.03 + 2.6 * m["r_sigma"], m["s_sigma"], j)
        jpt = t + m["qrs"]
        tpk = t + qt - 0.075
        _add_plateau(B[_CI["ST"]], jpt, tpk, j)
        _add_gauss(B[_CI["T"]], tpk, m["t_sigma_l"], j, m["t_sigma_r"])
    for tp in ps:
        _add_gauss(B[_CI["P"]], tp, m["p_sigma"], 1 + rng.normal(0, 0.03))
    if af:
        tt = np.arange(N_SAMPLES) / FS
        f = np.zeros(N_SAMPLES)
        for _ in range(4):
            fr = _u(rng, 4.0, 8.0)
            f += rng.uniform(0.5, 1.0) * np.sin(
                2 * math.pi * fr * tt + _u(rng, 0, 6.3) + 0.8 * np.sin(2 * math.pi * 0.3 * tt)
            )
        B[_CI["F"]] = f / 2.5
    return B


def _noise(rng: np.random.Generator, n_leads: int) -> tuple[np.ndarray, dict[str, float]]:
    tt = np.arange(N_SAMPLES) / FS
    bw_amp = _u(rng, 0.0, 0.15)
    emg_amp = _u(rng, 0.0, 0.025)
    hum_amp = _u(rng, 0.0, 0.02)
    hum_f = 50.0 if rng.random() < 0.7 else 60.0
    out = np.zeros((n_leads, N_SAMPLES))
    for k in range(n_leads):
        for _ in range(2):
            out[k] += bw_amp * _u(rng, 0.2, 1.0) * np.sin(2 * math.pi * _u(rng, 0.05, 0.5) * tt + _u(rng, 0, 6.3))
        w = rng.normal(0, 1, N_SAMPLES)
        w = np.convolve(w, np.ones(3) / 3, mode="same")  # band-limit a little
        out[k] += emg_amp * w
        out[k] += hum_amp * _u(rng, 0.3, 1.0) * np.sin(2 * math.pi * hum_f * tt + _u(rng, 0, 6.3))
    return out, {
        "baseline_wander_mV": round(bw_amp, 4),
        "muscle_noise_mV": round(emg_amp, 4),
        "mains_hum_mV": round(hum_amp, 4),
        "mains_hz": hum_f,
    }


CLASSES: tuple[str, ...] = ("normal", "myocardial_infarction", "abnormal_heartbeat", "history_of_mi")


def simulate(cls: str, rng: np.random.Generator, noise: bool = True) -> ECG:
    """A 10 s 12-lead ECG of class `cls`.

    normal: sinus rhythm 55-100 bpm, axis -10..+80 deg, small natural variation.
    myocardial_infarction: sinus rhythm, ST elevation (0.18-0.5 mV) in one territory (anterior
        V1-V4, inferior II/III/aVF, lateral I/aVL/V5-V6) with reciprocal depression, hyperacute T.
    history_of_mi: pathological Q waves (0.3-0.8 mV, >= 40 ms) and/or T inversion in a territory,
        no ST elevation.
    abnormal_heartbeat: one of atrial fibrillation (no P, f waves, irregular RR), premature
        ventricular beats, sinus bradycardia (<50) / tachycardia (>110), AV block (Mobitz I/II,
        third degree); sometimes mixed with PVCs.
    """
    if cls not in CLASSES:
        raise ValueError(f"class {cls!r}: expected one of {', '.join(CLASSES)}")
    params: dict[str, Any] = {"class": cls}
    W, axis_info = _normal_weights(rng)
    params.update(axis_info)
    rhythm = "sinus"
    extras: dict[str, Any] = {}
    hr = _u(rng, 55, 100)
    if cls == "myocardial_infarction":
        hr = _u(rng, 60, 105)
    elif cls == "history_of_mi":
        hr = _u(rng, 55, 95)
    elif cls == "abnormal_heartbeat":
        rhythm = str(rng.choice(ABNORMAL_RHYTHMS))
        if rhythm == "afib":
            hr = _u(rng, 70, 140)
            if rng.random() < 0.3:
                extras["n_pvc"] = int(rng.integers(1, 3))
        elif rhythm == "pvc":
            hr = _u(rng, 60, 95)
            extras["n_pvc"] = int(rng.integers(1, 5))
        elif rhythm == "bradycardia":
            hr = _u(rng, 33, 48)
            if rng.random() < 0.25:
                extras["n_pvc"] = 1
        elif rhythm == "tachycardia":
            hr = _u(rng, 112, 160)
            if rng.random() < 0.25:
                extras["n_pvc"] = int(rng.integers(1, 3))
        else:
            extras["av_block"] = str(rng.choice(["mobitz1", "mobitz2", "third_degree"]))
            hr = _u(rng, 30, 45) if extras["av_block"] == "third_degree" else 70.0
    territory = None
    if cls == "myocardial_infarction":
        territory = str(rng.choice(TERRITORIES))
        params["mi"] = _apply_acute_mi(rng, W, territory)
    elif cls == "history_of_mi":
        territory = str(rng.choice(TERRITORIES))
        params["old_mi"] = _apply_old_mi(rng, W, territory)
    if extras.get("n_pvc"):
        _pvc_weights(rng, W)
    af = rhythm == "afib"
    if af:
        W[:, _CI["P"]] = 0.0
        fa = _u(rng, 0.03, 0.08)
        W[0, _CI["F"]], W[1, _CI["F"]] = _proj(fa, _u(rng, 40, 90))
        W[2, _CI["F"]] = fa * _u(rng, 1.0, 1.8)  # f waves clearest in V1
        W[3, _CI["F"]] = fa * 0.6
    beats, ps = _schedule(rng, cls, rhythm, hr, extras)
    escape = extras.get("av_block") == "third_degree"
    morph = {
        "hr": hr,
        "qtc": _u(rng, 0.38, 0.44),
        "q_sigma": _u(rng, 0.012, 0.02)
        if (cls == "history_of_mi" and "q" in params["old_mi"]["mode"])
        else _u(rng, 0.006, 0.009),
        "r_sigma": _u(rng, 0.008, 0.012) * (1.6 if escape else 1.0),
        "s_sigma": _u(rng, 0.009, 0.014) * (1.6 if escape else 1.0),
        "p_sigma": _u(rng, 0.018, 0.026),
        "t_sigma_l": _u(rng, 0.036, 0.05),
        "t_sigma_r": _u(rng, 0.03, 0.04),
    }
    morph["qrs"] = morph["q_sigma"] + 0.03 + 2.6 * morph["r_sigma"] + 2.5 * morph["s_sigma"]
    B = _basis(beats, ps, rng, morph, af)
    X = W @ B  # (8, N)
    noise_info: dict[str, Any] = {}
    if noise:
        nz, noise_info = _noise(rng, X.shape[0])
        X = X + nz
    i, ii = X[0], X[1]
    lim = derive_limb(i, ii)
    sig = np.stack([i, ii, lim["III"], lim["aVR"], lim["aVL"], lim["aVF"], *X[2:]]).astype(np.float32)
    onsets = np.array([round(b[0] * FS) for b in beats if 0 <= b[0] < DURATION], dtype=np.int64)
    types = [b[1] for b in beats if 0 <= b[0] < DURATION]
    # mean rate from ventricular beats inside the 10 s
    vb = [b[0] for b in beats]
    inside = [t for t in vb if 0 <= t < DURATION]
    if len(inside) >= 2:
        rate = 60.0 * (len(inside) - 1) / (inside[-1] - inside[0])
    else:
        rate = hr
    params.update(
        {
            "rhythm": rhythm,
            "territory": territory,
            "heart_rate": round(rate, 1),
            "target_rate": round(hr, 1),
            "n_beats": len(inside),
            "qrs_ms": round(1000 * morph["qrs"], 1),
            "qtc_s": round(morph["qtc"], 3),
            "noise": noise_info,
            **{k: v for k, v in extras.items()},
        }
    )
    p_on = np.array([round(t * FS) for t in ps if 0 <= t < DURATION], dtype=np.int64)
    return ECG(signals=sig, fs=FS, qrs_onsets=onsets, beat_types=types, p_onsets=p_on, params=params)
