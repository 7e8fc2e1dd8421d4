"""Shape descriptors of 3D (and 2D) binary masks, per frame, in physical units.

One row per (sequence, frame). 3D frames get volume, surface area, sphericity, equivalent
diameter, principal axis lengths, elongation and flatness, extent, solidity, number of components,
Euler characteristic and mean / Gaussian curvature statistics; 2D frames get the planar analogues
(area, perimeter, circularity, ...). Per sequence, every row also carries the growth rate (slope of
the volume over frames) and the frame-to-frame shape change (1 - Dice with the previous frame).

How each quantity is computed (so numbers can be reproduced):

- Volume / area: voxel count times voxel volume (unbiased for smooth shapes).
- Surface: a marching-cubes mesh (:func:`skimage.measure.marching_cubes`, ``spacing`` in microns) of the
  mask after a light Gaussian smoothing (``sigma`` = 0.85 voxel per axis) that is clamped so every
  foreground voxel stays inside (value >= 0.55) and every background voxel outside (<= 0.45) the 0.5
  level. The smoothing removes the staircase bias of binary marching cubes (+8-9 % area on a sphere);
  the clamp keeps the topology of the voxel mask, so one-voxel-thin protrusions are not lost.
  Sphere and ellipsoid areas come out within about 1 % for radii of 10 voxels or more.
- Sphericity: pi^(1/3) (6 V)^(2/3) / A (1 for a ball), with V the volume enclosed by the mesh, so
  that V and A describe the same surface and sphericity stays <= 1 for small objects (with the voxel
  count it reaches 1.05 for a ball of radius 5 voxels). Equivalent diameter: (6 V / pi)^(1/3), V the
  voxel volume.
- Principal axes: eigenvalues l1 >= l2 >= l3 of the covariance of voxel centres (microns); full axis
  lengths 2 sqrt(5 l) (exact for a solid ellipsoid). Elongation sqrt(l2 / l1), flatness sqrt(l3 / l1)
  (IBSI definitions: 1 for a ball, towards 0 for elongated / flat shapes).
- Extent: volume / bounding-box volume. Solidity: mesh volume / convex-hull volume
  (:class:`scipy.spatial.ConvexHull` of the mesh vertices).
- Components: 26-connected (8 in 2D). Euler characteristic: :func:`skimage.measure.euler_number`
  with full connectivity (1 per solid blob, minus 1 per tunnel, plus 1 per cavity).
- Curvature, per mesh vertex (Meyer, Desbrun, Schroeder and Barr 2003, "Discrete differential-geometry
  operators for triangulated 2-manifolds"): mean curvature H from the cotangent Laplacian
  (mean-curvature normal, signed with the outward normal, positive on convex parts), Gaussian
  curvature K from the angle deficit, both divided by the mixed Voronoi area. Statistics are
  weighted by vertex area: the means of H and K come from the raw estimates; the standard
  deviations, the 5th and 95th percentiles of H and the area fraction with H < 0 (concave, e.g.
  between protrusions) come from estimates averaged over 4 vertex rings (about 3 voxels), because raw
  per-vertex values on a marching-cubes mesh are dominated by discretisation noise (on a ball of
  radius 20 voxels the raw sd of H is 1.8 times H; after averaging 0.4 times H). The dimensionless
  mean curvature is H_mean * r_eq (1 for a ball). The sum of K times area equals 2 pi chi of the mesh
  (Gauss-Bonnet), a check that the mesh is closed.
- 2D: area (pixel count), perimeter (length of the same smoothed, clamped iso-contour,
  :func:`skimage.measure.find_contours`), circularity 4 pi A / P^2 (A the area inside the contour),
  equivalent diameter, principal axes 4 sqrt(l) (exact for an ellipse), elongation sqrt(l2 / l1),
  extent, solidity (contour area over its convex-hull area), components, Euler number. No curvature
  columns in 2D.

Empty frames give a row with zero volume and NaN for the other descriptors. Sequences and files of
masks are measured by :mod:`cellinr.measurement.tables`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence

import numpy as np

from cellinr.errors import InputError, ParameterError
from cellinr.io.units import parse_spacing
from cellinr.measurement.protrusions import PROTRUSION_RADIUS_UM, protrusion_descriptors

logger = logging.getLogger(__name__)

#: Gaussian smoothing (voxels) before marching cubes; see the module docstring.
SMOOTH_SIGMA = 0.85
_CLAMP_LOW, _CLAMP_HIGH = 0.45, 0.55
#: Rounds of 1-ring averaging of per-vertex curvature before its spread and percentiles are taken.
CURVATURE_SMOOTHING = 4
_PAD = 3

#: Per-frame descriptors of 3D masks, in column order.
DESCRIPTORS_3D = (
    "volume_um3",
    "surface_area_um2",
    "sphericity",
    "equivalent_diameter_um",
    "major_axis_um",
    "intermediate_axis_um",
    "minor_axis_um",
    "elongation",
    "flatness",
    "extent",
    "solidity",
    "n_components",
    "euler_characteristic",
    "mean_curvature_mean_per_um",
    "mean_curvature_sd_per_um",
    "mean_curvature_p05_per_um",
    "mean_curvature_p95_per_um",
    "concave_area_fraction",
    "normalised_mean_curvature",
    "gaussian_curvature_mean_per_um2",
    "gaussian_curvature_sd_per_um2",
    "n_protrusions",
    "protrusion_volume_fraction",
)

#: Per-frame descriptors of 2D masks, in column order.
DESCRIPTORS_2D = (
    "area_um2",
    "perimeter_um",
    "circularity",
    "equivalent_diameter_um",
    "major_axis_um",
    "minor_axis_um",
    "elongation",
    "extent",
    "solidity",
    "n_components",
    "euler_characteristic",
    "n_protrusions",
    "protrusion_volume_fraction",
)

#: Per-sequence descriptors (repeated on each row of a sequence) and the frame-pair shape change.
SEQUENCE_DESCRIPTORS_3D = ("growth_rate_um3_per_frame", "growth_rate_um3_per_min", "relative_growth_rate_per_frame",
                           "relative_growth_rate_per_min", "shape_change")
SEQUENCE_DESCRIPTORS_2D = ("growth_rate_um2_per_frame", "growth_rate_um2_per_min", "relative_growth_rate_per_frame",
                           "relative_growth_rate_per_min", "shape_change")

#: Identifying columns that precede the descriptors in every row.
ID_COLUMNS = ("sequence", "source", "label", "frame", "n_frames", "time", "time_min", "ndim")

# --------------------------------------------------------------------------------------------
# single frame


def describe_mask(
    mask: np.ndarray,
    spacing: Sequence[float] | None = None,
    *,
    smoothing: float = SMOOTH_SIGMA,
    curvature_rings: int = CURVATURE_SMOOTHING,
    protrusion_radius_um: float = PROTRUSION_RADIUS_UM,
) -> dict[str, float]:
    """Shape descriptors of one binary mask, in physical units.

    Parameters
    ----------
    mask : (Z, Y, X) or (Y, X) bool ndarray
        The object (nonzero = inside). Several components are measured together.
    spacing : (z, y, x) or (y, x) microns, optional
        Voxel size; default 1 (then units are voxels).
    smoothing : Gaussian sigma (voxels) of the clamped smoothing before marching cubes / contours.
    curvature_rings : rounds of 1-ring averaging of per-vertex curvature (3D).
    protrusion_radius_um : opening radius separating thin protrusions from the body
        (:mod:`cellinr.measurement.protrusions`).

    Returns
    -------
    dict
        Keys :data:`DESCRIPTORS_3D` (3D) or :data:`DESCRIPTORS_2D` (2D), floats (NaN where undefined).
    """
    mask = np.asarray(mask)
    if mask.ndim not in (2, 3):
        raise InputError(f"mask: expected a 2D (Y, X) or 3D (Z, Y, X) array, got shape {mask.shape}")
    spacing = parse_spacing(spacing, ndim=mask.ndim, default=1.0)
    check_measurement_parameters(smoothing, curvature_rings, protrusion_radius_um)
    mask = mask != 0
    row = (_describe_3d(mask, spacing, smoothing=smoothing, rings=int(curvature_rings)) if mask.ndim == 3
           else _describe_2d(mask, spacing, smoothing=smoothing))
    row.update(protrusion_descriptors(mask, radius_um=protrusion_radius_um, spacing=spacing))
    return row


def check_measurement_parameters(smoothing: float, curvature_rings: int,
                                 protrusion_radius_um: float = PROTRUSION_RADIUS_UM) -> None:
    """Refuse a negative or non-finite smoothing, a negative or non-integer ring count, a bad radius."""
    if not (math.isfinite(float(protrusion_radius_um)) and float(protrusion_radius_um) > 0):
        raise ParameterError(f"protrusion radius {protrusion_radius_um}: must be a positive number of microns")
    if not (math.isfinite(float(smoothing)) and float(smoothing) >= 0):
        raise ParameterError(f"smoothing {smoothing}: must be a finite number >= 0 (voxels)")
    if isinstance(curvature_rings, bool) or int(curvature_rings) != curvature_rings or int(curvature_rings) < 0:
        raise ParameterError(f"curvature_rings {curvature_rings}: must be an integer >= 0")


def _crop(mask: np.ndarray, pad: int = _PAD) -> np.ndarray:
    """Crop to the bounding box of the foreground and pad with background on every side."""
    coords = [np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != ax)))
              for ax in range(mask.ndim)]
    box = tuple(slice(c[0], c[-1] + 1) for c in coords)
    return np.pad(mask[box], pad)


def _smoothed(mask: np.ndarray, sigma: float = SMOOTH_SIGMA) -> np.ndarray:
    """Smoothed indicator whose 0.5 level set follows the mask without the staircase."""
    from scipy import ndimage as ndi

    f = ndi.gaussian_filter(mask.astype(np.float32), sigma) if sigma > 0 else mask.astype(np.float32)
    return np.where(mask, np.maximum(f, _CLAMP_HIGH), np.minimum(f, _CLAMP_LOW))


def surface_mesh(mask: np.ndarray, spacing: Sequence[float] | None = None, *,
                 smoothing: float = SMOOTH_SIGMA) -> tuple[np.ndarray, np.ndarray]:
    """Closed, outward-oriented triangle mesh of a 3D mask, in microns of the cropped frame.

    Parameters
    ----------
    mask : (Z, Y, X) bool ndarray, not empty
    spacing : (z, y, x) microns, optional

    Returns
    -------
    verts : (V, 3) float64 ndarray
        Vertex positions (z, y, x) in microns, relative to the padded bounding box.
    faces : (F, 3) int ndarray
        Triangles, counter-clockwise seen from outside.
    """
    from skimage import measure

    spacing = parse_spacing(spacing, ndim=3, default=1.0)
    crop = _crop(np.asarray(mask) != 0)
    verts, faces, _, _ = measure.marching_cubes(_smoothed(crop, smoothing), 0.5, spacing=spacing)
    verts = verts.astype(np.float64)
    if _signed_volume(verts, faces) < 0:
        faces = faces[:, ::-1]
    return verts, faces


def _signed_volume(verts: np.ndarray, faces: np.ndarray) -> float:
    p0, p1, p2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    return float(np.einsum("ij,ij->i", p0, np.cross(p1, p2)).sum() / 6.0)


def mesh_curvatures(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Discrete mean and Gaussian curvature per vertex (Meyer et al. 2003).

    Parameters
    ----------
    verts : (V, 3) float ndarray
    faces : (F, 3) int ndarray, outward oriented, closed mesh

    Returns
    -------
    mean : (V,) float ndarray
        Mean curvature H (1/length), positive where the surface is convex.
    gaussian : (V,) float ndarray
        Gaussian curvature K (1/length^2), from the angle deficit.
    area : (V,) float ndarray
        Mixed Voronoi area of each vertex (length^2); sums to the mesh area.
    """
    n_verts = len(verts)
    p = [verts[faces[:, k]] for k in range(3)]
    # edge vectors leaving each corner k towards the two other corners
    u = [p[(k + 1) % 3] - p[k] for k in range(3)]
    v = [p[(k + 2) % 3] - p[k] for k in range(3)]
    cross = np.cross(u[0], v[0])
    dbl_area = np.linalg.norm(cross, axis=1)
    face_area = 0.5 * dbl_area
    ok = dbl_area > 1e-12 * max(float(dbl_area.max(initial=0.0)), 1e-300)
    safe = np.where(ok, dbl_area, 1.0)
    dots = [np.einsum("ij,ij->i", u[k], v[k]) for k in range(3)]
    cot = [np.where(ok, dots[k] / safe, 0.0) for k in range(3)]
    angle = [np.arctan2(np.linalg.norm(np.cross(u[k], v[k]), axis=1), dots[k]) for k in range(3)]

    # mixed Voronoi area: Voronoi region for non-obtuse triangles, else area/2 or area/4
    obtuse = np.stack([dots[k] < 0 for k in range(3)], axis=1)
    any_obtuse = obtuse.any(axis=1)
    area = np.zeros(n_verts)
    for k in range(3):
        a, b = (k + 1) % 3, (k + 2) % 3
        # Voronoi part of corner k: edges k->a (opposite corner b) and k->b (opposite corner a)
        vor = (np.einsum("ij,ij->i", u[k], u[k]) * cot[b] + np.einsum("ij,ij->i", v[k], v[k]) * cot[a]) / 8.0
        part = np.where(any_obtuse, np.where(obtuse[:, k], face_area / 2.0, face_area / 4.0), vor)
        np.add.at(area, faces[:, k], np.where(ok, part, 0.0))

    # cotangent Laplacian: edge (a, b) opposite corner k has weight cot(angle_k)
    lap = np.zeros((n_verts, 3))
    for k in range(3):
        a, b = faces[:, (k + 1) % 3], faces[:, (k + 2) % 3]
        w = cot[k][:, None] * (verts[a] - verts[b])
        np.add.at(lap, a, w)
        np.add.at(lap, b, -w)
    angle_sum = np.zeros(n_verts)
    for k in range(3):
        np.add.at(angle_sum, faces[:, k], np.where(ok, angle[k], 0.0))
    normals = np.zeros((n_verts, 3))
    for k in range(3):
        np.add.at(normals, faces[:, k], cross)
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-300)

    safe_area = np.where(area > 0, area, np.nan)
    # lap / (2A) = 2 H n (pointing outward on a convex surface)
    mean = 0.25 * np.einsum("ij,ij->i", lap, normals) / safe_area
    gaussian = (2.0 * np.pi - angle_sum) / safe_area
    return mean, gaussian, area


def _weighted_sd(values: np.ndarray, weights: np.ndarray) -> float:
    mean = np.average(values, weights=weights)
    return float(np.sqrt(np.average((values - mean) ** 2, weights=weights)))


def _weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(np.interp(q * cum[-1], cum, values[order]))


def _nan_row(keys: Iterable[str]) -> dict[str, float]:
    return {k: float("nan") for k in keys}


def _principal_variances(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    coords = np.argwhere(mask).astype(np.float64) * np.asarray(spacing)
    if len(coords) < 2:
        return np.zeros(mask.ndim)
    cov = np.cov(coords, rowvar=False)
    return np.clip(np.sort(np.linalg.eigvalsh(cov))[::-1], 0.0, None)


def _components_and_euler(mask: np.ndarray) -> tuple[int, int]:
    from scipy import ndimage as ndi
    from skimage.measure import euler_number

    structure = np.ones((3,) * mask.ndim, bool)
    _, n = ndi.label(mask, structure=structure)
    return int(n), int(euler_number(mask, connectivity=mask.ndim))


def _describe_3d(mask: np.ndarray, spacing: tuple[float, ...], *, smoothing: float, rings: int) -> dict[str, float]:
    from scipy.spatial import ConvexHull, QhullError
    from skimage import measure

    row = _nan_row(DESCRIPTORS_3D)
    n_vox = int(mask.sum())
    row["volume_um3"] = n_vox * float(np.prod(spacing))
    if n_vox == 0:
        row["n_components"] = 0.0
        row["euler_characteristic"] = 0.0
        return row
    crop = _crop(mask)
    volume = row["volume_um3"]
    verts, faces, _, _ = measure.marching_cubes(_smoothed(crop, smoothing), 0.5, spacing=spacing)
    verts = verts.astype(np.float64)
    if _signed_volume(verts, faces) < 0:
        faces = faces[:, ::-1]
    area = float(measure.mesh_surface_area(verts, faces))
    mesh_volume = abs(_signed_volume(verts, faces))
    row["surface_area_um2"] = area
    # volume and area of the same surface, so the isoperimetric bound (<= 1) holds at any size
    row["sphericity"] = math.pi ** (1 / 3) * (6 * mesh_volume) ** (2 / 3) / area if area > 0 else float("nan")
    row["equivalent_diameter_um"] = (6 * volume / math.pi) ** (1 / 3)
    lam = _principal_variances(crop, spacing)
    axes = 2.0 * np.sqrt(5.0 * lam)
    row["major_axis_um"], row["intermediate_axis_um"], row["minor_axis_um"] = (float(a) for a in axes)
    if lam[0] > 0:
        row["elongation"] = float(math.sqrt(lam[1] / lam[0]))
        row["flatness"] = float(math.sqrt(lam[2] / lam[0]))
    box = [s - 2 * _PAD for s in crop.shape]
    row["extent"] = n_vox / float(np.prod(box))
    try:
        hull = ConvexHull(verts)
        row["solidity"] = mesh_volume / hull.volume
    except (QhullError, ValueError):  # flat or degenerate objects have no 3D hull
        pass
    row["n_components"], row["euler_characteristic"] = (float(x) for x in _components_and_euler(crop))

    mean, gauss, varea = mesh_curvatures(verts, faces)
    good = np.isfinite(mean) & np.isfinite(gauss) & (varea > 0)
    if good.all():
        w = varea
        # means of the raw estimates (integrals of H and K are robust); spread, percentiles and the
        # concave fraction from estimates averaged over a few vertex rings (raw per-vertex values
        # of a marching-cubes mesh are dominated by discretisation noise)
        h_mean = float(np.average(mean, weights=w))
        k_mean = float(np.average(gauss, weights=w))
        h, k = _ring_average(faces, w, mean, gauss, iterations=rings)
        row["mean_curvature_mean_per_um"] = h_mean
        row["mean_curvature_sd_per_um"] = _weighted_sd(h, w)
        row["mean_curvature_p05_per_um"] = _weighted_quantile(h, w, 0.05)
        row["mean_curvature_p95_per_um"] = _weighted_quantile(h, w, 0.95)
        row["concave_area_fraction"] = float(w[h < 0].sum() / w.sum())
        row["normalised_mean_curvature"] = h_mean * row["equivalent_diameter_um"] / 2.0
        row["gaussian_curvature_mean_per_um2"] = k_mean
        row["gaussian_curvature_sd_per_um2"] = _weighted_sd(k, w)
    return row


def _ring_average(faces: np.ndarray, weights: np.ndarray, *values: np.ndarray, iterations: int) -> list[np.ndarray]:
    """Area-weighted averages over the 1-ring of each vertex, repeated ``iterations`` times."""
    import scipy.sparse as sp

    n = len(weights)
    i = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    j = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    adj = sp.coo_matrix((np.ones(2 * len(i)), (np.concatenate([i, j]), np.concatenate([j, i]))), shape=(n, n)).tocsr()
    adj.data[:] = 1.0
    adj = adj + sp.identity(n, format="csr")
    norm = adj @ weights
    out = []
    for v in values:
        for _ in range(iterations):
            v = (adj @ (v * weights)) / norm
        out.append(v)
    return out


def _describe_2d(mask: np.ndarray, spacing: tuple[float, ...], *, smoothing: float) -> dict[str, float]:
    from scipy.spatial import ConvexHull, QhullError
    from skimage import measure

    row = _nan_row(DESCRIPTORS_2D)
    n_pix = int(mask.sum())
    row["area_um2"] = n_pix * float(np.prod(spacing))
    if n_pix == 0:
        row["n_components"] = 0.0
        row["euler_characteristic"] = 0.0
        return row
    crop = _crop(mask)
    area = row["area_um2"]
    contours = measure.find_contours(_smoothed(crop, smoothing), 0.5)
    scale = np.asarray(spacing)
    perimeter = 0.0
    signed_area = 0.0
    points = []
    for c in contours:
        c = c * scale
        perimeter += float(np.linalg.norm(np.diff(c, axis=0), axis=1).sum())
        # shoelace; holes run the other way round and subtract
        signed_area += 0.5 * float(np.dot(c[:-1, 0], c[1:, 1]) - np.dot(c[1:, 0], c[:-1, 1]))
        points.append(c)
    poly_area = abs(signed_area)
    row["perimeter_um"] = perimeter
    # area and perimeter of the same contour, so circularity <= 1 at any size
    row["circularity"] = 4 * math.pi * poly_area / perimeter**2 if perimeter > 0 else float("nan")
    row["equivalent_diameter_um"] = math.sqrt(4 * area / math.pi)
    lam = _principal_variances(crop, spacing)
    row["major_axis_um"], row["minor_axis_um"] = (float(a) for a in 4.0 * np.sqrt(lam))
    if lam[0] > 0:
        row["elongation"] = float(math.sqrt(lam[1] / lam[0]))
    box = [s - 2 * _PAD for s in crop.shape]
    row["extent"] = n_pix / float(np.prod(box))
    try:
        row["solidity"] = poly_area / ConvexHull(np.concatenate(points)).volume
    except (QhullError, ValueError):
        pass
    row["n_components"], row["euler_characteristic"] = (float(x) for x in _components_and_euler(crop))
    return row
