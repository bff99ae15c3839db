"""FPGA devices and their resources (whole device, from the Xilinx product tables).

Numbers: DS190 (Zynq-7000), DS891 (Zynq UltraScale+ MPSoC), DS962 (Alveo U250). BRAM is counted in
RAMB18 halves (one RAMB36 = 2 BRAM18). For the Alveo card the static shell takes a share of these;
``fold_for_budget``'s utilisation factor is where to leave room for it and for FIFOs/DMA.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from qpass.errors import QpassError


@dataclass(frozen=True)
class Device:
    part: str
    board: str
    lut: int
    bram18: int
    uram: int
    dsp: int
    clock_ns: float
    aliases: tuple[str, ...] = ()

    def capacity(self, utilisation: float = 1.0) -> tuple[int, int, int, int]:
        """(LUT, BRAM18, URAM, DSP) usable at the given utilisation."""
        u = float(utilisation)
        return (int(self.lut * u), int(self.bram18 * u), int(self.uram * u), int(self.dsp * u))


DEVICES: Mapping[str, Device] = MappingProxyType({d.part: d for d in (
    Device("xc7z020", "Pynq-Z1/Z2", lut=53_200, bram18=280, uram=0, dsp=220, clock_ns=10.0,
           aliases=("pynq-z1", "pynq-z2", "pynq")),
    Device("xc7z045", "ZC706", lut=218_600, bram18=1_090, uram=0, dsp=900, clock_ns=5.0,
           aliases=("zc706",)),
    Device("xczu3eg", "Ultra96", lut=70_560, bram18=432, uram=0, dsp=360, clock_ns=5.0,
           aliases=("ultra96",)),
    Device("xczu7ev", "ZCU104", lut=230_400, bram18=624, uram=96, dsp=1_728, clock_ns=5.0,
           aliases=("zcu104",)),
    Device("xcu250", "Alveo U250", lut=1_728_000, bram18=5_376, uram=1_280, dsp=12_288, clock_ns=5.0,
           aliases=("u250", "alveo-u250")),
)})


def get_device(name: str | Device) -> Device:
    """Look a device up by part (a full part number such as 'xc7z020clg400-1' matches its prefix) or
    board alias, case-insensitively."""
    if isinstance(name, Device):
        return name
    key = str(name).strip().lower()
    for d in DEVICES.values():
        if key == d.part or key in d.aliases or (key.startswith(d.part) and len(key) > len(d.part)):
            return d
    known = ", ".join(f"{d.part} ({d.board})" for d in DEVICES.values())
    raise QpassError(f"unknown FPGA device {name!r}; known devices: {known}")
