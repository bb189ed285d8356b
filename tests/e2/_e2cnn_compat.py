"""Load e2cnn 0.2.3 (a test oracle only) under numpy 2.

e2cnn 0.2.3 calls ``np.array(x, copy=False)`` and ``ndarray.tostring()``, both gone in numpy 2, and assigns
through a uint8 mask, which recent torch rejects for one-element values. This helper patches those spots inside
the imported e2cnn modules (nothing global) and returns the package, or ``None`` when e2cnn is not installed.
"""

from __future__ import annotations

import types

import numpy as np


def load_e2cnn():
    try:
        import e2cnn  # noqa: F401
        from e2cnn.kernels import irreps_basis, utils
        from e2cnn.nn.modules.r2_conv import basisexpansion_singleblock
    except Exception:  # pragma: no cover - e2cnn absent or broken
        return None
    if getattr(utils, "_equitp_patched", False):
        return e2cnn
    shim = types.ModuleType("numpy_copy_shim")
    shim.__dict__.update(np.__dict__)

    def array(obj, *args, copy=True, **kwargs):
        if copy is False:
            return np.asarray(obj, *args, **kwargs)
        return np.array(obj, *args, copy=copy, **kwargs)

    shim.array = array
    utils.np = shim

    def _hash(self):
        gamma = self.gamma.tobytes() if isinstance(self.gamma, np.ndarray) else self.gamma
        return hash(self.in_irrep) + hash(self.out_irrep) + hash(self.mu.tobytes()) + hash(gamma)

    for name in (
        "R2FlipsSolution",
        "R2DiscreteRotationsSolution",
        "R2ContinuousRotationsSolution",
        "R2FlipsDiscreteRotationsSolution",
        "R2FlipsContinuousRotationsSolution",
    ):
        getattr(irreps_basis, name).__hash__ = _hash
    import torch

    torch_shim = types.ModuleType("torch_mask_shim")
    torch_shim.__dict__.update(torch.__dict__)

    def tensor(data, *args, **kwargs):
        out = torch.tensor(data, *args, **kwargs)
        if isinstance(data, np.ndarray) and data.dtype == np.uint8:
            out = out.bool()
        return out

    def zeros_like(t, *args, **kwargs):
        if t.dtype == torch.bool and "dtype" not in kwargs:
            kwargs["dtype"] = torch.uint8
        return torch.zeros_like(t, *args, **kwargs)

    torch_shim.tensor = tensor
    torch_shim.zeros_like = zeros_like
    basisexpansion_singleblock.torch = torch_shim
    utils._equitp_patched = True
    return e2cnn
