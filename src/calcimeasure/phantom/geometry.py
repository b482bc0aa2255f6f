"""Projection geometry: body frame (mm) <-> image grid (row, col) pixels.

The limb is described in a *body frame* with coordinates ``(u, v)`` in mm in
the patient (object) plane: ``u`` runs along the limb axis from proximal to
distal, ``v`` across it (towards the radial/lateral side for a right limb).
A film maps body coordinates to image pixels by a similarity transform:

``pixel = c0 + shift_px + K * R(theta) @ D @ (body - center_body)``

with ``K = m / pitch`` (pixels per patient-plane mm), ``m = SID / (SID - OID)``
the magnification, ``R(theta)`` a counter-clockwise (as displayed) rotation in
(row, col) coordinates, ``D = diag(su, sv)`` the display convention
(``su = -1`` puts the distal end at the top, as for hands; ``su = +1`` the
proximal end, as for knees; ``sv = -1`` for right limbs puts the lateral
(radial, fibular) side on the viewer's left, ``sv = +1`` for left limbs), and
``c0`` the image centre.  All transforms
are returned as 3x3 homogeneous matrices acting on column vectors
``(row, col, 1)`` or ``(u, v, 1)``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "magnification",
    "rotation_matrix",
    "body_to_pixel_matrix",
    "apply_affine",
]


def magnification(sid_mm: float, oid_mm: float) -> float:
    """Geometric magnification ``sid / (sid - oid)`` of an object at ``oid_mm`` above the detector."""
    if not 0 <= oid_mm < sid_mm:
        raise ValueError(f"`oid_mm` must be in [0, sid_mm), got oid={oid_mm}, sid={sid_mm}")
    return sid_mm / (sid_mm - oid_mm)


def rotation_matrix(angle_deg: float) -> np.ndarray:
    """2x2 rotation acting on (row, col) vectors, counter-clockwise as displayed."""
    a = np.deg2rad(angle_deg)
    c, s = np.cos(a), np.sin(a)
    # Display CCW rotation: col' = col cos + row sin ; row' = row cos - col sin
    return np.array([[c, -s], [s, c]])


def body_to_pixel_matrix(
    *,
    center_body_mm: tuple[float, float],
    rotation_deg: float,
    axis_signs: tuple[float, float],
    shift_mm: tuple[float, float],
    magnification: float,
    pitch_mm: float,
    shape: tuple[int, int],
) -> np.ndarray:
    """3x3 matrix mapping body-frame (u, v) mm to image (row, col) pixels.

    Parameters
    ----------
    center_body_mm : (float, float)
        Body point that lands on the image centre (before `shift_mm`).
    rotation_deg : float
        Counter-clockwise (as displayed) rotation of the limb axis.
    axis_signs : (float, float)
        Display convention ``(su, sv)``, each +1 or -1 (see module docstring).
    shift_mm : (float, float)
        Patient-plane (row, col) offset of the limb from the image centre.
    magnification : float
        Geometric magnification ``m``.
    pitch_mm : float
        Detector pixel pitch.
    shape : (int, int)
        Image (rows, cols).
    """
    k = magnification / pitch_mm
    d = np.diag([float(axis_signs[0]), float(axis_signs[1])])
    a = k * rotation_matrix(rotation_deg) @ d
    c0 = np.array([(shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0])
    t = c0 + k * np.asarray(shift_mm, float) - a @ np.asarray(center_body_mm, float)
    m = np.eye(3)
    m[:2, :2] = a
    m[:2, 2] = t
    return m


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 3x3 homogeneous matrix to an (N, 2) array of points."""
    pts = np.asarray(points, float).reshape(-1, 2)
    return pts @ matrix[:2, :2].T + matrix[:2, 2]
