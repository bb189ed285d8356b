"""equitp: equivariant tensor products and the kernels under them.

The public surface:

* irreps: `Irrep`, `Irreps`
* SO(3)/O(3) math: `spherical_harmonics`, `wigner_D`, `wigner_3j`, `gaunt`, `rand_matrix`, ... (also in `equitp.so3`)
* tensor products: `TensorProduct`, `FullyConnectedTensorProduct`, `FullTensorProduct`, `ElementwiseTensorProduct`,
  `channelwise_tensor_product` (also in `equitp.nn`)
* operations: `equitp.ops.accumulate`, `equitp.ops.tensor_product`
* descriptors: `equitp.descriptors`
* test kit: `equitp.testing`
* E(2)-steerable CNNs: `equitp.e2`
"""

__version__ = "0.1.0"

from . import descriptors, e2, nn, ops, so3, testing  # noqa: E402
from .irreps import Irrep, Irreps  # noqa: E402
from .nn import (  # noqa: E402
    ElementwiseTensorProduct,
    FullTensorProduct,
    FullyConnectedTensorProduct,
    TensorProduct,
    channelwise_tensor_product,
)
from .so3 import *  # noqa: E402,F401,F403

_so3_all = getattr(so3, "__all__", [])

__all__ = [
    "__version__",
    "Irrep",
    "Irreps",
    "TensorProduct",
    "FullyConnectedTensorProduct",
    "FullTensorProduct",
    "ElementwiseTensorProduct",
    "channelwise_tensor_product",
    "descriptors",
    "e2",
    "testing",
    "nn",
    "ops",
    "so3",
] + list(_so3_all)
