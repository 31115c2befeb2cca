"""What the numbers were measured on: the CPU with the flags that pick ONNX Runtime's kernels, and the GPU."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

# The flags that decide which int8/bf16 kernels ONNX Runtime and PyTorch run (AVX2 alone: vpmaddubsw; VNNI, AMX).
KERNEL_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


def cpuinfo_fields() -> dict[str, str]:
    """The first processor's ``key: value`` lines of /proc/cpuinfo (empty where there is none)."""
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    fields: dict[str, str] = {}
    for line in lines:  # the first processor's lines
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_facts() -> tuple[str, dict[str, bool]]:
    """The CPU's model name and which of :data:`KERNEL_FLAGS` it has (Linux: /proc/cpuinfo; elsewhere no flags)."""
    fields = cpuinfo_fields()
    name = fields.get("model name") or platform.processor() or platform.machine()
    flags = fields.get("flags", "")
    present = set(flags.split())
    return name, {flag: flag in present for flag in KERNEL_FLAGS}


def cpu_description() -> str:
    """e.g. ``AMD EPYC (avx2)``: the model name and the kernel flags it has."""
    name, flags = cpu_facts()
    return f"{name} ({', '.join(flag for flag, on in flags.items() if on) or 'no AVX2'})"


def gpu_name(device_id: int = 0) -> str | None:
    """What ``nvidia-smi`` says of CUDA device ``device_id`` (e.g. ``NVIDIA H200 · 143771 MiB · 580.159.03``), None
    without nvidia-smi or that GPU. ``device_id`` counts the devices CUDA_VISIBLE_DEVICES leaves, as CUDA does;
    nvidia-smi numbers every GPU, so the id is mapped through that list first."""
    target = nvidia_smi_target(device_id)
    said = nvidia_smi("--query-gpu=name,memory.total,driver_version", "--format=csv,noheader", "-i", target) if target is not None else None
    line = said.strip().splitlines()[0] if said and said.strip() else ""
    return line.replace(", ", " · ") or None


def nvidia_smi(*arguments: str) -> str | None:
    """What ``nvidia-smi ARGUMENTS`` prints, or None without nvidia-smi or when it fails (no driver, no such GPU)."""
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return None
    try:
        result = subprocess.run([tool, *arguments], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def onnxruntime_package() -> tuple[str, str]:
    """The onnxruntime this process imports: its package (``onnxruntime`` or ``onnxruntime-gpu``) and version.

    Both packages install the same module, and a host can hold both (a GPU host's image with the CPU build, and the
    GPU build put first on sys.path): package metadata alone would name the one that does not run. The package is
    the one whose files hold the imported module (links resolved); of two that both claim it, the one whose version
    the module reports.
    """
    import onnxruntime as ort

    module = Path(ort.__file__).resolve()
    claims = []
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name in ("onnxruntime", "onnxruntime-gpu") and Path(str(dist.locate_file("onnxruntime/__init__.py"))).resolve() == module:
            claims.append((dist.version != ort.__version__, name))  # the module's own version first
    return (min(claims)[1] if claims else "onnxruntime"), ort.__version__  # no claim: a source build, say


def nvidia_smi_target(device_id: int = 0) -> str | None:
    """What ``nvidia-smi -i`` calls CUDA device ``device_id``: CUDA counts the devices CUDA_VISIBLE_DEVICES leaves,
    nvidia-smi numbers every GPU (None: that device is not visible)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return str(device_id)
    entries = [entry.strip() for entry in visible.split(",") if entry.strip()]
    return entries[device_id] if device_id < len(entries) else None  # an index or a GPU-... UUID: -i takes both
