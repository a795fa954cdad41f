"""Render synthetic femur radiographs from latents (vectorised numpy) and write DICOM.

The femur is drawn in a canonical frame (a right femur, AP view, lateral side on the
image's left, hip at the top) as X-ray path lengths through analytic shapes: a tube for
the shaft (cortex and medullary canal), ellipsoids for the trochanters, a capsule for
the neck, a sphere for the head, a faint pelvis with the acetabular rim, and soft tissue.
The shaft is cut by the fracture line; the distal fragment is displaced and angulated.

The view is zoomed on the proximal shaft around the fracture (shaft about a quarter of the
image width) and every latent is drawn through a monotone, exaggerated map, so the signs
stay visible at 32-48 px without changing the oracle (which depends on the latents only):
the line's tilt (``_drawn_angle``: near-transverse AFF vs steep oblique/spiral NFF), a
triangular medial spike (``_spike_drop``), a lateral cortical beak as a solid bump
(``_beak_height``), comminution fragments as bright chunks beside a wide fracture gap.
Per-view nuisance (rotation, scale, shift, exposure, noise, collimation, a side marker)
is drawn from a stream seeded by (seed, patient, view), so every image is reproducible
on its own, whatever the number of worker processes.

>>> import numpy as np, pandas as pd
>>> from benchmark.data.synth import SynthConfig
>>> from benchmark.data.synth_model import simulate
>>> _, lat, _ = simulate(SynthConfig(n_patients=40, n_aff=5))
>>> view = render(lat.iloc[0].to_dict(), view=0, size=64, seed=0)
>>> view.display.shape, view.stored.dtype
((64, 64), dtype('uint16'))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MU_SOFT, MU_CORTEX, MU_MARROW, MU_CANCELLOUS, MU_METAL = 0.45, 9.0, 1.2, 3.6, 60.0


@dataclass
class View:
    display: np.ndarray        # (S, S) float32 in [0, 1], bone bright (what a reader shows)
    stored: np.ndarray         # (S, S) uint16 or int16, the DICOM pixel data
    tags: dict                 # per-image DICOM attributes (photometric, bits, rescale, window)
    regions: dict = field(default_factory=dict)   # sign region -> box [x0, y0, x1, y1] (``sign_regions``)


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = ((np.arange(size, dtype=np.float32) + 0.5) / size)
    return np.meshgrid(c, c)


def _sqrt_pos(a: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(a, 0.0))


def _ellipsoid(x, y, cx, cy, rx, ry, depth, angle=0.0):
    """Projected thickness of an ellipsoid (in-plane radii rx, ry, depth radius ``depth``)."""
    ca, sa = float(np.cos(angle)), float(np.sin(angle))
    u = ((x - cx) * ca + (y - cy) * sa) / rx
    v = (-(x - cx) * sa + (y - cy) * ca) / ry
    return 2.0 * depth * _sqrt_pos(1.0 - u * u - v * v)


def _capsule(x, y, p0, p1, r):
    """Projected thickness of a cylinder with round ends between points p0 and p1."""
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    t = np.clip(((x - p0[0]) * dx + (y - p0[1]) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    d2 = (x - p0[0] - t * dx) ** 2 + (y - p0[1] - t * dy) ** 2
    return 2.0 * _sqrt_pos(r * r - d2)


def _smoothstep(a):
    return 0.5 + 0.5 * np.tanh(0.5 * a)


def _shaft_axis(y, p):
    return 0.50 + 0.05 * (y - 0.35) + p["bow"] * (y - 0.3) * (1.25 - y)


def _shaft(x, y, p, y_f):
    """(cortical path, canal path) through the shaft tube, with lateral beaking at y_f."""
    r0 = p["radius"]
    d = x - _shaft_axis(y, p)
    flare = 1.0 + 0.9 * _smoothstep((0.33 - y) / 0.03)
    outer = r0 * flare
    ct = p["cortex"] * r0 * (1.0 - 0.65 * _smoothstep((0.36 - y) / 0.03))
    inner = outer - ct
    # the beak: a peaked bump of solid cortex on the lateral side, centred on the fracture
    beak = _beak_height(p["beaking"]) * r0 * np.exp(-np.abs(y - y_f) / 0.045)
    t_out = 2.0 * _sqrt_pos(outer * outer - d * d)
    t_in = 2.0 * _sqrt_pos(inner * inner - d * d)
    u = (d + outer) / np.maximum(beak, 1e-6)      # 0 at the lateral surface, -1 at the beak's tip
    bump = np.where((d < 0) & (u > -1.0), 1.5 * r0 * _sqrt_pos(1.0 - u * u) * np.minimum(beak / (0.3 * r0), 1.0), 0.0)
    cap = _smoothstep((y - 0.21) / 0.01)           # the shaft merges into the trochanters
    return (t_out - t_in + bump) * cap, t_in * cap


def _beak_height(beaking: float) -> float:
    """Drawn beak height in shaft radii: monotone in the latent, exaggerated (~1 AFF, ~0.3 NFF)."""
    return float(min(2.0 * float(beaking) ** 1.4, 2.5))


def _spike_drop(spike: float) -> float:
    """Drawn drop of the medial spike in shaft radii: monotone in the latent (~1.7 AFF, ~0.6 NFF)."""
    return float(min(2.0 * float(spike) ** 1.3, 3.5))


def _drawn_angle(angle: float) -> float:
    """Drawn tilt of the fracture line in degrees: monotone in |angle|, saturating below 80."""
    return float(80.0 * np.tanh(float(angle) / 25.0))


def _fracture_s(x, y, p, y_f, angle_deg):
    """Signed axial distance to the fracture line (negative = proximal side)."""
    r0 = p["radius"]
    d = x - _shaft_axis(y_f, p)
    base = float(np.tan(np.radians(angle_deg))) * d
    # the medial (d > 0) part of the line turns steeply distal: a triangular medial spike
    brk = 0.15 * r0
    spike = np.where(d > brk, (d - brk) * _spike_drop(p["spike"]) * r0 / (r0 - brk), 0.0)
    curve = 0.0
    if abs(angle_deg) > 45.0:                    # long oblique lines curve (spiral look)
        curve = 4.0 * float(np.sign(angle_deg)) * d * d
    return y - y_f - base - spike - curve


def _to_distal(x, y, p, y_f):
    """Map image-frame points to the distal fragment's own frame (undo its displacement)."""
    r0 = p["radius"]
    cx = _shaft_axis(y_f, p)
    a = float(np.radians(p["angulation"]))
    xs = x - p["shift"] * r0 - cx
    ys = y + p["shorten"] * r0 - y_f
    ca, sa = float(np.cos(a)), float(np.sin(a))
    return cx + ca * xs + sa * ys, y_f - sa * xs + ca * ys


def _fragments(p, y_f: float, angle: float) -> list[tuple[float, ...]]:
    """Comminution fragments: (hole centre x, y, size, hole rotation, fragment centre x, y, rotation)
    each, from the patient's own stream (so ``sign_regions`` finds the same ones)."""
    frng = np.random.default_rng([int(p["seed"]), 7])
    cx = _shaft_axis(y_f, p)
    r0 = p["radius"]
    tilt = float(np.tan(np.radians(angle)))
    out = []
    for _ in range(int(min(p["fragments"], 6))):
        side = 1.0 if frng.random() < 0.5 else -1.0
        d_i = side * frng.uniform(0.4, 0.9) * r0
        size_i = frng.uniform(0.55, 0.85) * r0
        rot = frng.uniform(0, np.pi)
        hx, hy = cx + d_i, y_f + tilt * d_i
        off_x = side * frng.uniform(0.9, 1.5) * r0
        off_y = frng.uniform(-1.0, 1.0) * r0
        out.append((hx, hy, size_i, rot, hx + off_x, hy + off_y, rot + frng.uniform(-0.5, 0.5)))
    return out


def _lowfreq(rng, size, cells):
    small = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(small, mode="F").resize((size, size), Image.BILINEAR))


def _femur(x, y, p, rng, size):
    """Attenuation (sum of mu * path length) of soft tissue, pelvis and the fractured femur."""
    y_f = p["level"]
    # the drawn tilt exaggerates the latent angle (monotone, so no information is added or lost)
    angle = _drawn_angle(p["angle"])
    # soft tissue: thigh and hip
    xs = 0.52 + 0.05 * (y - 0.5)
    rs = 0.31 + 0.08 * _smoothstep((0.3 - y) / 0.08)
    att = MU_SOFT * 2.0 * _sqrt_pos(rs * rs - (x - xs) ** 2)
    # pelvis (ilium / acetabular roof) in the top medial corner, rim around the head; the
    # view is zoomed on the shaft, so these (and the head) are skipped when out of frame
    head_c, head_r = (0.70, 0.125), 0.068
    texture = 1.0 + 0.18 * _lowfreq(rng, size, 24)
    show_head = float(y.min()) < 0.2
    if show_head:
        pelvis = _ellipsoid(x, y, 0.86, -0.02, 0.26, 0.13, 0.05, 0.35)
        rim = np.exp(-((np.hypot(x - head_c[0], y - head_c[1]) - head_r * 1.22) / 0.008) ** 2)
        rim *= (y < head_c[1] + 0.02) * (x > head_c[0] - 0.08)
        att += MU_CANCELLOUS * pelvis * texture + 0.12 * rim
    # proximal femur: head, neck, trochanters (cancellous with a thin cortical shell)
    sx = _shaft_axis(0.27, p)
    neck_p0 = (sx + 0.01, 0.27)
    parts_out = np.maximum.reduce([
        _capsule(x, y, neck_p0, head_c, 0.043),
        _ellipsoid(x, y, sx - 0.045, 0.215, 0.062, 0.09, 0.055, -0.3),
        _ellipsoid(x, y, _shaft_axis(0.36, p) + p["radius"] * 1.05, 0.37, 0.022, 0.035, 0.02, 0.5),
    ] + ([_ellipsoid(x, y, head_c[0], head_c[1], head_r, head_r, head_r)] if show_head else []))
    parts_in = np.maximum.reduce([
        _capsule(x, y, neck_p0, head_c, 0.036),
        _ellipsoid(x, y, sx - 0.045, 0.215, 0.055, 0.083, 0.049, -0.3),
    ] + ([_ellipsoid(x, y, head_c[0], head_c[1], head_r - 0.006, head_r - 0.006, head_r - 0.006)] if show_head else []))
    att += (MU_CORTEX * 0.6 * np.maximum(parts_out - parts_in, 0) + MU_CANCELLOUS * parts_in * texture)
    # shaft: proximal fragment in place, distal fragment displaced
    gap = 2.0 * p["gap"] + 0.01                 # a wide, visible fracture gap
    cort_p, canal_p = _shaft(x, y, p, y_f)
    keep_p = _smoothstep((-_fracture_s(x, y, p, y_f, angle) - gap / 2) / 0.0025)
    xd, yd = _to_distal(x, y, p, y_f)
    cort_d, canal_d = _shaft(xd, yd, p, y_f)
    keep_d = _smoothstep((_fracture_s(xd, yd, p, y_f, angle) - gap / 2) / 0.0025)
    # the shaft is hollow where it meets the trochanteric region; avoid double counting
    overlap = 1.0 - np.clip(parts_out / 0.05, 0.0, 1.0) * (y < 0.3)
    # comminution: each fragment is a solid bright chunk beside the fracture, with a bite
    # taken out of the shaft where it came from
    holes = np.ones_like(x)
    frag_att = np.zeros_like(x)
    r0 = p["radius"]
    for hx, hy, size_i, rot, fx, fy, frot in _fragments(p, y_f, angle):
        holes *= 1.0 - 0.7 * (_ellipsoid(x, y, hx, hy, size_i * 0.8, size_i * 0.5, 1.0, rot) > 0)
        frag_att += MU_CORTEX * _ellipsoid(x, y, fx, fy, size_i, size_i * 0.55, 0.55 * r0, frot)
    shaft = (MU_CORTEX * cort_p + MU_MARROW * canal_p) * keep_p + (MU_CORTEX * cort_d + MU_MARROW * canal_d) * keep_d
    att += shaft * overlap * holes + frag_att
    # implants (label-independent): a lateral plate with screws, or a nail with a lag screw
    if p["implant"] == "plate":
        lat_edge = _shaft_axis(y, p) - r0 * 1.25
        plate = (np.abs(x - lat_edge) < 0.012) & (np.abs(y - y_f - 0.03) < 0.17)
        screws = (np.abs(np.mod(y - y_f - 0.03 + 0.17, 0.045) - 0.022) < 0.004) & (np.abs(y - y_f - 0.03) < 0.16) \
            & (np.abs(x - _shaft_axis(y, p)) < r0 * 1.2)
        att += MU_METAL * 0.02 * (plate | screws)
    elif p["implant"] == "nail":
        nail = (np.abs(x - _shaft_axis(y, p)) < 0.45 * (r0 - p["cortex"] * r0)) & (y > 0.17)
        lag = _capsule(x, y, (sx - 0.02, 0.33), head_c, 0.012) > 0
        att += MU_METAL * 0.02 * (nail | lag)
    return att


REGIONS = ("line", "spike", "beak", "fragments")   # where the signs are drawn (``sign_regions``)


def sign_regions(x: np.ndarray, y: np.ndarray, p: dict) -> dict[str, list[float]]:
    """Boxes around the places the image signs are drawn, as fractions of the image's width and height.

    ``x``, ``y``: each pixel's canonical coordinates (as ``render`` computes them). Regions, on
    both fragments: ``line`` the fracture line across the shaft (lateral and central part),
    ``spike`` its medial part (where the medial spike turns distal), ``beak`` the lateral
    cortex at the fracture level (where beaking shows, whatever its size), ``fragments`` the
    comminution fragments (when there are any). A region out of the frame is left out.
    Pure: draws nothing from the view's random stream, so the image is unchanged.
    """
    size = x.shape[0]
    y_f, r0 = p["level"], p["radius"]
    angle = _drawn_angle(p["angle"])
    band = 0.6 * r0 + 2.0 * p["gap"]
    xd, yd = _to_distal(x, y, p, y_f)
    masks = {name: np.zeros(x.shape, dtype=bool) for name in REGIONS}
    beak = _beak_height(p["beaking"]) * r0
    for u, v in ((x, y), (xd, yd)):          # the proximal fragment, then the distal one in its own frame
        d = u - _shaft_axis(v, p)
        d_f = u - _shaft_axis(y_f, p)
        near = (np.abs(_fracture_s(u, v, p, y_f, angle)) < band) & (np.abs(d) < 1.3 * r0)
        masks["line"] |= near & (d_f <= 0.15 * r0)
        masks["spike"] |= near & (d_f > 0.15 * r0)
        masks["beak"] |= (np.abs(v - y_f) < 0.15) & (d > -r0 - beak - 0.3 * r0) & (d < -r0 * (1.0 - p["cortex"]))
    for *_, fx, fy, _rot in _fragments(p, y_f, angle):
        masks["fragments"] |= np.hypot(x - fx, y - fy) < 1.1 * r0
    gx, gy = _grid(size)
    half = 0.5 / size
    out = {}
    for name, m in masks.items():
        if m.any():
            out[name] = [round(float(gx[m].min()) - half, 4), round(float(gy[m].min()) - half, 4),
                         round(float(gx[m].max()) + half, 4), round(float(gy[m].max()) + half, 4)]
    return out


_FONTS: dict = {}


def _font(px: int):
    if px not in _FONTS:
        _FONTS[px] = ImageFont.load_default(size=px)
    return _FONTS[px]


def _marker(size: int, letter: str, corner: int, px: int) -> np.ndarray:
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    m = max(2, size // 20)
    xy = [(m, m), (size - m - px, m), (m, size - m - px * 1.2), (size - m - px, size - m - px * 1.2)][corner]
    draw.rectangle([xy[0] - 1, xy[1], xy[0] + px * 0.8, xy[1] + px * 1.15], fill=90)
    draw.text(xy, letter, fill=255, font=_font(px))
    return np.asarray(img, dtype=np.float32) / 255.0


def render(p: dict, view: int, size: int, seed: int) -> View:
    """One view of the patient whose latents and nuisance are ``p`` (a row of ``latents``)."""
    rng = np.random.default_rng([seed, 5, int(p["seed"]), view])
    gx, gy = _grid(size)
    rot = float(np.radians(rng.normal(0.0, 6.0)))
    # zoomed on the proximal shaft (the shaft ~20-25 % of the width), framed around the
    # fracture level (a nuisance variable) so the fracture sits in the middle third
    scale = rng.uniform(1.7, 2.1)
    tx, ty = rng.uniform(-0.05, 0.05, 2)
    ca, sa = float(np.cos(rot)), float(np.sin(rot))
    u, v = (gx - 0.5 - tx) / scale, (gy - 0.5 - ty) / scale
    x, y = ca * u + sa * v + 0.5, -sa * u + ca * v + float(p["level"]) - 0.03
    if p["side"] == "L":                     # left femur: mirror image of the canonical right
        x = 1.0 - x
    regions = sign_regions(x, y, p)
    att = _femur(x, y, p, rng, size)
    k = rng.uniform(1.1, 1.5) * float(p.get("exposure", 1.0))   # exposure / detector response (synth --exposure)
    val = 1.0 - np.exp(-k * att)
    gamma = rng.uniform(0.8, 1.25)
    val = np.clip(val, 0, 1) ** gamma
    val = val * rng.uniform(0.85, 0.97) + rng.uniform(0.0, 0.06)
    val += rng.normal(0.0, rng.uniform(0.008, 0.025), val.shape).astype(np.float32) + 0.02 * _lowfreq(rng, size, 6)
    # collimation: unexposed borders look bright
    edges = rng.uniform(0.0, 0.10, 4) * (rng.random(4) < 0.7)
    coll = (gx < edges[0]) | (gx > 1 - edges[1]) | (gy < edges[2]) | (gy > 1 - edges[3])
    val = np.where(coll, np.float32(0.88) + np.float32(0.02) * rng.standard_normal(val.shape, dtype=np.float32), val)
    letter = {"R": "R", "L": "L"}[p["side"]] if rng.random() < 0.8 else {"R": "H", "L": "V"}[p["side"]]
    mark = _marker(size, letter, int(rng.integers(0, 4)), max(6, size // 12))
    val = np.where(mark > 0, np.maximum(val, mark * 0.98), val)
    display = np.clip(val, 0.0, 1.0).astype(np.float32)

    bits = int(rng.choice([12, 14, 16], p=[0.5, 0.25, 0.25]))
    maxv = 2 ** bits - 1
    mono1 = rng.random() < 0.15
    stored = np.round(display * maxv).astype(np.int64)
    if mono1:
        stored = maxv - stored
    base = float(rng.choice([0.0, -1024.0]))  # modality value = display * maxv + base
    intercept = base
    signed = bits == 16 and rng.random() < 0.2
    if signed:                               # signed pixel data, undone by the intercept
        stored = stored - 2 ** 15
        intercept += 2 ** 15
    body = display[~coll] if (~coll).any() else display
    lo, hi = np.quantile(body, [0.01, 0.995])
    if mono1:
        lo, hi = 1 - hi, 1 - lo
    center = base + (lo + hi) / 2 * maxv       # the window is on modality values
    width = max((hi - lo) * maxv, 1.0)
    tags = {"bits": bits, "signed": signed, "photometric": "MONOCHROME1" if mono1 else "MONOCHROME2",
            "intercept": intercept, "center": round(center, 1), "width": round(width, 1),
            "modality": "DX" if rng.random() < 0.7 else "CR", "spacing": round(0.14 * 2048 / size / scale, 4)}
    return View(display, stored.astype(np.int16 if signed else np.uint16), tags, regions)


def write_dicom(path: Path, view: View, patient_id: str, side: str, seed: int, patient: int, index: int) -> None:
    """Write ``view`` as an uncompressed DICOM file with fake, deterministic identifiers."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    t = view.tags
    sop_class = "1.2.840.10008.5.1.4.1.1.1.1" if t["modality"] == "DX" else "1.2.840.10008.5.1.4.1.1.1"
    src = [str(seed), str(patient)]
    sop_uid = generate_uid(entropy_srcs=src + [str(index), "sop"])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = generate_uid(entropy_srcs=src + ["study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=src + [str(index), "series"])
    ds.PatientName = "SYNTHETIC^PATIENT"
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyDate = "20100101"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.SeriesNumber = index + 1
    ds.InstanceNumber = 1
    ds.Modality = t["modality"]
    ds.Manufacturer = "SYNTHETIC"
    ds.BodyPartExamined = "FEMUR" if index % 3 else "HIP"
    ds.ViewPosition = "AP"
    ds.ImageLaterality = side
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = t["photometric"]
    ds.Rows, ds.Columns = view.stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = t["bits"]
    ds.HighBit = t["bits"] - 1
    ds.PixelRepresentation = 1 if t["signed"] else 0
    ds.PixelSpacing = [t["spacing"], t["spacing"]]
    ds.RescaleSlope = 1
    ds.RescaleIntercept = t["intercept"]
    ds.RescaleType = "US"
    ds.WindowCenter = t["center"]
    ds.WindowWidth = t["width"]
    ds.PixelData = view.stored.astype("<i2" if t["signed"] else "<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
