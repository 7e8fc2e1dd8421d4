"""3D rotations: conversions between parametrisations, Haar-uniform sampling, angles.

Conventions: a rotation matrix R acts on column vectors (x' = R x); row-vector batches are rotated
as ``xyz @ R.T``. Quaternions are (w, x, y, z) with w the real part. The 6-D representation
(Zhou et al., "On the Continuity of Rotation Representations in Neural Networks", CVPR 2019) is
the first two columns of R, stacked as (a1, a2); Gram-Schmidt recovers R. Quaternions and 6-D
have no singularities, so learned rotations use them; Euler angles are for import only.
"""

from __future__ import annotations

import torch


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) quaternions (w, x, y, z; normalised here) -> (..., 3, 3) rotation matrices."""
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    two = 2.0
    m = torch.stack(
        [
            1 - two * (y * y + z * z), two * (x * y - z * w), two * (x * z + y * w),
            two * (x * y + z * w), 1 - two * (x * x + z * z), two * (y * z - x * w),
            two * (x * z - y * w), two * (y * z + x * w), 1 - two * (x * x + y * y),
        ],
        dim=-1,
    )
    return m.reshape(*q.shape[:-1], 3, 3)


def matrix_to_quaternion(m: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation matrices -> (..., 4) unit quaternions (w, x, y, z) with w >= 0.

    Uses the numerically best of the four candidate formulas per matrix (Shepperd's method).
    """
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # 4 * squares of (w, x, y, z)
    sq = torch.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1
    )
    r = torch.sqrt(torch.clamp(sq, min=0.0))  # 2 |component|
    cand = torch.stack(
        [
            torch.stack([r[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], dim=-1),
            torch.stack([m21 - m12, r[..., 1] ** 2, m10 + m01, m02 + m20], dim=-1),
            torch.stack([m02 - m20, m10 + m01, r[..., 2] ** 2, m12 + m21], dim=-1),
            torch.stack([m10 - m01, m20 + m02, m21 + m12, r[..., 3] ** 2], dim=-1),
        ],
        dim=-2,
    ) / (2.0 * torch.clamp(r, min=1e-12))[..., None]
    best = r.argmax(dim=-1)
    q = torch.gather(cand, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def sixd_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3): Gram-Schmidt on the two 3-vectors, which become the first two columns."""
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = a1 / a1.norm(dim=-1, keepdim=True)
    b2 = a2 - (b1 * a2).sum(-1, keepdim=True) * b1
    b2 = b2 / b2.norm(dim=-1, keepdim=True)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_sixd(m: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 6): the first two columns of R."""
    return torch.cat([m[..., :, 0], m[..., :, 1]], dim=-1)


def _axis_rotation(axis: str, angle: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    if axis == "X":
        rows = (one, zero, zero, zero, c, -s, zero, s, c)
    elif axis == "Y":
        rows = (c, zero, s, zero, one, zero, -s, zero, c)
    else:
        rows = (c, -s, zero, s, c, zero, zero, zero, one)
    return torch.stack(rows, dim=-1).reshape(*angle.shape, 3, 3)


def euler_xyz_to_matrix(angles: torch.Tensor) -> torch.Tensor:
    """(..., 3) Euler angles (radians) -> (..., 3, 3) as ``Rx(a0) @ Ry(a1) @ Rz(a2)``.

    This is PyTorch3D's ``euler_angles_to_matrix(angles, "XYZ")``, used by the reference code.
    """
    return _axis_rotation("X", angles[..., 0]) @ _axis_rotation("Y", angles[..., 1]) @ _axis_rotation("Z", angles[..., 2])


def random_rotations(n: int, generator: torch.Generator | None = None, dtype=torch.float32) -> torch.Tensor:
    """(n, 3, 3) rotations drawn from the uniform (Haar) distribution on SO(3).

    Normalised 4-d Gaussian vectors are uniform on the unit 3-sphere, i.e. uniform unit quaternions,
    which map to Haar-uniform rotations (the reference's uniform Euler angles are not uniform).
    """
    q = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    return quaternion_to_matrix(q).to(dtype)


def rotation_angle(r: torch.Tensor, r2: torch.Tensor | None = None) -> torch.Tensor:
    """Rotation angle (radians, in [0, pi]) of ``r`` (..., 3, 3), or of ``r2^T r`` (the angle between them)."""
    if r2 is not None:
        r = r2.transpose(-1, -2) @ r
    trace = r[..., 0, 0] + r[..., 1, 1] + r[..., 2, 2]
    cos = torch.clamp((trace - 1.0) / 2.0, -1.0, 1.0)
    # acos is ill-conditioned near 0 and pi; atan2 of (|skew part|, cos) is stable at small angles
    skew = torch.stack([r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]], -1)
    sin = skew.norm(dim=-1) / 2.0
    return torch.atan2(sin, cos)


class RotationTable(torch.nn.Module):
    """One learned rotation per sequence, initialised to the identity.

    Parameters
    ----------
    n : number of sequences.
    param : ``quaternion`` ((n, 4) parameters, normalised in ``forward``) or ``6d`` ((n, 6)).
    """

    def __init__(self, n: int, param: str = "quaternion"):
        super().__init__()
        if param not in ("quaternion", "6d"):
            raise ValueError(f"param must be 'quaternion' or '6d', got {param!r}")
        self.n = n
        self.param = param
        self.weight = torch.nn.Parameter(torch.empty(n, 4 if param == "quaternion" else 6))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        eye = torch.eye(3).expand(self.n, 3, 3)
        with torch.no_grad():
            self.weight.copy_(self.from_matrix(eye))

    def set_matrices(self, m: torch.Tensor) -> None:
        """Set the parameters so that ``forward()`` returns the rotations ``m`` (n, 3, 3)."""
        if tuple(m.shape) != (self.n, 3, 3):
            raise ValueError(f"expected ({self.n}, 3, 3) rotation matrices, got {tuple(m.shape)}")
        with torch.no_grad():
            self.weight.copy_(self.from_matrix(m.to(self.weight)))

    def from_matrix(self, m: torch.Tensor) -> torch.Tensor:
        return matrix_to_quaternion(m) if self.param == "quaternion" else matrix_to_sixd(m)

    def forward(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """(len(index), 3, 3) rotation matrices (all n if ``index`` is None)."""
        w = self.weight if index is None else self.weight[index]
        return quaternion_to_matrix(w) if self.param == "quaternion" else sixd_to_matrix(w)

    def extra_repr(self) -> str:
        return f"n={self.n}, param={self.param}"
