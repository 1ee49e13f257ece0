r"""``e^x`` and ``log x`` as the hot paths call them: on the CPU through the kernels that run fastest.

Measured on the 2-core benchmark CPU (torch 2.13, float32, ``OMP_WAIT_POLICY=PASSIVE``):
``torch.exp``, ``torch.log`` and ``torch.sqrt`` call MKL's vector library, which enters the
thread pool from 128 elements on (about 70 µs per call, whatever the size up to 16,384) and
computes ``e^x`` at 1.4 G/s on 1,024² elements; ``torch.exp2`` runs ATen's own vectorised
kernel (2.2 µs at 4,096 elements, 5 G/s on 1,024²) and ``torch.special.xlogy`` a
single-threaded loop (5 µs at 192 elements, 11 µs at 2,048). So on the CPU :func:`exp`
computes :math:`2^{x\log_2 e}`: the rounding of the product grows with :math:`|x|`
(relative error 1e-6 for :math:`|x| \le 20`, 4e-6 for :math:`|x| \le 80`, against 6e-8 of
``torch.exp``; the float32 matmul that forms :math:`s` errs as much). :func:`log` computes
``xlogy(1, x)`` (libm's ``log``, within 1 ulp of MKL's) on fewer than
:data:`XLOGY_ELEMENTS` elements. Other devices call ``torch.exp`` / ``torch.log``. All are
differentiable and read nothing back from the device.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor
#: The base-2 log of e, the factor that turns e^x into 2^(x log2 e).
LOG2E = 1.4426950408889634
#: The natural log of 2 (the inverse of LOG2E), which turns base-2 logarithms into natural ones.
LN2 = 0.6931471805599453


def exp(x: Tensor) -> Tensor:
    """Return ``e^x`` (a new tensor); on the CPU as ``2^(x log2 e)``."""
    if x.device.type != "cpu":
        return torch.exp(x)
    return torch.mul(x, LOG2E).exp2_()


def exp_(x: Tensor) -> Tensor:
    """Replace ``x`` by ``e^x`` in place and return it; on the CPU as ``2^(x log2 e)``."""
    if x.device.type != "cpu":
        return x.exp_()
    return x.mul_(LOG2E).exp2_()


#: Below this many elements :func:`log` takes ``xlogy`` on the CPU (a single-threaded loop: 111 µs at
#: 16,384 elements against ``torch.log``'s 117, 456 against 225 at 65,536).
XLOGY_ELEMENTS = 8192


def log(x: Tensor) -> Tensor:
    """Return ``log x`` (a new tensor; ``-inf`` at 0); on the CPU below 8,192 elements as ``xlogy(1, x)``."""
    if x.device.type != "cpu" or x.numel() >= XLOGY_ELEMENTS:
        return torch.log(x)
    return torch.special.xlogy(1.0, x)
