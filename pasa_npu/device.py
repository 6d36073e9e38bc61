"""Device selection: explicit ``device=`` wins; ``"auto"`` picks npu, then cuda, then cpu.

``torch_npu`` is optional (``pip install .[npu]``): without Ascend CANN, importing it makes
``import torch`` itself fail, so it is only imported when ``importlib.util.find_spec`` finds it,
and any failure to import or initialise it means "no NPU".
"""

from __future__ import annotations

import functools
import importlib
import importlib.util

import torch

__all__ = ["npu_available", "resolve_device", "import_torch_npu"]


def import_torch_npu():
    """Import and return ``torch_npu``, or ``None`` if it is absent or cannot initialise."""
    if importlib.util.find_spec("torch_npu") is None:
        return None
    try:
        return importlib.import_module("torch_npu")
    except Exception:  # ImportError, OSError (missing CANN libraries), RuntimeError ...
        return None


@functools.lru_cache(maxsize=1)
def npu_available() -> bool:
    """True if torch_npu imports and reports at least one NPU."""
    mod = import_torch_npu()
    if mod is None:
        return False
    npu = getattr(torch, "npu", None)
    try:
        return bool(npu is not None and npu.is_available())
    except Exception:
        return False


def _npu_device() -> torch.device:
    # Valid only once torch_npu has registered the "npu" backend with torch.
    return torch.device("npu")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None): npu if available, else cuda, else cpu; anything else is used as given."""
    if device is None or (isinstance(device, str) and device == "auto"):
        if npu_available():
            return _npu_device()
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise TypeError(
            f"device must be 'auto', a device string or a torch.device, got {type(device).__name__}"
        )
    if device.split(":")[0] == "npu":
        if not npu_available():
            raise ValueError(
                "device='npu' requested but torch_npu with an Ascend NPU is not available (pip install .[npu] on a CANN machine)"
            )
        return torch.device(device)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' requested but torch.cuda.is_available() is False")
    return dev
