"""SO(3) / O(3) mathematics in e3nn's conventions.

Real spherical harmonics (y is the polar axis, ``m = -l..l``), Y-X-Y Euler angles, Wigner D matrices, Wigner 3j
symbols (exact, cached as ``.npy`` tables in the user cache directory), Gaunt coefficients, and quadrature grids on the
sphere with the separable spherical-harmonic transforms. Everything agrees numerically with ``e3nn.o3`` 0.6 where
e3nn has the same function.
"""

from ._gaunt import gaunt
from ._rotation import (
    angles_to_axis_angle,
    angles_to_matrix,
    angles_to_quaternion,
    angles_to_xyz,
    axis_angle_to_angles,
    axis_angle_to_matrix,
    axis_angle_to_quaternion,
    compose_angles,
    compose_quaternion,
    identity_angles,
    identity_quaternion,
    inverse_angles,
    inverse_quaternion,
    matrix_to_angles,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    matrix_x,
    matrix_y,
    matrix_z,
    quaternion_to_angles,
    quaternion_to_axis_angle,
    quaternion_to_matrix,
    rand_angles,
    rand_matrix,
    rand_quaternion,
    xyz_to_angles,
)
from ._s2grid import grid_to_sh, s2_grid, sh_to_grid
from ._spherical_harmonics import spherical_harmonics
from ._wigner import clebsch_gordan_sparse, wigner_3j, wigner_D

__all__ = [
    # spherical harmonics
    "spherical_harmonics",
    # Wigner matrices and coupling coefficients
    "wigner_D",
    "wigner_3j",
    "clebsch_gordan_sparse",
    "gaunt",
    # rotations
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
    # grids on the sphere
    "s2_grid",
    "sh_to_grid",
    "grid_to_sh",
]
