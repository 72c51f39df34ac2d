"""Which class of integer-GEMM kernel this CPU gets from onnxruntime (cheap, no probing).

onnxruntime's int8 matrix products (MLAS) pick a kernel from the CPU's
instruction sets, and the kernels do not all compute the same thing:

- x86 with VNNI (``avx512_vnni`` or ``avx_vnni``): VPDPBUSD adds four u8*s8
  products straight into int32, exactly.
- x86 with AVX2 or AVX-512BW but no VNNI (Haswell..Skylake-X, AMD Zen 1-3):
  VPMADDUBSW adds *pairs* of u8*s8 products into int16 and saturates, so
  full-range int8 weights (|w| <= 127: 2*255*127 = 64770 > 32767) can clip.
- ARM64: widening multiplies (UMULL/SMULL + UADALP) or SDOT/UDOT/USMMLA, all
  accumulating in int32 without an int16 stage.

The int8 tier is exported so that it cannot saturate on any of them (see
``export/int8_kernels.py``); the manifest records which classes the export
verified, and the runtime warns once when it runs on another.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

#: Kernel classes, most capable first within each architecture.
X86_VNNI = "x86-avx512vnni"
X86_AVXVNNI = "x86-avxvnni"
X86_AVX512 = "x86-avx512"  # AVX-512BW without VNNI: VPMADDUBSW, saturating
X86_AVX2 = "x86-avx2"  # VPMADDUBSW, saturating
X86_OTHER = "x86-sse"
ARM64_I8MM = "arm64-i8mm"
ARM64_DOT = "arm64-dot"
ARM64_NEON = "arm64-neon"
OTHER = "other"
#: Classes whose u8*s8 kernel sums pairs of products in saturating int16.
PAIRWISE_INT16 = frozenset({X86_AVX512, X86_AVX2, X86_OTHER})

_CPUINFO = Path("/proc/cpuinfo")


def read_flags(cpuinfo: Path = _CPUINFO) -> frozenset[str]:
    """The CPU feature flags of the first processor in /proc/cpuinfo (empty if unreadable).

    x86 kernels list them under ``flags``, ARM64 ones under ``Features``.
    """
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def classify(flags: frozenset[str] | set[str], machine: str) -> str:
    """The kernel class for these flags on this ``platform.machine()``."""
    m = machine.lower()
    if m in ("x86_64", "amd64", "i686", "i386", "x86"):
        if "avx512_vnni" in flags or "avx512vnni" in flags:
            return X86_VNNI
        if "avx_vnni" in flags or "avxvnni" in flags:
            return X86_AVXVNNI
        if "avx512bw" in flags:
            return X86_AVX512
        if "avx2" in flags:
            return X86_AVX2
        return X86_OTHER
    if m in ("aarch64", "arm64"):
        if "i8mm" in flags:
            return ARM64_I8MM
        # every Apple arm64 CPU has the dot-product instructions; macOS has no cpuinfo
        if "asimddp" in flags or (not flags and platform.system() == "Darwin"):
            return ARM64_DOT
        return ARM64_NEON
    return OTHER


#: Flags that decide the class; only these are recorded in manifests.
RELEVANT_FLAGS = (
    "avx2",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "amx_int8",
    "asimddp",
    "i8mm",
)


@functools.cache
def current() -> tuple[str, tuple[str, ...]]:
    """(kernel class, the relevant flags present) for the CPU this process runs on."""
    flags = read_flags()
    return classify(flags, platform.machine()), tuple(f for f in RELEVANT_FLAGS if f in flags)


def model_name(cpuinfo: Path = _CPUINFO) -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()``."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: Every x86 class: with no int16 pair able to saturate, all their u8 x s8 kernels
#: return the exact int32 product (VNNI by definition, VPMADDUBSW by the bound).
X86_CLASSES = (X86_VNNI, X86_AVXVNNI, X86_AVX512, X86_AVX2, X86_OTHER)
INT16_MAX = 32767


def int8_covered_classes(measured: str, pair_bound: int) -> tuple[str, ...]:
    """The kernel classes an int8 export's verified figures hold on.

    The class it was measured on, plus every x86 class when ``pair_bound`` (the
    worst pair sum its weights allow) fits in int16: their integer results are
    then bit-identical, so only float rounding (~1e-6, amplified to at most one
    activation quantisation step) differs. ARM kernels accumulate in int32 too,
    but no export here has been measured on one, so they are not claimed.
    """
    covered = [measured]
    if pair_bound <= INT16_MAX:
        covered += [c for c in X86_CLASSES if c != measured]
    return tuple(covered)


_warned_int8 = False


def warn_if_int8_unverified(entry, precision: str, current_class: str | None = None) -> bool:
    """Warn (once per process) when an int8 model runs on a CPU class its export did not cover.

    ``entry`` is the model's manifest entry; ``current_class`` defaults to this
    CPU's (injectable for tests). Returns True when it warned.
    """
    global _warned_int8
    if precision != "int8" or _warned_int8:
        return False
    cls = current_class or current()[0]
    verified = tuple(getattr(entry, "int8_verified_classes", ()) or ())
    if cls in verified:
        return False
    import warnings

    if verified:
        why = f"its export verified the int8 tier on {', '.join(verified)} only"
    else:
        why = "its export does not record where the int8 tier was verified (re-export it)"
    warnings.warn(
        f"{entry.key}: running the int8 tier on a {cls} CPU, but {why}; its error may "
        "differ from the manifest's int8_max_abs_diff. Use precision='fp32' for exact results.",
        stacklevel=3,
    )
    _warned_int8 = True
    return True
