"""Choosing the torch device (CUDA when present, else CPU), with one error message for bad values."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from latent.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["resolve_device"]


def resolve_device(device: Any = "auto", *, function: str = "resolve_device") -> "torch.device":
    """The torch device named by ``device``: ``"auto"`` (CUDA if available, else CPU), ``"cpu"``,
    ``"cuda"``, ``"cuda:1"`` or a ``torch.device``.

    Raises
    ------
    InputError
        Unknown device names, or CUDA asked for where torch sees no GPU; ``function`` names the caller.
    """
    import torch

    def bad(expected: str) -> InputError:
        return InputError(f"The 'device' parameter of {function} must be {expected}. Got {device!r} instead.")

    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str) and device.strip().lower() == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device.strip() if isinstance(device, str) else device)
        except (RuntimeError, TypeError, ValueError, AttributeError) as e:
            raise bad("'auto', 'cpu', 'cuda', 'cuda:<index>' or a torch.device") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise bad("a device that exists ('auto' or 'cpu': torch sees no CUDA GPU here)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise bad(f"a CUDA device below cuda:{torch.cuda.device_count()}")
    return dev
