"""The one place where the compute device is chosen."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Literal

from facecurate.errors import DeviceError

if TYPE_CHECKING:  # torch costs seconds to import: only code that has work to do pays for it
    import torch

DeviceChoice = Literal["auto", "cpu", "cuda"]


def cuda_possible() -> bool:
    """False where no CUDA device can exist, known without importing torch (seconds): macOS, or Linux with no
    NVIDIA driver loaded. Lets ``auto`` settle on the CPU before crop forks its workers, which must happen
    before torch loads."""
    platform = sys.platform  # read at run time: mypy would settle the checks for the platform it runs on
    if platform == "darwin":
        return False
    return os.path.exists("/proc/driver/nvidia") if platform.startswith("linux") else True


def resolve_device(choice: DeviceChoice) -> torch.device:
    """Turn a ``--device`` choice into a torch device: ``auto`` picks CUDA when torch can use it."""
    import torch

    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                "CUDA is not available to torch (no GPU, no driver, or a CPU-only torch build); "
                "use --device cpu or --device auto."
            )
        return torch.device("cuda")
    raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', not {choice!r}")
