r"""Parametrisations of 3D rotations in e3nn's conventions.

* Euler angles are Y-X-Y: :math:`R(\alpha, \beta, \gamma) = Y(\alpha) X(\beta) Y(\gamma)`, where ``Y``/``X`` are
  right-handed rotations about the y/x axes (``gamma`` is applied first).
* The y axis is the polar axis: a point with angles :math:`(\alpha, \beta)` is
  :math:`(\sin\beta \sin\alpha, \cos\beta, \sin\beta \cos\alpha) = R(\alpha, \beta, 0)\, e_y`.
* Quaternions are ``(w, x, y, z)`` with ``w = cos(angle / 2)``; axis-angle is a unit axis ``(..., 3)`` and an angle
  ``(...)`` (right-handed).

All functions are batched over leading dimensions and differentiable with autograd.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from ._checks import check_float_tensor

__all__ = [
    "rand_matrix",
    "rand_angles",
    "identity_angles",
    "compose_angles",
    "inverse_angles",
    "matrix_x",
    "matrix_y",
    "matrix_z",
    "angles_to_matrix",
    "matrix_to_angles",
    "angles_to_xyz",
    "xyz_to_angles",
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "angles_to_axis_angle",
    "axis_angle_to_angles",
    "identity_quaternion",
    "rand_quaternion",
    "compose_quaternion",
    "inverse_quaternion",
    "axis_angle_to_quaternion",
    "quaternion_to_axis_angle",
    "quaternion_to_matrix",
    "matrix_to_quaternion",
    "angles_to_quaternion",
    "quaternion_to_angles",
]

Angles = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _shape(shape) -> Tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
        shape = tuple(shape[0])
    for s in shape:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ValueError(f"shape must be non-negative ints, got {shape!r}")
    return tuple(shape)


# -- angles ------------------------------------------------------------------------------------------------------------


def identity_angles(*shape, requires_grad: bool = False, dtype=None, device=None) -> Angles:
    """Euler angles ``(alpha, beta, gamma)`` of the identity rotation, each of shape ``shape``."""
    abc = torch.zeros((3,) + _shape(shape), dtype=dtype, device=device)
    return tuple(a.requires_grad_(requires_grad) for a in abc)


def rand_angles(
    *shape, requires_grad: bool = False, dtype=None, device=None, generator: Optional[torch.Generator] = None
) -> Angles:
    """Euler angles of rotations drawn from the Haar (uniform) measure on SO(3).

    ``alpha`` and ``gamma`` are uniform on ``[0, 2 pi)`` and ``cos(beta)`` is uniform on ``[-1, 1]``.

    Args:
        *shape: batch shape.
        requires_grad: whether the returned leaves require grad.
        dtype, device: of the returned tensors (torch defaults when None).
        generator: optional ``torch.Generator`` for reproducible draws.

    Returns:
        ``(alpha, beta, gamma)``, each of shape ``shape``.
    """
    shape = _shape(shape)
    u = torch.rand((3,) + shape, dtype=dtype, device=device, generator=generator)
    alpha = (2 * math.pi) * u[0]
    gamma = (2 * math.pi) * u[2]
    beta = torch.acos(u[1] * 2 - 1)
    return tuple(a.detach().requires_grad_(requires_grad) for a in (alpha, beta, gamma))


def rand_matrix(
    *shape, requires_grad: bool = False, dtype=None, device=None, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """Rotation matrices drawn from the Haar measure, shape ``(*shape, 3, 3)``."""
    R = angles_to_matrix(*rand_angles(*shape, dtype=dtype, device=device, generator=generator))
    return R.detach().requires_grad_(requires_grad)


def inverse_angles(alpha: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor) -> Angles:
    """Angles of the inverse rotation: ``R(a, b, c)^-1 = R(-c, -b, -a)``."""
    return -gamma, -beta, -alpha


def compose_angles(a1, b1, c1, a2, b2, c2) -> Angles:
    """Angles of ``R(a1, b1, c1) @ R(a2, b2, c2)`` (the second rotation is applied first)."""
    a1, b1, c1, a2, b2, c2 = torch.broadcast_tensors(a1, b1, c1, a2, b2, c2)
    return matrix_to_angles(angles_to_matrix(a1, b1, c1) @ angles_to_matrix(a2, b2, c2))


# -- elementary matrices -----------------------------------------------------------------------------------------------


def _rotation_about(angle: torch.Tensor, axis: int) -> torch.Tensor:
    if not isinstance(angle, torch.Tensor):
        angle = torch.as_tensor(angle, dtype=torch.get_default_dtype())
    angle = check_float_tensor(angle, "angle")
    c, s = torch.cos(angle), torch.sin(angle)
    o, z = torch.ones_like(angle), torch.zeros_like(angle)
    if axis == 0:
        rows = [(o, z, z), (z, c, -s), (z, s, c)]
    elif axis == 1:
        rows = [(c, z, s), (z, o, z), (-s, z, c)]
    else:
        rows = [(c, -s, z), (s, c, z), (z, z, o)]
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def matrix_x(angle: torch.Tensor) -> torch.Tensor:
    """Right-handed rotation about the x axis, shape ``(..., 3, 3)`` for ``angle`` of shape ``(...)``."""
    return _rotation_about(angle, 0)


def matrix_y(angle: torch.Tensor) -> torch.Tensor:
    """Right-handed rotation about the y axis (the polar axis), shape ``(..., 3, 3)``."""
    return _rotation_about(angle, 1)


def matrix_z(angle: torch.Tensor) -> torch.Tensor:
    """Right-handed rotation about the z axis, shape ``(..., 3, 3)``."""
    return _rotation_about(angle, 2)


def angles_to_matrix(alpha: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """``R = Y(alpha) @ X(beta) @ Y(gamma)``, shape ``(..., 3, 3)`` (broadcast over the angle shapes)."""
    alpha, beta, gamma = torch.broadcast_tensors(alpha, beta, gamma)
    return matrix_y(alpha) @ matrix_x(beta) @ matrix_y(gamma)


def _check_rotation(R: torch.Tensor, name: str = "R") -> torch.Tensor:
    R = check_float_tensor(R, name)
    if R.dim() < 2 or R.shape[-2:] != (3, 3):
        raise ValueError(f"{name} must have shape (..., 3, 3), got {tuple(R.shape)}")
    if R.numel() > 0:
        tol = 1e-3 if R.dtype in (torch.float16, torch.bfloat16, torch.float32) else 1e-5
        det = torch.linalg.det(R.detach())
        if not bool(torch.all((det - 1).abs() <= tol)):
            raise ValueError(
                f"{name} must be a rotation (det = +1); got det values in [{det.min():.4g}, {det.max():.4g}]"
            )
    return R


def matrix_to_angles(R: torch.Tensor) -> Angles:
    """Euler angles ``(alpha, beta, gamma)`` with ``angles_to_matrix(alpha, beta, gamma) == R``.

    Args:
        R: rotation matrices, shape ``(..., 3, 3)`` with determinant +1.

    Returns:
        ``alpha`` in ``(-pi, pi]``, ``beta`` in ``[0, pi]``, ``gamma`` in ``(-pi, pi]``, each of shape ``(...)``.

    Raises:
        ValueError: ``R`` is not a batch of 3x3 matrices of determinant +1.
    """
    R = _check_rotation(R)
    # R e_y fixes (alpha, beta); the remainder is a rotation about y by gamma.
    alpha, beta = xyz_to_angles(R[..., :, 1])
    Rab = angles_to_matrix(alpha, beta, torch.zeros_like(alpha))
    Rg = Rab.transpose(-1, -2) @ R
    gamma = torch.atan2(Rg[..., 0, 2], Rg[..., 0, 0])
    return alpha, beta, gamma


# -- points on the sphere ----------------------------------------------------------------------------------------------


def angles_to_xyz(alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Point on the unit sphere ``(sin b sin a, cos b, sin b cos a)`` = ``R(a, b, 0) e_y``, shape ``(..., 3)``."""
    alpha, beta = torch.broadcast_tensors(alpha, beta)
    sb = torch.sin(beta)
    return torch.stack([sb * torch.sin(alpha), torch.cos(beta), sb * torch.cos(alpha)], dim=-1)


def xyz_to_angles(xyz: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Angles ``(alpha, beta)`` of the direction of ``xyz`` (shape ``(..., 3)``, need not be normalised).

    ``beta = acos(y / |xyz|)`` in ``[0, pi]`` and ``alpha = atan2(x, z)``. A zero vector gives ``(0, pi/2)``.
    """
    xyz = check_float_tensor(xyz, "xyz")
    if xyz.shape[-1:] != (3,):
        raise ValueError(f"xyz must have shape (..., 3), got {tuple(xyz.shape)}")
    n = torch.nn.functional.normalize(xyz, dim=-1).clamp(-1, 1)
    beta = torch.acos(n[..., 1])
    alpha = torch.atan2(n[..., 0], n[..., 2])
    return alpha, beta


# -- axis-angle --------------------------------------------------------------------------------------------------------


def axis_angle_to_matrix(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula: right-handed rotation by ``angle`` (shape ``(...)``) about ``axis`` (``(..., 3)``, normalised
    here). Returns shape ``(..., 3, 3)``."""
    axis = check_float_tensor(axis, "axis")
    if axis.shape[-1:] != (3,):
        raise ValueError(f"axis must have shape (..., 3), got {tuple(axis.shape)}")
    axis, angle = torch.broadcast_tensors(axis, angle[..., None])
    angle = angle[..., 0]
    n = torch.nn.functional.normalize(axis, dim=-1)
    x, y, z = n.unbind(-1)
    c, s = torch.cos(angle), torch.sin(angle)
    t = 1 - c
    rows = [
        (c + t * x * x, t * x * y - s * z, t * x * z + s * y),
        (t * x * y + s * z, c + t * y * y, t * y * z - s * x),
        (t * x * z - s * y, t * y * z + s * x, c + t * z * z),
    ]
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def matrix_to_axis_angle(R: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Unit axis ``(..., 3)`` and angle in ``[0, pi]`` ``(...)`` of a rotation matrix ``(..., 3, 3)``."""
    return quaternion_to_axis_angle(matrix_to_quaternion(R))


def angles_to_axis_angle(alpha, beta, gamma) -> Tuple[torch.Tensor, torch.Tensor]:
    """Axis-angle of ``R(alpha, beta, gamma)``."""
    return matrix_to_axis_angle(angles_to_matrix(alpha, beta, gamma))


def axis_angle_to_angles(axis, angle) -> Angles:
    """Euler angles of the rotation by ``angle`` about ``axis``."""
    return matrix_to_angles(axis_angle_to_matrix(axis, angle))


# -- quaternions -------------------------------------------------------------------------------------------------------


def identity_quaternion(*shape, requires_grad: bool = False, dtype=None, device=None) -> torch.Tensor:
    """``(1, 0, 0, 0)`` of shape ``(*shape, 4)``."""
    q = torch.zeros(_shape(shape) + (4,), dtype=dtype, device=device)
    q[..., 0] = 1
    return q.requires_grad_(requires_grad)


def rand_quaternion(
    *shape, requires_grad: bool = False, dtype=None, device=None, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """Unit quaternions of Haar-random rotations, shape ``(*shape, 4)``."""
    q = angles_to_quaternion(*rand_angles(*shape, dtype=dtype, device=device, generator=generator))
    return q.detach().requires_grad_(requires_grad)


def compose_quaternion(q1: torch.Tensor, q2: torch.Tensor) -> torch.Tensor:
    """Hamilton product ``q1 q2`` (rotation ``q2`` applied first), shape ``(..., 4)``."""
    q1, q2 = torch.broadcast_tensors(q1, q2)
    w1, x1, y1, z1 = q1.unbind(-1)
    w2, x2, y2, z2 = q2.unbind(-1)
    return torch.stack(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ],
        dim=-1,
    )


def inverse_quaternion(q: torch.Tensor) -> torch.Tensor:
    """Conjugate ``(w, -x, -y, -z)``: the inverse of a unit quaternion."""
    return q * q.new_tensor([1.0, -1.0, -1.0, -1.0])


def axis_angle_to_quaternion(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """``(cos(angle/2), sin(angle/2) * axis/|axis|)``, shape ``(..., 4)``."""
    axis, angle = torch.broadcast_tensors(axis, angle[..., None])
    n = torch.nn.functional.normalize(axis, dim=-1)
    half = angle[..., :1] / 2
    return torch.cat([torch.cos(half), n * torch.sin(half)], dim=-1)


def quaternion_to_axis_angle(q: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Unit axis ``(..., 3)`` and angle ``(...)`` of a unit quaternion; the angle is in ``[0, pi]`` after choosing the
    sign of ``q`` with ``w >= 0``."""
    q = q * torch.where(q[..., :1] < 0, -1.0, 1.0).to(q.dtype)
    v = q[..., 1:]
    angle = 2 * torch.atan2(torch.linalg.vector_norm(v, dim=-1), q[..., 0])
    return torch.nn.functional.normalize(v, dim=-1), angle


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrix ``(..., 3, 3)`` of a quaternion ``(..., 4)`` (normalised here)."""
    q = torch.nn.functional.normalize(q, dim=-1)
    w, x, y, z = q.unbind(-1)
    rows = [
        (1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)),
        (2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)),
        (2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)),
    ]
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def matrix_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """Unit quaternion with ``w >= 0`` of a rotation matrix ``(..., 3, 3)``, shape ``(..., 4)``.

    Uses the numerically stable branch (largest of ``w, x, y, z``) for every matrix, angles near pi included.
    """
    R = _check_rotation(R)
    m00, m11, m22 = R[..., 0, 0], R[..., 1, 1], R[..., 2, 2]
    # 4 * (w^2, x^2, y^2, z^2)
    sq = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1)
    a21, a12 = R[..., 2, 1], R[..., 1, 2]
    a02, a20 = R[..., 0, 2], R[..., 2, 0]
    a10, a01 = R[..., 1, 0], R[..., 0, 1]
    # Each row: 4 * q_k * (w, x, y, z) for k = w, x, y, z.
    cand = torch.stack(
        [
            torch.stack([sq[..., 0], a21 - a12, a02 - a20, a10 - a01], dim=-1),
            torch.stack([a21 - a12, sq[..., 1], a01 + a10, a02 + a20], dim=-1),
            torch.stack([a02 - a20, a01 + a10, sq[..., 2], a12 + a21], dim=-1),
            torch.stack([a10 - a01, a02 + a20, a12 + a21, sq[..., 3]], dim=-1),
        ],
        dim=-2,
    )
    k = sq.argmax(dim=-1)
    best = torch.gather(cand, -2, k[..., None, None].expand(k.shape + (1, 4)))[..., 0, :]
    q = torch.nn.functional.normalize(best, dim=-1)
    return q * torch.where(q[..., :1] < 0, -1.0, 1.0).to(q.dtype)


def angles_to_quaternion(alpha, beta, gamma) -> torch.Tensor:
    """Unit quaternion of ``R(alpha, beta, gamma)``, shape ``(..., 4)`` (not sign-normalised)."""
    alpha, beta, gamma = torch.broadcast_tensors(alpha, beta, gamma)
    ey = alpha.new_tensor([0.0, 1.0, 0.0])
    ex = alpha.new_tensor([1.0, 0.0, 0.0])
    qa = axis_angle_to_quaternion(ey, alpha)
    qb = axis_angle_to_quaternion(ex, beta)
    qc = axis_angle_to_quaternion(ey, gamma)
    return compose_quaternion(qa, compose_quaternion(qb, qc))


def quaternion_to_angles(q: torch.Tensor) -> Angles:
    """Euler angles of the rotation of a quaternion."""
    return matrix_to_angles(quaternion_to_matrix(q))
