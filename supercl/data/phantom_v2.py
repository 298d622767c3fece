"""Phantom v2: abdominal CT / MR phantoms whose organ classes differ by shape, position and texture.

The package's one phantom: :func:`supercl.data.write_msd` writes its datasets. The earlier v1
generator (formerly ``supercl.data.phantom``, now ``tests/phantom_v1.py``, kept for the inputs
that tests and benchmarks pin) gives each organ class its own
intensity and little else, which favours a segmentation model that reads
intensity and penalises the brightness/contrast invariance that contrastive
pre-training learns. Real organs are told apart by shape, anatomical position
and texture, and their intensity bands overlap. This generator draws such
volumes. Everything is deterministic given the seed; only numpy and scipy are
used.

Geometry
--------
Arrays are ``(D, H, W)``: slice ``k`` is axial, slice 0 is the cranial end,
row 0 is anterior and column 0 is the patient's right (radiological display).
The anatomy is defined relative to the field of view and to the z range:

* the body is a Fourier-deformed ellipse (about 76-88 % of the width and
  56-68 % of the height) whose size and centre drift smoothly along z, with a
  subcutaneous fat shell, an abdominal muscle wall, ribs in the cranial half
  (oblique bright arcs that move along the wall from slice to slice), a
  vertebral body (cortical rim, marrow, intervertebral discs along z) at the
  posterior midline with paraspinal muscle behind it, and visceral background
  in between: a smooth random mixture of fat and bowel-like soft tissue with
  a few gas pockets;
* each organ class has a **shape family**, a **position prior** in
  body-normalised coordinates ``u`` (left-right, -1 patient right .. +1 left)
  and ``v`` (-1 anterior .. +1 posterior), and a **z range** in relative
  slice position (0 cranial .. 1 caudal; ranges may extend past the ends, so
  organs are cut by the volume like in a real scan). Cross-sections grow and
  shrink smoothly along z (blunt ellipsoid profile), so organs appear and
  disappear across slices. Per volume the centre (+-0.04), size (x0.88-1.12),
  orientation, z range and a low-order Fourier deformation of the outline
  (interpolated along z) are drawn anew:

  ===  ============  =====================================  ================  ===========
  id   name          shape family                           position (u, v)   z range
  ===  ============  =====================================  ================  ===========
  1    liver         large lobed organ (right lobe + left    (-0.42, -0.12)    -0.15..0.62
                     lobe crossing the midline cranially)
  2    spleen        crescent (ellipse minus a medial bite)  (+0.58, +0.30)    0.00..0.52
  3    kidneys       bilateral beans with a medial hilum     (+-0.46, +0.40)   0.38..0.94
                     notch, bright cortex rim                                  (right +0.04)
  4    aorta         thin round tube along the whole z       (+0.12, +0.43)    all
                     range, tapering caudally
  5    gallbladder   thin-walled cyst (bright wall ring,     (-0.24, -0.38)    0.33..0.60
                     fluid lumen)
  6    pancreas      thin curved lobulated strip rising to   (+0.15, +0.12)    0.30..0.56
                     the splenic hilum
  7    psoas         bilateral round muscles beside the      (+-0.28, +0.64)   0.45..1.30
                     spine, growing caudally
  ===  ============  =====================================  ================  ===========

  ``n_organs = k`` draws classes ``1..k`` (default 5); the other classes are
  not drawn (their place stays background tissue).

Texture
-------
Every tissue carries a texture: Gaussian-filtered white noise with unit
variance scaled to a per-class amplitude, with a per-class correlation length
(in mm, converted to voxels with ``spacing``):

* liver: fine speckle (correlation 0.6 mm, 5 HU);
* spleen: coarse blobs (3.5 mm, 14 HU);
* kidneys: striated (anisotropic, 4 mm left-right, 0.5 mm antero-posterior,
  18 HU) plus a cortex 25 HU brighter than the medulla;
* aorta: smooth (6 mm, 3 HU); gallbladder lumen: smooth (5 mm, 2 HU);
* pancreas: lobulated grain (1.6 mm, 16 HU);
* psoas: fibres (6 mm along z, 3 mm antero-posterior, 0.6 mm left-right,
  9 HU).

Intensities (CT, HU) and their overlaps
---------------------------------------
Class means: liver 62, spleen 50, kidneys 140 (cortex 155 / medulla 130),
aorta 165, gallbladder 12 (wall 65), pancreas 42, psoas 52; visceral fat -95,
bowel 25, gas -900, muscle 50, fat shell -105, ribs 500, vertebral cortex
650, marrow 230, discs 85. Every volume uses the same tissue means up to a
jitter of +-max(4 HU, 4 %), and the same shape families, position priors and
textures, so a model can learn the classes across volumes. The bands of
liver, spleen, pancreas and psoas overlap each other (and the bowel and
muscle background), as do those of kidneys and aorta: intensity alone cannot
separate them. Measured on four 24 x 96 x 96 volumes with noise and partial
volume, the overlap coefficient of the classes' HU histograms (1 =
identical) is 0.69 for liver / spleen, 0.74 liver / psoas, 0.90 spleen /
pancreas, 0.92 spleen / psoas, 0.87 kidneys / aorta, but 0.20 gallbladder /
aorta and 0.28 liver / kidneys.

Partial volume
--------------
Tissues are rendered on three sub-slices per slice (the slice integrates over
its thickness: through-plane partial volume) and the continuous intensity map
is blurred in-plane with a Gaussian point-spread function (FWHM 1.5 mm) before
noise, so boundary voxels take intermediate values. Labels come from the
un-blurred geometry at each slice centre.

Noise
-----
CT: correlated Gaussian noise with a band-pass (filtered back-projection-like)
power spectrum, a difference of in-plane Gaussians (0.6 mm and 1.6 mm),
normalised to a standard deviation of 12-22 HU drawn per volume, then scaled
by 1.3 at the body centre down to 0.8 at the body edge and in the air (the
centre's projections cross more tissue): about 10-30 HU in the body.

MR (``modality="MR"``)
----------------------
T2-weighted-like contrast in arbitrary units (roughly 0..1500), with a
different ordering than CT: gallbladder fluid 1000 > kidneys 480 > marrow 450
> spleen 420 > pancreas 265 > liver 235 > psoas 175 > aorta 60 (flow void);
fat 650-700, bowel 300, air 0. Liver, pancreas and psoas overlap, as do
spleen and kidneys. Each volume gets a global gain (x0.7-1.4), a smooth
multiplicative bias field ``exp(f)`` (``f`` a random combination of low-order
cosines in z, y, x, scaled to a peak of 0.18-0.28, i.e. about +-20-30 %) and
Rician noise (magnitude of the signal plus complex Gaussian noise, sigma 2.5-4
% of the liver signal), so the air is Rayleigh-distributed and never
negative. Tissue means jitter by +-4 % per volume.

Speed: about 0.3 s for a 24 x 128 x 128 volume on one core; ``write_msd(...)`` writes the
demo-sized dataset (30 such volumes) in about 10 s.
``tests/test_phantom_v2.py`` checks each property above.

>>> from supercl.data.phantom_v2 import phantom_v2_volume
>>> image, labels = phantom_v2_volume(24, 128, 128, seed=0)
>>> image.shape, labels.dtype, int(labels.max())
((24, 128, 128), dtype('uint8'), 5)
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from scipy import ndimage

from supercl._validate import check_int, check_seed, check_spacing

__all__ = ["phantom_v2_volume", "phantom_v2_slice", "CLASS_NAMES", "MAX_ORGANS",
           "normalise_modality"]

SeedLike = Union[int, np.integer, np.random.SeedSequence]

# ----------------------------------------------------------------------------
# tissues: (name, CT HU, MR a.u., texture field name, CT texture sd, MR texture sd)
# ----------------------------------------------------------------------------

_TISSUES = (
    ("air", -1000.0, 0.0, None, 0.0, 0.0),
    ("fat_shell", -105.0, 700.0, "fat", 5.0, 25.0),
    ("muscle_wall", 50.0, 180.0, "muscle", 6.0, 15.0),
    ("rib", 500.0, 150.0, "marrow", 40.0, 20.0),
    ("visceral_fat", -95.0, 650.0, "fat", 5.0, 25.0),
    ("bowel", 25.0, 300.0, "bowel", 12.0, 40.0),
    ("gas", -900.0, 5.0, "fat", 30.0, 2.0),
    ("cortex", 650.0, 40.0, "marrow", 30.0, 5.0),
    ("marrow", 230.0, 450.0, "marrow", 30.0, 40.0),
    ("disc", 85.0, 800.0, "smooth", 5.0, 30.0),
    ("paraspinal", 50.0, 180.0, "muscle", 6.0, 15.0),
    ("liver", 62.0, 235.0, "liver", 5.0, 12.0),
    ("spleen", 50.0, 420.0, "spleen", 14.0, 35.0),
    ("kidney_cortex", 155.0, 500.0, "kidney", 18.0, 40.0),
    ("kidney_medulla", 130.0, 460.0, "kidney", 18.0, 40.0),
    ("aorta", 165.0, 60.0, "aorta", 3.0, 8.0),
    ("gallbladder_wall", 65.0, 250.0, "smooth", 2.0, 10.0),
    ("gallbladder_lumen", 12.0, 1000.0, "smooth", 2.0, 15.0),
    ("pancreas", 42.0, 265.0, "pancreas", 16.0, 35.0),
    ("psoas", 52.0, 175.0, "psoas", 9.0, 18.0),
)
_T = {name: i for i, row in enumerate(_TISSUES) for name in (row[0],)}

# Texture fields: Gaussian correlation lengths (sigma, mm) along (z, y, x).
_TEXTURES = {
    "fat": (3.0, 2.0, 2.0),
    "muscle": (4.0, 0.6, 0.6),
    "bowel": (2.5, 1.2, 1.2),
    "marrow": (1.5, 0.8, 0.8),
    "liver": (1.0, 0.6, 0.6),
    "spleen": (4.0, 3.5, 3.5),
    "kidney": (2.5, 0.5, 4.0),
    "aorta": (8.0, 6.0, 6.0),
    "smooth": (5.0, 5.0, 5.0),
    "pancreas": (2.0, 1.6, 1.6),
    "psoas": (6.0, 3.0, 0.6),
}
_TEXTURE_NAMES = tuple(_TEXTURES)

#: Organ class names, label ``k`` is ``CLASS_NAMES[k - 1]``.
CLASS_NAMES = ("liver", "spleen", "kidneys", "aorta", "gallbladder", "pancreas", "psoas")
#: Largest supported ``n_organs``.
MAX_ORGANS = len(CLASS_NAMES)

_SUBSLICES = 3              # through-plane partial volume: sub-slices per slice
_PSF_FWHM_MM = 1.5          # in-plane point-spread function
_CT_NOISE_MM = (0.6, 1.6)   # band-pass noise: difference of these Gaussians
_CT_NOISE_HU = (12.0, 22.0)
_MR_NOISE = (0.025, 0.04)   # Rician sigma as a fraction of the liver signal
_MR_BIAS = (0.18, 0.28)     # peak of log bias field
_MR_GAIN = (0.7, 1.4)
_VISCERAL_MM = (4.0, 6.0, 6.0)  # correlation of the fat / bowel mixture (z, y, x)
_CLASS_JITTER = 0.04        # relative per-volume jitter of tissue means (>= 4 HU in CT)


@dataclass(frozen=True)
class _Organ:
    """Position prior and size of one organ class (body-normalised units)."""
    u: float
    v: float
    z0: float
    z1: float
    ru: float   # semi-axis along the organ's first axis (u units; circles: v units)
    rv: float
    angle: float = 0.0
    fourier: float = 0.08


_ORGANS = (
    _Organ(u=-0.42, v=-0.12, z0=-0.15, z1=0.62, ru=0.42, rv=0.52, angle=0.2, fourier=0.12),
    _Organ(u=0.58, v=0.30, z0=0.00, z1=0.52, ru=0.21, rv=0.36, angle=-0.55),       # spleen
    _Organ(u=0.46, v=0.40, z0=0.38, z1=0.94, ru=0.15, rv=0.23, angle=0.35),        # kidneys
    _Organ(u=0.12, v=0.43, z0=-1.0, z1=2.0, ru=0.09, rv=0.09, fourier=0.02),       # aorta
    _Organ(u=-0.24, v=-0.38, z0=0.33, z1=0.60, ru=0.10, rv=0.14, angle=0.5, fourier=0.04),
    _Organ(u=0.15, v=0.12, z0=0.30, z1=0.56, ru=0.36, rv=0.08, angle=-0.35),       # pancreas
    _Organ(u=0.28, v=0.64, z0=0.45, z1=1.30, ru=0.15, rv=0.15, fourier=0.05),      # psoas
)


# ----------------------------------------------------------------------------
# argument validation
# ----------------------------------------------------------------------------

def _check_n_organs(n_organs: Any) -> int:
    if isinstance(n_organs, (bool, np.bool_)) or not isinstance(n_organs, numbers.Integral):
        raise TypeError(f"n_organs must be an integer in 0..{MAX_ORGANS}, got "
                        f"{type(n_organs).__name__} {n_organs!r}")
    if not 0 <= n_organs <= MAX_ORGANS:
        raise ValueError(f"n_organs must be in 0..{MAX_ORGANS} (classes {', '.join(CLASS_NAMES)}), "
                         f"got {n_organs}")
    return int(n_organs)


_MR_NAMES = frozenset({"MR", "MRI", "T1", "T2", "T1W", "T2W"})


def normalise_modality(modality: Any) -> str:
    """``"CT"`` or ``"MR"`` for a modality name (case-insensitive; ``"MRI"``, ``"T2"`` ... are MR).

    Raises TypeError for a non-string and ValueError for any other name.
    """
    if not isinstance(modality, str):
        raise TypeError(f"modality must be 'CT' or 'MR', got {type(modality).__name__} "
                        f"{modality!r}")
    name = modality.strip().upper()
    if name == "CT":
        return "CT"
    if name in _MR_NAMES:
        return "MR"
    raise ValueError(f"modality must be 'CT' or 'MR' (or an MR name: MRI, T1, T2), "
                     f"got {modality!r}")


def _children(ss: np.random.SeedSequence, n: int) -> List[np.random.SeedSequence]:
    """The first ``n`` children of ``ss``, without changing ``ss`` (unlike ``ss.spawn``)."""
    return [np.random.SeedSequence(ss.entropy, spawn_key=tuple(ss.spawn_key) + (i,),
                                   pool_size=ss.pool_size) for i in range(n)]


# ----------------------------------------------------------------------------
# geometry
# ----------------------------------------------------------------------------

def _profile(t: np.ndarray) -> np.ndarray:
    """Cross-section scale of a blunt ellipsoid at relative height ``t``; 0 for ``|t| >= 1``."""
    p = 2.5
    return np.clip(1.0 - np.abs(t) ** p, 0.0, 1.0) ** (1.0 / p)


def _q(du, dv, ru, rv, angle, coeffs=None):
    """Normalised radius of a rotated, Fourier-deformed ellipse (inside where ``q < 1``).

    ``du``, ``dv`` are offsets from the centre (float32 arrays, broadcastable),
    ``ru``, ``rv`` the semi-axes (broadcastable, > 0), ``angle`` the rotation
    (radians, a scalar); ``coeffs`` a list of ``(cos_k, sin_k)`` amplitudes of
    the orders k = 2, 3, ... of the boundary radius, each broadcastable against
    ``du``. ``cos(k theta)`` and ``sin(k theta)`` come from angle addition: no
    ``arctan2``, which took 80 % of the time of a volume.
    """
    f32 = np.float32
    ca, sa = f32(math.cos(angle)), f32(math.sin(angle))
    a = (du * ca + dv * sa) / np.asarray(ru, dtype=f32)
    b = (dv * ca - du * sa) / np.asarray(rv, dtype=f32)
    rho = np.sqrt(a * a + b * b)
    if not coeffs:
        return rho
    inv = f32(1.0) / np.maximum(rho, f32(1e-12))
    c1, s1 = a * inv, b * inv
    ck, sk = c1 * c1 - s1 * s1, f32(2.0) * s1 * c1
    radius = f32(1.0)
    for cos_k, sin_k in coeffs:
        radius = radius + np.asarray(cos_k, dtype=f32) * ck + np.asarray(sin_k, dtype=f32) * sk
        ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1
    return rho / np.maximum(radius, f32(0.4))


class _Frame:
    """Body-normalised coordinates of a stack of ``Z`` (sub-)slices of ``H x W``.

    ``zt`` (Z, 1, 1): relative z; ``u`` (Z, 1, W) and ``v`` (Z, H, 1):
    left-right and antero-posterior coordinates, -1..1 across the inner body
    (inside the wall); ``cx``, ``cy``, ``ax``, ``ay`` (Z, 1, 1): the inner
    body's centre and semi-axes in pixels; ``aspect = ay / ax`` (to draw
    circles in pixels).
    """

    def __init__(self, zt, cx, cy, ax, ay, w, h):
        f32 = np.float32
        self.zt = zt
        self.cx, self.cy, self.ax, self.ay = cx, cy, ax, ay
        self.u = ((np.arange(w, dtype=f32)[None, None, :] - cx) / ax).astype(f32)
        self.v = ((np.arange(h, dtype=f32)[None, :, None] - cy) / ay).astype(f32)
        self.aspect = (ay / ax).astype(f32)
        self.h, self.w = h, w

    def box(self, zs: slice, cu, cv, reach: float) -> Tuple[slice, slice]:
        """Row and column slices covering ``|u - cu| <= reach``, ``|v - cv| <= reach`` on ``zs``."""
        cu = np.broadcast_to(cu, self.zt[zs].shape)
        cv = np.broadcast_to(cv, self.zt[zs].shape)
        x_lo = float(np.min(self.cx[zs] + self.ax[zs] * (cu - reach)))
        x_hi = float(np.max(self.cx[zs] + self.ax[zs] * (cu + reach)))
        y_lo = float(np.min(self.cy[zs] + self.ay[zs] * (cv - reach)))
        y_hi = float(np.max(self.cy[zs] + self.ay[zs] * (cv + reach)))

        def span(lo, hi, n):
            start = min(max(0, int(math.floor(lo))), n)
            return slice(start, max(start, min(n, int(math.ceil(hi)) + 1)))
        return span(y_lo, y_hi, self.h), span(x_lo, x_hi, self.w)


def _fourier_pair(rng: np.random.Generator, amplitude: float) -> np.ndarray:
    """Two random sets of (3, 2) Fourier coefficients (orders 2, 3, 4), decaying as 1/k."""
    return rng.normal(0.0, 1.0, (2, 3, 2)) * (amplitude / np.array([2.0, 3.0, 4.0]))[None, :, None]


def _lerp_coeffs(pair: np.ndarray, w: np.ndarray) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Fourier coefficients interpolated between the two sets of ``pair`` with weight ``w``."""
    return [(pair[0, k, 0] * (1 - w) + pair[1, k, 0] * w,
             pair[0, k, 1] * (1 - w) + pair[1, k, 1] * w) for k in range(pair.shape[1])]


def _draw_organs(rng: np.random.Generator) -> List[Dict[str, Any]]:
    """Per-volume parameters of every organ class (drawn for all classes, whatever n_organs)."""
    out = []
    for spec in _ORGANS:
        sides = []
        for _ in range(2):   # bilateral organs use both; others the first
            sides.append(dict(
                du=rng.normal(0.0, 0.025), dv=rng.normal(0.0, 0.025),
                drift_u=rng.normal(0.0, 0.04), drift_v=rng.normal(0.0, 0.04),
                su=rng.uniform(0.88, 1.12), sv=rng.uniform(0.88, 1.12),
                dangle=rng.normal(0.0, 0.12),
                fourier=_fourier_pair(rng, spec.fourier),
                dz0=rng.uniform(-0.04, 0.04), dz1=rng.uniform(-0.04, 0.04),
                extra=rng.uniform(-1.0, 1.0, size=4)))
        out.append(dict(spec=spec, sides=sides))
    return out


_Box = Tuple[slice, slice, slice]


def _organ_masks(cls: int, p: Dict[str, Any], f: _Frame
                 ) -> List[Tuple[_Box, np.ndarray, Optional[np.ndarray]]]:
    """Masks of organ class ``cls`` (1-based) in frame ``f``.

    Returns a list of ``(box, inside, inner)`` (one per body side for
    bilateral organs): ``box`` a tuple of (z, y, x) slices of the frame's
    ``(Z, H, W)`` grid, ``inside`` the organ's bool mask in that box,
    ``inner`` the part that gets the class's second tissue (kidney medulla,
    gallbladder lumen) or None. Only the box is evaluated: the z range where
    the organ exists and a conservative in-plane reach around its centre.
    """
    spec: _Organ = p["spec"]
    name = CLASS_NAMES[cls - 1]
    bilateral = name in ("kidneys", "psoas")
    zt_all = f.zt[:, 0, 0]
    result = []
    for side_i, side in enumerate(p["sides"][:2 if bilateral else 1]):
        sign = -1.0 if (bilateral and side_i == 1) else 1.0
        shift = 0.04 if (name == "kidneys" and sign < 0) else 0.0   # the right kidney sits lower
        z0 = spec.z0 + side["dz0"] + shift
        z1 = spec.z1 + side["dz1"] + shift
        zc, half = 0.5 * (z0 + z1), 0.5 * (z1 - z0)
        present = np.nonzero(np.abs(zt_all - zc) < half)[0]
        if present.size == 0:
            continue
        zs = slice(int(present[0]), int(present[-1]) + 1)
        zt = f.zt[zs]
        t = ((zt - zc) / half).astype(np.float32)
        prof = np.ones_like(t) if name == "aorta" else _profile(t).astype(np.float32)
        prof = np.maximum(prof, np.float32(1e-6))
        cu = sign * (spec.u + side["du"]) + side["drift_u"] * t
        cv = spec.v + side["dv"] + side["drift_v"] * t
        ru = spec.ru * side["su"]
        rv = spec.rv * side["sv"]
        angle = sign * (spec.angle + side["dangle"])
        coeffs = _lerp_coeffs(side["fourier"], np.clip((t + 1.0) / 2.0, 0.0, 1.0))
        reach = 1.25 * max(ru, rv) * (1.0 + float(np.abs(side["fourier"]).sum())) + 0.05
        if name == "liver":
            reach += 0.85
        elif name == "pancreas":
            reach += 0.15
        ys, xs = f.box(zs, cu, cv, reach)
        box = (zs, ys, xs)
        du = f.u[zs][:, :, xs] - cu
        dv = f.v[zs][:, ys, :] - cv
        aspect = f.aspect[zs]
        inner = None
        if name == "liver":
            q = _q(du, dv, ru * prof, rv * prof, angle, coeffs)
            # Left lobe: crosses the midline anteriorly, only in the cranial part.
            lobe_t = np.clip((zt - z0) / (0.55 * (z1 - z0)), 0.0, 1.0)
            lobe = np.maximum(np.clip(1.0 - lobe_t ** 2, 0.0, 1.0), 1e-6).astype(np.float32)
            ql = _q(du - (0.42 + 0.05 * side["extra"][0]), dv + 0.2,
                    0.36 * side["su"] * lobe, 0.24 * side["sv"] * lobe, -0.3, coeffs)
            inside = (q < 1.0) | ((lobe > 1e-3) & (ql < 1.0))
        elif name == "spleen":
            q = _q(du, dv, ru * prof, rv * prof, angle, coeffs)
            # The bite: an ellipse displaced medially in the organ frame.
            ca, sa = math.cos(angle), math.sin(angle)
            bu = -0.8 * ru * prof
            qb = _q(du - bu * ca, dv - bu * sa, 0.5 * ru * prof, 0.7 * rv * prof, angle)
            inside = (q < 1.0) & (qb >= 1.0)
        elif name == "kidneys":
            q = _q(du, dv, ru * prof, rv * prof, angle, coeffs)
            # Hilum notch on the medial side.
            qn = _q(du + sign * 0.95 * ru * prof, dv, 0.45 * ru * prof, 0.35 * rv * prof, 0.0)
            inside = (q < 1.0) & (qn >= 1.0)
            inner = inside & (q < 0.7)
        elif name == "aorta":
            r = (spec.ru * side["su"] * (1.0 - 0.25 * np.clip(zt, 0.0, 1.0))).astype(np.float32)
            inside = _q(du, dv, r * aspect, r, 0.0, coeffs) < 1.0
        elif name == "gallbladder":
            q = _q(du, dv, ru * prof, rv * prof, angle, coeffs)
            inside = q < 1.0
            inner = inside & (q < 0.75)          # a thin wall ring around the fluid
        elif name == "pancreas":
            ca, sa = np.float32(math.cos(angle)), np.float32(math.sin(angle))
            a = du * ca + dv * sa
            b = dv * ca - du * sa - np.float32(0.9 * (1.0 + 0.2 * side["extra"][1])) * a * a
            lob = 1.0 + 0.25 * np.sin(7.0 * a / ru + 3.0 * side["extra"][2])
            q = np.sqrt((a / (ru * prof)) ** 2 + (b / (rv * prof * lob)) ** 2)
            inside = q < 1.0
        else:  # psoas: grows caudally
            grow = np.clip(0.35 + 0.65 * (zt - z0) / (0.6 * (z1 - z0)), 0.35, 1.0)
            r = (spec.ru * side["su"] * prof * grow).astype(np.float32)
            inside = _q(du, dv, r * aspect * 1.1, r * 0.9, angle, coeffs) < 1.0
        result.append((box, inside, inner))
    return result


# ----------------------------------------------------------------------------
# rendering
# ----------------------------------------------------------------------------

def _bias_field(rng: np.random.Generator, zt: np.ndarray, h: int, w: int,
                peak: float) -> np.ndarray:
    """Smooth multiplicative field ``exp(f)``, (Z, H, W).

    ``f`` is a random combination of cosines of order <= 1 in z and <= 2 in y
    and x (coefficients decaying with the total order), scaled so that
    ``max |f| = peak``.
    """
    yy = np.linspace(0.0, 1.0, h, dtype=np.float64)[None, :, None]
    xx = np.linspace(0.0, 1.0, w, dtype=np.float64)[None, None, :]
    zz = np.asarray(zt, dtype=np.float64).reshape(-1, 1, 1)
    f = np.zeros((zz.shape[0], h, w))
    for kz in range(2):
        for ky in range(3):
            for kx in range(3):
                if kz == ky == kx == 0:
                    continue
                c = rng.normal(0.0, 1.0) / (1.0 + kz + ky + kx)
                ph = rng.uniform(0.0, 2.0 * math.pi, size=3)
                f = f + c * (np.cos(math.pi * kz * zz + ph[0] * (kz > 0))
                             * np.cos(math.pi * ky * yy + ph[1] * (ky > 0))
                             * np.cos(math.pi * kx * xx + ph[2] * (kx > 0)))
    m = float(np.abs(f).max())
    f = f * (peak / m) if m > 0 else f
    return np.exp(f).astype(np.float32)


def _render(z_centres: np.ndarray, thickness: float, h: int, w: int, n_organs: int,
            ss: np.random.SeedSequence, modality: str, spacing: Tuple[float, float, float],
            noise: bool, bias_field: bool) -> Tuple[np.ndarray, np.ndarray]:
    """Render the slices at relative z positions ``z_centres`` (each ``thickness`` thick)."""
    ss_geom, ss_tex, ss_noise, ss_bias, ss_int, ss_visc = _children(ss, 6)
    rng = np.random.default_rng(ss_geom)
    d = len(z_centres)
    s = _SUBSLICES
    offsets = (np.arange(s) + 0.5) / s - 0.5                        # within the slice
    zt = (np.asarray(z_centres, dtype=np.float64)[:, None] + thickness * offsets[None, :])
    zt = zt.reshape(-1, 1, 1)                                        # (d * s, 1, 1)
    centre_sub = s // 2

    # Body outline: semi-axes and centre drift smoothly along z.
    ax0 = rng.uniform(0.38, 0.44) * w
    ay0 = rng.uniform(0.28, 0.34) * h
    freq, phase = rng.uniform(0.4, 1.0), rng.uniform(0.0, 2.0 * math.pi)
    amp = rng.uniform(0.02, 0.06, size=2)
    wave = np.sin(math.pi * freq * zt + phase)
    ax = ax0 * (1.0 + amp[0] * wave)
    ay = ay0 * (1.0 + amp[1] * wave)
    cx = (w - 1) / 2.0 + rng.uniform(-0.02, 0.02) * w + rng.normal(0, 0.01) * w * zt
    cy = (h - 1) / 2.0 + rng.uniform(-0.02, 0.02) * h + rng.normal(0, 0.01) * h * zt
    body_coeffs = _lerp_coeffs(_fourier_pair(rng, 0.05), np.clip(zt, 0.0, 1.0))
    fat = rng.uniform(0.05, 0.09)
    wall = rng.uniform(0.04, 0.06)
    inner_q = 1.0 - fat - wall
    rib_phase, rib_twist = rng.uniform(0.0, 2.0 * math.pi), rng.uniform(6.0, 10.0)
    spine_du, spine_r = rng.normal(0.0, 0.015), rng.uniform(0.15, 0.18)
    disc_period, disc_phase = rng.uniform(0.18, 0.26), rng.uniform(0.0, 1.0)
    visc_level = rng.uniform(-0.3, 0.3)
    organs = _draw_organs(rng)

    frame = _Frame(zt, cx, cy, ax * inner_q, ay * inner_q, w, h)
    u, v = frame.u, frame.v
    q_body = _q(u * np.float32(inner_q), v * np.float32(inner_q), 1.0, 1.0, 0.0, body_coeffs)

    # Background tissues.
    tissue = np.zeros(q_body.shape, dtype=np.uint8)
    tissue[q_body < 1.0] = _T["fat_shell"]
    tissue[q_body < 1.0 - fat] = _T["muscle_wall"]
    phi = np.arctan2(v * frame.aspect, u)
    rib = ((zt < 0.55) & (q_body < 1.0 - fat) & (q_body >= inner_q + 0.01)
           & (np.cos(7.0 * phi + rib_twist * zt + rib_phase) > 0.55)
           & (np.sin(phi) < 0.55))                                  # not behind the spine
    tissue[rib] = _T["rib"]
    inside = q_body < inner_q
    # Visceral mixture of fat and bowel from a smooth random field (shared by all sub-slices).
    rng_v = np.random.default_rng(ss_visc)
    field = rng_v.standard_normal((d, h, w), dtype=np.float32)
    visc_sigma = np.array(_VISCERAL_MM) / np.array(spacing)
    visc_sigma[0] = visc_sigma[0] if d > 1 else 0.0
    field = ndimage.gaussian_filter(field, visc_sigma, mode="reflect")
    field /= max(float(field.std()), 1e-6)
    visc = np.repeat(field, s, axis=0)
    tissue[inside] = _T["bowel"]
    tissue[inside & (visc + visc_level > 0.1)] = _T["visceral_fat"]
    gas_field = ndimage.gaussian_filter(rng_v.standard_normal((d, h, w), dtype=np.float32),
                                        np.r_[visc_sigma[0], 0.3 * visc_sigma[1:]], mode="reflect")
    gas_field /= max(float(gas_field.std()), 1e-6)
    tissue[(tissue == _T["bowel"]) & (np.repeat(gas_field, s, axis=0) > 2.0)] = _T["gas"]
    # Paraspinal muscles behind the spine, vertebral body with cortex, marrow and discs.
    para = inside & (_q(u - spine_du, v - 0.95, 0.4, 0.32, 0.0) < 1.0)
    tissue[para] = _T["paraspinal"]
    q_spine = _q(u - spine_du, v - 0.72, spine_r * frame.aspect, spine_r, 0.0)
    disc = ((zt / disc_period + disc_phase) % 1.0) < 0.22
    tissue[(q_spine < 1.0)] = _T["cortex"]
    tissue[(q_spine < 0.78)] = _T["marrow"]
    tissue[(q_spine < 1.0) & disc] = _T["disc"]
    allowed = (q_body < inner_q - 0.02) & (q_spine >= 1.15)

    labels_sub = np.zeros(q_body.shape, dtype=np.uint8) if n_organs else None
    tissue_of = {1: ("liver", None), 2: ("spleen", None),
                 3: ("kidney_cortex", "kidney_medulla"), 4: ("aorta", None),
                 5: ("gallbladder_wall", "gallbladder_lumen"), 6: ("pancreas", None),
                 7: ("psoas", None)}
    # Paint order: large organs first, small ones (drawn inside or against them) last.
    for cls in [c for c in (1, 2, 6, 3, 7, 4, 5) if c <= n_organs]:
        outer_t, inner_t = tissue_of[cls]
        for box, inside_c, inner_c in _organ_masks(cls, organs[cls - 1], frame):
            m = inside_c & allowed[box]
            tissue[box][m] = _T[outer_t]
            if inner_c is not None:
                tissue[box][m & inner_c] = _T[inner_t]
            labels_sub[box][m] = cls
    labels = (labels_sub[centre_sub::s].copy() if n_organs
              else np.zeros((d, h, w), dtype=np.uint8))

    # Intensities: per-tissue mean (class-consistent, small per-volume jitter) + texture.
    rng_i = np.random.default_rng(ss_int)
    col = 1 if modality == "CT" else 2
    base = np.array([row[col] for row in _TISSUES], dtype=np.float64)
    jitter = rng_i.uniform(-1.0, 1.0, size=len(_TISSUES))
    base = base + np.maximum(np.abs(base) * _CLASS_JITTER, 4.0 if col == 1 else 0.0) * jitter
    base[_T["air"]] = _TISSUES[0][col]
    amp = np.array([row[4 if col == 1 else 5] for row in _TISSUES], dtype=np.float32)
    fid = np.array([(_TEXTURE_NAMES.index(row[3]) if row[3] else 0) for row in _TISSUES])

    # Sum over sub-slices of (mean + amplitude * texture), one texture field at a time so
    # that memory stays a few (D, H, W) arrays whatever the number of fields.
    image = np.zeros((d, h, w), dtype=np.float32)
    base32 = base.astype(np.float32)
    for k in range(s):
        image += base32[tissue[k::s]]
    rng_t = np.random.default_rng(ss_tex)
    sp = np.array(spacing)
    present = np.unique(tissue)
    for k, name in enumerate(_TEXTURE_NAMES):
        white = rng_t.standard_normal((d, h, w), dtype=np.float32)  # drawn for every field
        amp_k = np.where(fid == k, amp, np.float32(0.0)).astype(np.float32)
        if not amp_k[present].any():
            continue
        sigma = np.array(_TEXTURES[name]) / sp
        sigma[0] = sigma[0] if d > 1 else 0.0
        f_k = ndimage.gaussian_filter(white, sigma, mode="reflect")
        f_k -= f_k.mean()
        f_k /= max(float(f_k.std()), 1e-6)
        for j in range(s):
            image += amp_k[tissue[j::s]] * f_k
    image /= np.float32(s)

    # In-plane point-spread function (partial volume), before noise.
    psf = _PSF_FWHM_MM / 2.3548 / sp[1:]
    image = ndimage.gaussian_filter(image, (0.0, psf[0], psf[1]), mode="nearest")

    q_c = q_body[centre_sub::s]
    rng_n = np.random.default_rng(ss_noise)
    rng_b = np.random.default_rng(ss_bias)
    if modality == "CT":
        sigma_hu = rng_n.uniform(*_CT_NOISE_HU)
        if noise:
            white = rng_n.standard_normal((d, h, w), dtype=np.float32)
            s1 = np.r_[0.0, _CT_NOISE_MM[0] / sp[1:]]
            s2 = np.r_[0.0, _CT_NOISE_MM[1] / sp[1:]]
            n = (ndimage.gaussian_filter(white, s1, mode="wrap")
                 - 0.6 * ndimage.gaussian_filter(white, s2, mode="wrap"))
            n /= max(float(n.std()), 1e-6)
            # Heavier in the body centre (more attenuation on every projection).
            profile = 0.8 + 0.5 * np.clip(1.0 - q_c ** 2, 0.0, 1.0)
            image += (sigma_hu * profile * n).astype(np.float32)
    else:
        gain = rng_b.uniform(*_MR_GAIN)
        peak = rng_b.uniform(*_MR_BIAS)
        bias = _bias_field(rng_b, np.asarray(z_centres), h, w, peak)
        image *= np.float32(gain)
        if bias_field:
            image *= bias
        frac = rng_n.uniform(*_MR_NOISE)
        np.maximum(image, 0.0, out=image)
        if noise:
            n1 = rng_n.standard_normal((d, h, w), dtype=np.float32)
            n2 = rng_n.standard_normal((d, h, w), dtype=np.float32)
            sig = np.float32(frac * base[_T["liver"]] * gain)
            image = np.sqrt((image + sig * n1) ** 2 + (sig * n2) ** 2)
    return np.ascontiguousarray(image, dtype=np.float32), labels


# ----------------------------------------------------------------------------
# public functions
# ----------------------------------------------------------------------------

def phantom_v2_volume(depth: int = 24, height: int = 128, width: int = 128, *,
                      n_organs: int = 5, seed: SeedLike = 0, modality: str = "CT",
                      spacing: Sequence[float] = (2.5, 0.8, 0.8), noise: bool = True,
                      bias_field: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """Draw an abdominal phantom volume whose organ classes differ by shape, position and texture.

    See the module docstring for the anatomy, textures, intensity bands,
    partial volume, noise and the MR variant. The ``depth`` slices span the
    abdomen from above the liver dome (slice 0) to below the kidneys, whatever
    ``depth``; the body fills the field of view whatever ``height`` and
    ``width``.

    Parameters
    ----------
    depth, height, width : int
        Volume size in voxels (slices, rows, columns), each >= 1.
    n_organs : int
        Number of organ classes, 0..7 (:data:`CLASS_NAMES`: liver, spleen,
        kidneys, aorta, gallbladder, pancreas, psoas); classes ``1..n_organs``
        are drawn. Organs that do not fit a tiny volume may be absent.
    seed : int or numpy.random.SeedSequence
        Non-negative integer seed (or SeedSequence); same seed, same volume.
    modality : str
        ``"CT"`` (Hounsfield units) or ``"MR"`` (also ``"MRI"``, ``"T1"``,
        ``"T2"``; arbitrary units, T2-like contrast, bias field, Rician noise).
    spacing : sequence of 3 float
        Voxel size ``(dz, dy, dx)`` in mm, the array's axis order. It sets the
        physical scales of the textures, the point-spread function and the
        CT noise grain, not the anatomy.
    noise : bool
        Add the noise (True). False gives the noise-free partial-volume image,
        which the tests use; the random draws (and so the geometry and
        textures) do not depend on it.
    bias_field : bool
        MR only: apply the multiplicative bias field (True); ignored for CT.

    Returns
    -------
    image : numpy.ndarray, float32, shape (depth, height, width)
        CT: HU (about -1000 in air); MR: non-negative arbitrary units.
    labels : numpy.ndarray, uint8, shape (depth, height, width)
        0 background, ``k`` organ class ``k`` (1..n_organs), from the
        un-blurred geometry at each slice centre.

    Raises
    ------
    TypeError
        A size, ``n_organs``, ``seed``, ``modality`` or ``spacing`` of the
        wrong type (the message names the argument).
    ValueError
        A non-positive size, ``n_organs`` outside 0..7, an unknown modality, a
        negative seed or a non-positive spacing (the message names the
        argument).

    Examples
    --------
    >>> image, labels = phantom_v2_volume(8, 64, 64, n_organs=3, seed=1)
    >>> image.shape, image.dtype, labels.dtype
    ((8, 64, 64), dtype('float32'), dtype('uint8'))
    >>> sorted(set(labels.ravel().tolist())) <= [0, 1, 2, 3]
    True
    >>> mr, _ = phantom_v2_volume(8, 64, 64, seed=1, modality="MR")
    >>> bool(mr.min() >= 0)
    True
    """
    depth = check_int(depth, "depth", 1)
    height = check_int(height, "height", 1)
    width = check_int(width, "width", 1)
    n_organs = _check_n_organs(n_organs)
    mod = normalise_modality(modality)
    spacing_t = check_spacing(spacing, ndim=3, axes="(dz, dy, dx) in mm")
    ss = check_seed(seed)
    z = (np.arange(depth) + 0.5) / depth
    return _render(z, 1.0 / depth, height, width, n_organs, ss, mod, spacing_t,
                   bool(noise), bool(bias_field))


def phantom_v2_slice(height: int = 128, width: int = 128, *, position: float = 0.45,
                     n_organs: int = 5, seed: SeedLike = 0, modality: str = "CT",
                     spacing: Sequence[float] = (2.5, 0.8, 0.8), noise: bool = True,
                     bias_field: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """One axial slice of a v2 phantom at relative z ``position`` (0 cranial .. 1 caudal).

    The slice is 1/24 of the abdomen thick (the default volume's slice);
    other arguments as :func:`phantom_v2_volume`. At the default
    ``position=0.45`` the five default classes are in view.

    Returns
    -------
    image : numpy.ndarray, float32, shape (height, width)
    labels : numpy.ndarray, uint8, shape (height, width)

    Examples
    --------
    >>> image, labels = phantom_v2_slice(96, 112, seed=3)
    >>> image.shape, sorted(set(labels.ravel().tolist()))
    ((96, 112), [0, 1, 2, 3, 4, 5])
    """
    height = check_int(height, "height", 1)
    width = check_int(width, "width", 1)
    if isinstance(position, (bool, np.bool_)) or not isinstance(position, numbers.Real):
        raise TypeError(f"position must be a real number in [0, 1], got {position!r}")
    if not 0.0 <= float(position) <= 1.0:
        raise ValueError(f"position must be in [0, 1], got {position}")
    n_organs = _check_n_organs(n_organs)
    mod = normalise_modality(modality)
    spacing_t = check_spacing(spacing, ndim=3, axes="(dz, dy, dx) in mm")
    ss = check_seed(seed)
    image, labels = _render(np.array([float(position)]), 1.0 / 24.0, height, width, n_organs,
                            ss, mod, spacing_t, bool(noise), bool(bias_field))
    return image[0], labels[0]


# ----------------------------------------------------------------------------
# Medical Segmentation Decathlon layout (used by supercl.data.msd.write_msd)
# ----------------------------------------------------------------------------

def msd_case(shape: Tuple[int, int, int], *, n_organs: int, seed: SeedLike, modality: str,
             spacing_xyz: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    """One case of a v2 MSD dataset as stored: ``(int16 image, uint8 labels)``, both (D, H, W).

    CT is rounded to HU and clipped to [-1024, 3071]; MR is rounded to integer
    arbitrary units and clipped to [0, 32767] (int16, as scanners store
    magnitude images; supercl's loader z-scores MR volumes, so the scale does
    not matter). ``spacing_xyz`` is the NIfTI voxel size ``(x, y, z)`` in mm.
    """
    mod = normalise_modality(modality)
    sx, sy, sz = spacing_xyz
    image, labels = phantom_v2_volume(*shape, n_organs=n_organs, seed=seed, modality=mod,
                                      spacing=(sz, sy, sx))
    lo, hi = (-1024, 3071) if mod == "CT" else (0, 32767)
    return np.clip(np.rint(image), lo, hi).astype(np.int16), labels


def msd_meta(n_organs: int, modality: str) -> Dict[str, Any]:
    """The ``name``, ``description`` and ``labels`` entries of a v2 dataset.json."""
    n_organs = _check_n_organs(n_organs)
    mod = normalise_modality(modality)
    return {
        "name": "SuperCLPhantomV2",
        "description": f"Synthetic abdominal {'CT' if mod == 'CT' else 'MR (T2-like)'} phantom "
                       f"generated by supercl.data.phantom_v2: organ classes differ by shape, "
                       f"position and texture; intensity bands overlap",
        "labels": {"0": "background", **{str(k): CLASS_NAMES[k - 1]
                                         for k in range(1, n_organs + 1)}},
    }
