"""Tests of the rotation parametrisations in equitp.so3 (e3nn's Y-X-Y conventions)."""

import math

import pytest
import torch

import equitp.so3 as so3

DTYPES = [torch.float32, torch.float64]


def _tol(dtype):
    return dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("dtype", DTYPES)
def test_elementary_matrices_match_e3nn(dtype):
    o3 = pytest.importorskip("e3nn.o3")
    t = torch.linspace(-4, 4, 9, dtype=dtype)
    for ours, ref in [(so3.matrix_x, o3.matrix_x), (so3.matrix_y, o3.matrix_y), (so3.matrix_z, o3.matrix_z)]:
        torch.testing.assert_close(ours(t), ref(t), **_tol(dtype))
    a, b, c = so3.rand_angles(7, dtype=dtype, generator=_gen())
    torch.testing.assert_close(so3.angles_to_matrix(a, b, c), o3.angles_to_matrix(a, b, c), **_tol(dtype))
    torch.testing.assert_close(so3.angles_to_xyz(a, b), o3.angles_to_xyz(a, b), **_tol(dtype))
    R = so3.angles_to_matrix(a, b, c)
    for x, y in zip(so3.matrix_to_angles(R), o3.matrix_to_angles(R)):
        torch.testing.assert_close(x, y, **_tol(dtype))


def test_right_handed_axes():
    t = torch.tensor(math.pi / 2, dtype=torch.float64)
    e = torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(so3.matrix_x(t) @ e[1], e[2], atol=1e-15, rtol=0)  # x: y -> z
    torch.testing.assert_close(so3.matrix_y(t) @ e[2], e[0], atol=1e-15, rtol=0)  # y: z -> x
    torch.testing.assert_close(so3.matrix_z(t) @ e[0], e[1], atol=1e-15, rtol=0)  # z: x -> y
    torch.testing.assert_close(so3.matrix_y(3.0), so3.matrix_y(torch.tensor(3.0)))  # python float accepted


@pytest.mark.parametrize("dtype", DTYPES)
def test_rand_matrix_is_rotation(dtype):
    R = so3.rand_matrix(2, 5, dtype=dtype, generator=_gen(1))
    assert R.shape == (2, 5, 3, 3) and R.dtype == dtype
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3, dtype=dtype).expand_as(R), **_tol(dtype))
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(2, 5, dtype=dtype), **_tol(dtype))
    assert so3.rand_matrix(3, requires_grad=True).requires_grad


def test_rand_angles_haar_statistics():
    # Haar measure: E[R] = 0 and E[R_ij^2] = 1/3.
    R = so3.rand_matrix(20000, dtype=torch.float64, generator=_gen(2))
    assert R.mean(0).abs().max() < 0.03
    assert (R.pow(2).mean(0) - 1 / 3).abs().max() < 0.02


@pytest.mark.parametrize("dtype", DTYPES)
def test_angles_roundtrip_and_compose(dtype):
    R1 = so3.rand_matrix(50, dtype=dtype, generator=_gen(3))
    R2 = so3.rand_matrix(50, dtype=dtype, generator=_gen(4))
    torch.testing.assert_close(so3.angles_to_matrix(*so3.matrix_to_angles(R1)), R1, **_tol(dtype))
    abc = so3.compose_angles(*so3.matrix_to_angles(R1), *so3.matrix_to_angles(R2))
    torch.testing.assert_close(so3.angles_to_matrix(*abc), R1 @ R2, **_tol(dtype))
    inv = so3.inverse_angles(*so3.matrix_to_angles(R1))
    torch.testing.assert_close(so3.angles_to_matrix(*inv), R1.transpose(-1, -2), **_tol(dtype))
    a, b, c = so3.identity_angles(4, dtype=dtype)
    torch.testing.assert_close(so3.angles_to_matrix(a, b, c), torch.eye(3, dtype=dtype).expand(4, 3, 3))


@pytest.mark.parametrize("dtype", DTYPES)
def test_xyz_angles_roundtrip(dtype):
    x = torch.randn(30, 3, dtype=dtype, generator=_gen(5))
    a, b = so3.xyz_to_angles(x)
    torch.testing.assert_close(so3.angles_to_xyz(a, b), x / x.norm(dim=-1, keepdim=True), **_tol(dtype))
    # R(a, b, 0) e_y is the point of angles (a, b)
    e_y = torch.tensor([0.0, 1.0, 0.0], dtype=dtype)
    R = so3.angles_to_matrix(a, b, torch.zeros_like(a))
    torch.testing.assert_close(R @ e_y, so3.angles_to_xyz(a, b), **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_axis_angle_and_quaternions(dtype):
    R = so3.rand_matrix(100, dtype=dtype, generator=_gen(6))
    axis, angle = so3.matrix_to_axis_angle(R)
    torch.testing.assert_close(so3.axis_angle_to_matrix(axis, angle), R, **_tol(dtype))
    torch.testing.assert_close(so3.angles_to_matrix(*so3.axis_angle_to_angles(axis, angle)), R, **_tol(dtype))
    ax2, an2 = so3.angles_to_axis_angle(*so3.matrix_to_angles(R))
    torch.testing.assert_close(so3.axis_angle_to_matrix(ax2, an2), R, **_tol(dtype))
    q = so3.matrix_to_quaternion(R)
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(100, dtype=dtype), **_tol(dtype))
    torch.testing.assert_close(so3.quaternion_to_matrix(q), R, **_tol(dtype))
    q1, q2 = so3.rand_quaternion(100, dtype=dtype, generator=_gen(7)), q
    torch.testing.assert_close(
        so3.quaternion_to_matrix(so3.compose_quaternion(q1, q2)),
        so3.quaternion_to_matrix(q1) @ so3.quaternion_to_matrix(q2),
        **_tol(dtype),
    )
    torch.testing.assert_close(
        so3.quaternion_to_matrix(so3.inverse_quaternion(q1)),
        so3.quaternion_to_matrix(q1).transpose(-1, -2),
        **_tol(dtype),
    )
    abc = so3.matrix_to_angles(R)
    torch.testing.assert_close(so3.quaternion_to_matrix(so3.angles_to_quaternion(*abc)), R, **_tol(dtype))
    torch.testing.assert_close(so3.angles_to_matrix(*so3.quaternion_to_angles(q)), R, **_tol(dtype))
    eye = torch.eye(3, dtype=dtype).expand(2, 3, 3)
    torch.testing.assert_close(so3.quaternion_to_matrix(so3.identity_quaternion(2, dtype=dtype)), eye)


def test_rotation_by_pi_is_stable():
    axis = torch.tensor([[1.0, 2.0, -0.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
    angle = torch.tensor([math.pi, math.pi], dtype=torch.float64)
    R = so3.axis_angle_to_matrix(axis, angle)
    torch.testing.assert_close(so3.quaternion_to_matrix(so3.matrix_to_quaternion(R)), R)
    ax, an = so3.matrix_to_axis_angle(R)
    torch.testing.assert_close(an, angle)
    torch.testing.assert_close(so3.axis_angle_to_matrix(ax, an), R)


def test_axis_angle_matches_e3nn():
    o3 = pytest.importorskip("e3nn.o3")
    axis = torch.randn(10, 3, dtype=torch.float64, generator=_gen(8))
    angle = torch.rand(10, dtype=torch.float64, generator=_gen(9)) * 3
    torch.testing.assert_close(so3.axis_angle_to_matrix(axis, angle), o3.axis_angle_to_matrix(axis, angle))


def test_gradients_flow():
    a, b, c = so3.rand_angles(3, dtype=torch.float64, requires_grad=True, generator=_gen(10))
    assert torch.autograd.gradcheck(so3.angles_to_matrix, (a, b, c))
    R = so3.angles_to_matrix(a, b, c).detach().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda R: torch.stack(so3.matrix_to_angles(R)), (R,))


def test_bad_inputs():
    with pytest.raises(ValueError, match="det"):
        so3.matrix_to_angles(-torch.eye(3))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, 3\)"):
        so3.matrix_to_angles(torch.eye(4))
    with pytest.raises(TypeError, match="torch.Tensor"):
        so3.matrix_to_angles([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        so3.xyz_to_angles(torch.randn(4, 2))
    with pytest.raises(ValueError, match="shape"):
        so3.rand_matrix(-1)
    with pytest.raises(TypeError, match="floating"):
        so3.matrix_x(torch.tensor([1, 2]))
