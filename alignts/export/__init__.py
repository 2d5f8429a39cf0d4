"""The torch side: training and export (``pip install 'alignts[export]'``). The runtime never imports it."""

from alignts.errors import missing_extra

try:
    import torch  # noqa: F401
except ImportError as e:
    if e.name != "torch":
        raise
    raise missing_extra("torch", "export", "to train and export (alignts fit, alignts quantize)") from e
