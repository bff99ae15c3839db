"""The CPU the int8 model is made for: ``auto`` resolves to the machine quantizing it.

x86 with AVX512-VNNI or AVX-VNNI -> ``vnni``; ARM (aarch64) -> ``arm``; other x86 with AVX2 -> ``avx2``; anything
else -> ``any``. onnxruntime's u8s8 kernels are exact on VNNI and ARM; on x86 without VNNI they add pairs of products
in int16 with saturation (see ``u8s8``), which ``avx2``/``any`` keep from happening.
"""
from __future__ import annotations

import platform

AUTO = "auto"


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str]:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def detect_target(machine: str | None = None, flags: set[str] | None = None) -> str:
    machine = (machine or platform.machine()).lower()
    flags = cpu_flags() if flags is None else flags
    if machine in ("aarch64", "arm64") or machine.startswith("armv8"):
        return "arm"
    if machine in ("x86_64", "amd64", "i686", "x86"):
        if flags & {"avx512_vnni", "avx_vnni"}:
            return "vnni"
        if "avx2" in flags:
            return "avx2"
    return "any"


def resolve_target(target: str) -> str:
    return detect_target() if target == AUTO else target
