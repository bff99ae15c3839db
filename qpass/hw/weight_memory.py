"""Runtime-writable weight and threshold memories (``mem_mode`` "runtime"): what they are and what they cost.

A matrix layer in runtime mode keeps its weights (and fused thresholds) in RAMs that the host writes before
streaming (BNN-PYNQ's ``DoMemInit`` design, FINN's ``internal_decoupled`` memories with
``runtime_writeable_weights``), instead of constant ROMs initialised at build time ("const", FINN's embedded mode).
The memories are the same per-PE tables (finn-hlslib layout, one memory per PE lane, SIMD x W bits per word, in
limbs of at most 64 bits, the width of one host write), bound as a RAM with one read/write port (the load path)
and one read port (the layer): HLS ``BIND_STORAGE type=ram_2p``, a ``reg`` array with a write port in RTL.

Pricing (assumptions stated in the export report, ``ASSUMPTIONS``):
  - ``ram_style`` "auto" weights go to block RAM whatever their depth (FINN's MVAU ``bram_estimation``: only
    embedded weights of at most 128 words are LUTs; BNN-PYNQ keeps every weight memory in block RAM); thresholds
    keep the "auto" rule of ``memory_costs`` (LUTRAM up to 128 words).
  - block RAM: a port that writes makes the RAMB18 true dual port, at most ``TDP_MAX_WIDTH`` = 18 bits wide
    (UG573 Table 1-10; 36 only in simple dual port mode, one write-only and one read-only port), per bank of
    depth x limb width; LUTRAM: RAM64M, 4 LUTs per 3 bits per 64 words; UltraRAM: 72 x 4096 per bank.
  - the load path: a write-enable decoder of ``LOAD_DECODE_LUT_PER_BANK`` = 2 LUTs per memory bank (memory id,
    PE row and limb compared with the AXI-Lite registers) [qpass assumption]; the AXI-Lite slave itself belongs to
    the shell (not estimated, as the DMA).
"""
from __future__ import annotations

import math

from qpass.errors import QpassError
from qpass.hw import memory_costs as mc

MEM_MODES = ("const", "runtime")
TDP_MAX_WIDTH = 18
LIMB_BITS = 64
LOAD_DECODE_LUT_PER_BANK = 2
#: FINN's mem_mode values (old and new spellings) -> qpass' mem_mode
FINN_MEM_MODES = {"const": "const", "internal_embedded": "const", "embedded": "const",
                  "decoupled": "runtime", "internal_decoupled": "runtime", "runtime": "runtime"}
ASSUMPTIONS = ("runtime-writable memories (mem_mode runtime): per-PE RAMs with a read/write load port (ram_2p), "
               "weights in block RAM unless ram_style says otherwise, RAMB18 at most 18 bits per port (true dual "
               "port), 2 LUTs of write decode per memory bank; the AXI-Lite slave is part of the shell.")


def weight_style(mem_mode: str, ram_style: str) -> str:
    """The weight memory's ram_style: "auto" is block RAM for runtime-writable weights (the cost model's rule
    otherwise, resolved later by ``memory_costs.resolve_ram_style``)."""
    return "block" if mem_mode == "runtime" and ram_style == "auto" else ram_style


def banks(width: int) -> tuple[int, int]:
    """(limbs, limb width) of one memory word of ``width`` bits: one host write per limb."""
    nl = max(1, math.ceil(width / LIMB_BITS))
    return nl, math.ceil(width / nl)


def runtime_memory(depth: int, width: int, copies: int = 1, ram_style: str = "auto") -> tuple[int, int, int]:
    """(LUT, BRAM18, URAM) of ``copies`` writable memories of depth x width bits, each ``banks(width)`` limb RAMs,
    and their write decoders (module docstring)."""
    if depth <= 0 or width <= 0:
        return 0, 0, 0
    nl, lw = banks(width)
    n = copies * nl
    decode = LOAD_DECODE_LUT_PER_BANK * n
    style = mc.resolve_ram_style(depth, ram_style)
    if style == "distributed":
        return decode + n * mc.lutram_for(depth, lw, writable=True), 0, 0
    if style == "ultra":
        return decode, 0, n * math.ceil(lw / 72) * math.ceil(depth / 4096)
    return decode, n * mc.bram18_for(depth, lw, max_width=TDP_MAX_WIDTH), 0


def pricing(mem_mode: str):
    """The memory cost function of ``memory_costs.matrix_unit`` for a layer's ``mem_mode``."""
    return runtime_memory if mem_mode == "runtime" else mc.memory


def with_mem_mode(folding: dict | None, weights_mode: str) -> dict | None:
    """A FINN folding file (``qpass.hw.folding_config``) with ``weights_mode`` as the default ``mem_mode`` of every
    layer it does not set (``--weights-mode``)."""
    if weights_mode not in MEM_MODES:
        raise QpassError(f"weights mode {weights_mode!r} is not one of {', '.join(MEM_MODES)}")
    if weights_mode == "const" and not folding:
        return folding
    cfg = {k: dict(v) for k, v in (folding or {}).items()}
    cfg.setdefault("Defaults", {}).setdefault("mem_mode", weights_mode)
    return cfg
