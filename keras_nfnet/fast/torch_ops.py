"""Scaled Weight Standardization in eager PyTorch: what the torch backend runs instead of the
``keras.ops`` composition, to the same values.

On torch nothing fuses or recomputes an op chain (`keras_nfnet.fast.fusion` runs the chains
themselves there), so each ``keras.ops`` call is one kernel over the whole tensor, and autograd
keeps its intermediates for the backward pass. Weight standardization runs such a chain over
every conv kernel, in every forward pass:

========================  ======================================================================
chain                     torch form
========================  ======================================================================
Scaled WS, ``"timm"``     ``torch.nn.functional.batch_norm`` over the kernel's ``(out, fan_in)``
                          rows with ``weight = gain / sqrt(fan_in)`` (timm's own form of the
                          same formula): one kernel forward, one backward.
Scaled WS, ``"deepmind"`` the rows centered on their means, ``n var`` as each centered row's
                          squared norm (``torch.linalg.vector_norm``), and one product with the
                          per-channel factor ``gain * rsqrt(max(n var, floor))``.
========================  ======================================================================

Both start with one copy of the kernel into ``(out, fan_in)`` rows (``batch_norm``'s channel-first
form) and return the result as an HWIO view of that ``(O, H, W, I)`` memory, which is the
channels-last layout `keras_nfnet.fast.conv_ops` hands the torch convolution: the copy the
convolution made of every kernel is this one. Besides the rows, autograd keeps at most the
centered rows.

The formulas are those of `keras_nfnet.layers.ws_conv.standardize_kernel`, which calls this on
torch outside `reference_paths`; tests/test_fast_paths.py compares both forms, values and
gradients. AGC's one-kernel norm on torch is `keras_nfnet.agc.unitwise_norm_torch_fused`.
"""

from __future__ import annotations

import math


def standardize(kernel, gain, standardization: str, floor: float, eps: float):
    """The scaled, standardized ``kernel`` (HWIO, statistics over all axes but the last);
    ``gain`` has the kernel's dtype.

    ``"deepmind"``: ``gain * (w - mean) / sqrt(max(n * var, floor))``; ``"timm"``:
    ``gain * (w - mean) / (sqrt(n) * sqrt(var + eps))``, ``n`` the fan-in.

    Example:
    >>> import torch
    >>> w = torch.randn(3, 3, 4, 8, dtype=torch.float64)
    >>> w_hat = standardize(w, torch.ones(8, dtype=torch.float64), "deepmind", 1e-4, 1e-5)
    >>> bool(torch.allclose((w_hat ** 2).sum(dim=(0, 1, 2)), torch.ones(8, dtype=torch.float64)))
    True
    """
    import torch

    shape = tuple(kernel.shape)
    fan_in, out_channels = math.prod(shape[:-1]), shape[-1]
    # One copy into (out, fan_in) rows, whose result is already the channels-last (O, H, W, I)
    # layout the convolution reads (it would otherwise copy the kernel itself).
    rows = kernel.permute(len(shape) - 1, *range(len(shape) - 1)).reshape(out_channels, fan_in)
    if standardization == "timm":
        out = torch.nn.functional.batch_norm(
            rows[None], None, None, gain / math.sqrt(fan_in), training=True, momentum=0.0, eps=eps
        )[0]
    else:
        # Two passes (mean, then the centered rows' squared norm) ran 7x faster than
        # ``torch.var_mean``'s one Welford pass on these shapes (bench/FINDINGS.md §6).
        centered = rows - rows.mean(dim=1, keepdim=True)
        n_var = torch.linalg.vector_norm(centered, dim=1, keepdim=True).square()
        out = centered * (torch.rsqrt(torch.clamp_min(n_var, floor)) * gain[:, None])
    # Back to the kernel's (H, W, I, O) shape as a view of the (O, H, W, I) memory.
    return out.reshape(out_channels, *shape[:-1]).permute(*range(1, len(shape)), 0)
