"""The device of a job: the study's ``device`` setting (auto, cpu, cuda), one GPU per job on a node with several
(an exclusive ``flock`` slot per job), and a log line saying which device and why."""
from __future__ import annotations

import fcntl
import os
import sys
import tempfile
from pathlib import Path

import torch

from vaebench.errors import StageError

SLOT_DIR_ENV = "VAEBENCH_GPU_SLOTS_DIR"
_held: list = []


class DeviceError(StageError):
    """The study demands ``device: cuda`` and torch sees no usable GPU (the message says why)."""


def cuda_status() -> str:
    """Why torch does or does not see a GPU, in words: torch's version, its CUDA build, the device count."""
    build = torch.version.cuda
    if build is None:
        return f"torch {torch.__version__} is a CPU-only build"
    if not torch.cuda.is_available():
        return (f"torch {torch.__version__} (CUDA {build}) sees no usable GPU: no device, or a driver older than "
                f"CUDA {build} needs (check `nvidia-smi`; install a torch built for your driver's CUDA)")
    return f"torch {torch.__version__} (CUDA {build}) sees {torch.cuda.device_count()} GPU(s)"


def slot_dir() -> Path:
    """The folder of the slot locks: ``$VAEBENCH_GPU_SLOTS_DIR``, else ``<tmp>/vaebench-gpu-slots-<uid>``."""
    return Path(os.environ.get(SLOT_DIR_ENV) or Path(tempfile.gettempdir()) / f"vaebench-gpu-slots-{os.getuid()}")


def claim_slot(directory: str | os.PathLike | None = None) -> int:
    """Claim the lowest free slot j for the life of this process (idempotent). Raises OSError."""
    if _held:
        return _held[0][0]
    directory = Path(directory) if directory is not None else slot_dir()
    directory.mkdir(parents=True, exist_ok=True)
    j = 0
    while True:
        f = open(directory / f"slot{j}.lock", "a+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            j += 1
            continue
        _held.append((j, f))
        return j


def gpu_for_slot(slot: int, n_gpus: int) -> int:
    """The GPU index of slot ``slot`` among ``n_gpus`` GPUs: slot mod n_gpus. Raises ValueError for n_gpus < 1."""
    if n_gpus < 1:
        raise ValueError(f"gpu_for_slot: need n_gpus >= 1, got {n_gpus}")
    return slot % n_gpus


def visible_gpus(setting: str) -> int:
    """GPUs that jobs with ``device: <setting>`` would use on this node (torch's device count; 0 for cpu)."""
    if setting == "cpu" or not torch.cuda.is_available():
        return 0
    return torch.cuda.device_count()


def pick_device(setting: str = "auto", log: bool = True) -> torch.device:
    """The job's device for the ``device`` setting (with several GPUs, the slot's GPU), logged on stderr.
    Raises DeviceError (``cuda`` without a usable GPU) or ValueError (an unknown setting)."""
    if setting not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device: unknown setting {setting!r} (expected auto, cpu or cuda)")
    if setting == "cpu":
        device, why = torch.device("cpu"), "the study says device: cpu"
    elif not torch.cuda.is_available():
        if setting == "cuda":
            raise DeviceError(f"the study says device: cuda, but {cuda_status()}")
        device, why = torch.device("cpu"), f"device: auto and {cuda_status()}"
    else:
        n = torch.cuda.device_count()
        index = gpu_for_slot(claim_slot(), n) if n > 1 else 0
        torch.cuda.set_device(index)
        device = torch.device("cuda", index)
        why = (f"device: {setting}; {torch.cuda.get_device_name(index)}; {cuda_status()}"
               + (f"; GPU slot {_held[0][0]} of this node" if n > 1 else ""))
    if log:
        print(f"[device] {device} ({why})", file=sys.stderr, flush=True)
    return device


def device_name(device: torch.device) -> str:
    """A human name of ``device``: the GPU's model, or the CPU's (from /proc/cpuinfo where there is one)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "cpu"
