"""Numba kernels of the runtime, each beside its NumPy reference twin (``*_ref``).

Every public function takes series with time last (``[..., L]``), checks for inf and shapes, and documents its
NaN policy in its module docstring. See docs/ARCHITECTURE.md "Kernel contracts".
"""

from alignts.kernels.digits import CodecTable, TEXT_TABLE, decode_digits, decode_text, encode_digits, encode_text
from alignts.kernels.norm import instance_denorm, instance_norm, instance_stats
from alignts.kernels.patch import n_patches, norm_patchify, patchify
from alignts.kernels.scaler import llmtime_scale, llmtime_scaler, llmtime_unscale
from alignts.kernels.stats import prompt_stats

__all__ = [
    "instance_stats", "instance_norm", "instance_denorm",
    "n_patches", "patchify", "norm_patchify",
    "llmtime_scaler", "llmtime_scale", "llmtime_unscale",
    "CodecTable", "TEXT_TABLE", "encode_digits", "decode_digits", "encode_text", "decode_text",
    "prompt_stats",
]
