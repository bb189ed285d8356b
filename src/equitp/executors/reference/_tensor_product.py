"""Pure-torch reference executor for the Clebsch–Gordan tensor product (the oracle of the fast kernels).

Each path is one ``torch.einsum`` over the dense Clebsch–Gordan block, written directly from the 4-linear form of
``TensorProductDescriptor``; the gradient with respect to any operand is the einsum with that operand's subscripts as
output. Runs on any device.
"""

from __future__ import annotations

import torch

__all__ = ["tensor_product_reference"]

# channel subscripts of (weight, in1, in2, out) per mode
_SUBS = {
    "uvw": ("uvw", "u", "v", "w"),
    "uvu": ("uv", "u", "v", "u"),
    "uvv": ("uv", "u", "v", "v"),
    "uuw": ("uw", "u", "u", "w"),
    "uuu": ("u", "u", "u", "u"),
    "uvuv": ("uv", "u", "v", "uv"),
}

_dense_cache = {}


def _dense_cg(desc, n, dtype, device):
    key = (desc, n, dtype, device)
    C = _dense_cache.get(key)
    if C is None:
        p = desc.paths[n]
        i, j, k, v = desc.sparse_paths[n]
        d1 = desc.irreps_in1[p.i_in1].ir.dim
        d2 = desc.irreps_in2[p.i_in2].ir.dim
        d3 = desc.irreps_out[p.i_out].ir.dim
        C = torch.zeros(d1, d2, d3, dtype=torch.float64)
        C[torch.as_tensor(i, dtype=torch.long), torch.as_tensor(j, dtype=torch.long), torch.as_tensor(k, dtype=torch.long)] = torch.as_tensor(v)
        C = C.to(dtype=dtype, device=device)
        _dense_cache[key] = C
    return C


def _block(x, sl, mul, dim, layout):
    """``x[:, sl]`` as ``(N, mul, dim)``."""
    xb = x[:, sl]
    if layout == "mul_ir":
        return xb.reshape(x.shape[0], mul, dim)
    return xb.reshape(x.shape[0], dim, mul).transpose(1, 2)


def _unblock(xb, layout):
    n = xb.shape[1] * xb.shape[2]
    if layout == "mul_ir":
        return xb.reshape(xb.shape[0], n)
    return xb.transpose(1, 2).reshape(xb.shape[0], n)


def tensor_product_reference(desc, target: int, operands, weightless: bool = True):
    """Evaluate ``dS/d(operand target)`` with einsums; same contract as the CPU kernel's ``tensor_product_cpu``."""
    W, x, y, z = operands
    ref = x if target != 1 else y
    N, dtype, device = ref.shape[0], ref.dtype, ref.device
    w_batched = W is not None and W.dim() == 2
    irreps = (None, desc.irreps_in1, desc.irreps_in2, desc.irreps_out)
    slices = [None] + [ir.slices() for ir in irreps[1:]]
    if target == 0:
        out_shape = (N, desc.weight_numel) if w_batched else (desc.weight_numel,)
    else:
        out_shape = (N, irreps[target].dim)
    pieces = []  # (slice in flat target, tensor)
    for n, p in enumerate(desc.paths):
        if (target == 0 or not weightless) and not p.has_weight:
            continue
        blocks = (None, p.i_in1, p.i_in2, p.i_out)
        muls = [None] + [irreps[t][blocks[t]].mul for t in (1, 2, 3)]
        dims = [None] + [irreps[t][blocks[t]].ir.dim for t in (1, 2, 3)]
        if 0 in muls[1:]:
            continue
        C = _dense_cg(desc, n, dtype, device)
        sw, s1, s2, so = _SUBS[p.mode]
        subs = {1: "z" + s1 + "i", 2: "z" + s2 + "j", 3: "z" + so + "k"}
        args, terms = [], []
        if p.has_weight:
            wsub = ("z" if w_batched else "") + sw
            if target != 0:
                w = W[..., p.weight_offset : p.weight_offset + p.weight_numel]
                args.append(w.reshape(((N,) if w_batched else ()) + p.weight_shape))
                terms.append(wsub)
        for t in (1, 2, 3):
            if t == target:
                continue
            blk = _block(operands[t], slices[t][blocks[t]], muls[t], dims[t], desc.layout)
            if t == 3 and p.mode == "uvuv":
                blk = blk.reshape(N, muls[1], muls[2], dims[3])
            args.append(blk)
            terms.append(subs[t])
        args.append(C)
        terms.append("ijk")
        if target == 0:
            res = torch.einsum(",".join(terms) + "->" + wsub, *args)
            pieces.append((slice(p.weight_offset, p.weight_offset + p.weight_numel), res.reshape(out_shape[:-1] + (-1,))))
        else:
            out_sub = subs[target]
            if target == 3 and p.mode == "uuw" and not p.has_weight:
                # weightless uuw: mul_out is 1, the path sums over u
                res = torch.einsum(",".join(terms) + "->zk", *args).unsqueeze(1)
            else:
                present = set("".join(terms))
                sub = "".join(ch for ch in out_sub if ch in present)
                res = torch.einsum(",".join(terms) + "->" + sub, *args)
                # a channel index that only the target carries (a weightless path): the result is constant along it
                for pos, ch in enumerate(out_sub):
                    if ch not in present:
                        res = res.unsqueeze(pos).expand(*res.shape[:pos], muls[target], *res.shape[pos:])
            if p.mode == "uvuv" and target == 3:
                res = res.reshape(N, muls[3], dims[3])
            pieces.append((slices[target][blocks[target]], _unblock(res, desc.layout)))
    out = torch.zeros(out_shape, dtype=dtype, device=device)
    if not pieces:
        return out
    # sum the pieces into the flat output (out-of-place to stay differentiable)
    for sl, val in pieces:
        out = out.index_add(out.dim() - 1, torch.arange(sl.start, sl.stop, device=device), val)
    return out
