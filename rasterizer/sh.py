"""Real spherical harmonics, degrees 0-3, in INRIA's basis order and sign convention.

Colour of a Gaussian seen along unit direction ``d`` is ``max(sum_k basis_k(d) * sh_k + 0.5, 0)``.
"""
from __future__ import annotations

import numpy as np

C0 = 0.28209479177387814
C1 = 0.4886025119029199
C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792,
      0.5462742152960396)
C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
      -0.4570457994644658, 1.445305721320277, -0.5900435899266435)


def sh_basis(dirs: np.ndarray, degree: int) -> np.ndarray:
    """The ``(degree+1)^2`` basis values at unit directions ``dirs`` (N, 3) → (N, K), in dirs' dtype."""
    x, y, z = dirs[:, 0], dirs[:, 1], dirs[:, 2]
    dt = dirs.dtype.type
    out = [np.full_like(x, dt(C0))]
    if degree >= 1:
        out += [dt(-C1) * y, dt(C1) * z, dt(-C1) * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [dt(C2[0]) * (x * y), dt(C2[1]) * (y * z), dt(C2[2]) * (dt(2) * zz - xx - yy),
                dt(C2[3]) * (x * z), dt(C2[4]) * (xx - yy)]
    if degree >= 3:
        out += [dt(C3[0]) * y * (dt(3) * xx - yy), dt(C3[1]) * (x * y) * z,
                dt(C3[2]) * y * (dt(4) * zz - xx - yy), dt(C3[3]) * z * (dt(2) * zz - dt(3) * xx - dt(3) * yy),
                dt(C3[4]) * x * (dt(4) * zz - xx - yy), dt(C3[5]) * z * (xx - yy),
                dt(C3[6]) * x * (xx - dt(3) * yy)]
    return np.stack(out, axis=1)
