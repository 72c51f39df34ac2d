"""CPU kernel classes, the int8 fields of the manifest, and the warning on an unverified CPU."""

from __future__ import annotations

import warnings

import pytest

from berg_onnx import BERG
from berg_onnx.source.manifest import Manifest, ModelEntry
from berg_onnx.utils import cpu

HASWELL = {"sse4_2", "avx", "avx2", "fma"}
ZEN4 = HASWELL | {"avx512f", "avx512bw", "avx512_vnni"}


@pytest.mark.parametrize(
    ("flags", "machine", "expected"),
    [
        (ZEN4, "x86_64", cpu.X86_VNNI),
        (HASWELL | {"avx_vnni"}, "x86_64", cpu.X86_AVXVNNI),
        (HASWELL | {"avx512f", "avx512bw"}, "x86_64", cpu.X86_AVX512),  # Skylake-X
        (HASWELL, "x86_64", cpu.X86_AVX2),  # Haswell, AMD Zen 1-3
        ({"sse4_2"}, "AMD64", cpu.X86_OTHER),
        ({"fp", "asimd", "asimddp", "i8mm"}, "aarch64", cpu.ARM64_I8MM),
        ({"fp", "asimd", "asimddp"}, "aarch64", cpu.ARM64_DOT),
        ({"fp", "asimd"}, "aarch64", cpu.ARM64_NEON),
        (set(), "riscv64", cpu.OTHER),
    ],
)
def test_classify(flags, machine, expected):
    assert cpu.classify(frozenset(flags), machine) == expected


def test_read_flags_x86_and_arm(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512_vnni\n\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp\n")
    assert cpu.read_flags(x86) == {"fpu", "avx2", "avx512_vnni"}
    assert cpu.read_flags(arm) == {"fp", "asimd", "asimddp"}
    assert cpu.read_flags(tmp_path / "missing") == frozenset()
    assert cpu.model_name(x86) == "AMD EPYC"


def test_covered_classes_follow_the_bound():
    assert set(cpu.int8_covered_classes(cpu.X86_VNNI, 32640)) == set(cpu.X86_CLASSES)
    assert cpu.int8_covered_classes(cpu.X86_VNNI, 64770) == (cpu.X86_VNNI,)  # could saturate
    assert cpu.ARM64_DOT not in cpu.int8_covered_classes(cpu.X86_AVX2, 32640)


def test_manifest_records_where_int8_was_verified(export_dir):
    entry = Manifest.load(export_dir / "manifest.json").models["fmri-nsd-fwrf/sub-01/lateral"]
    assert entry.int8_scheme["reduce_range"] is True and entry.int8_scheme["weight_type"] == "int8"
    assert entry.int8_pair_bound is not None and 0 < entry.int8_pair_bound <= 32767
    assert entry.int8_max_abs_diff <= entry.int8_tolerance
    assert entry.int8_verified_on["class"] in entry.int8_verified_classes
    assert entry.int8_verified_on["cpu"]
    if entry.int8_verified_on["class"].startswith("x86"):
        assert cpu.X86_AVX2 in entry.int8_verified_classes  # the proof covers AVX2
    back = ModelEntry.from_dict(entry.to_dict())
    assert back == entry


def test_entries_without_int8_fields_still_load(export_dir):
    entry = Manifest.load(export_dir / "manifest.json").models["fmri-nsd-fwrf/sub-01/V1"]
    old = entry.to_dict()
    for key in [k for k in old if k.startswith("int8_") and k != "int8_max_abs_diff"]:
        del old[key]
    back = ModelEntry.from_dict(old)
    assert back.int8_scheme is None and back.int8_verified_classes == ()


@pytest.fixture
def fresh_warning(monkeypatch):
    monkeypatch.setattr(cpu, "_warned_int8", False)


def _load(berg, roi, precision="int8"):
    return berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": roi}, precision=precision)


def test_int8_on_an_unverified_cpu_class_warns_once(export_dir, fresh_warning, monkeypatch):
    monkeypatch.setattr(cpu, "current", lambda: (cpu.ARM64_NEON, ()))
    berg = BERG(berg_dir=export_dir, threads=1)
    with pytest.warns(UserWarning, match="arm64-neon CPU.*verified the int8 tier on"):
        _load(berg, "V1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _load(berg, "lateral")  # once per process
        _load(BERG(berg_dir=export_dir, threads=1), "FFA-1")


def test_no_warning_on_a_verified_class_or_for_fp32(export_dir, fresh_warning, monkeypatch):
    berg = BERG(berg_dir=export_dir, threads=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _load(berg, "V1", precision="fp32")
        monkeypatch.setattr(cpu, "current", lambda: (cpu.ARM64_NEON, ()))
        _load(berg, "FFA-1", precision="fp32")
        monkeypatch.setattr(cpu, "current", lambda: (cpu.X86_AVX2, ("avx2",)))
        _load(berg, "V1")  # AVX2 is covered by the export's bound


def test_warn_helper_reports_an_export_without_records(export_dir, fresh_warning):
    entry = Manifest.load(export_dir / "manifest.json").models["fmri-nsd-fwrf/sub-01/V1"]
    old = ModelEntry.from_dict({**entry.to_dict(), "int8_verified_classes": []})
    with pytest.warns(UserWarning, match="does not record"):
        assert cpu.warn_if_int8_unverified(old, "int8", current_class=cpu.X86_AVX2)
    assert not cpu.warn_if_int8_unverified(old, "int8", current_class=cpu.X86_AVX2)
