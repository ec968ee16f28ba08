"""Choosing the torch device (CUDA when present, else CPU), with one error message for bad values.

The check itself (names accepted, and whether torch sees the device) is :func:`latent.validate.device`,
which the command line also calls upfront; :func:`resolve_device` turns its answer into a
``torch.device``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from latent import validate

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["resolve_device"]


def resolve_device(device: Any = "auto", *, function: str = "resolve_device") -> "torch.device":
    """The torch device named by ``device``: ``"auto"`` (CUDA if available, else CPU), ``"cpu"``,
    ``"cuda"``, ``"cuda:1"``, ``"mps"`` or a ``torch.device``.

    Raises
    ------
    InputError
        Unknown device names, or a CUDA / MPS device torch does not see here (see
        :func:`latent.validate.device`); ``function`` names the caller.
    """
    import torch

    if isinstance(device, torch.device):
        if device.type in ("cuda", "mps"):
            validate.device("device", str(device), of=function)
        return device
    name = validate.device("device", device, of=function)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
