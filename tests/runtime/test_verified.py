"""A verified model file is not re-hashed at every start, and any change is still caught.

Whether a check hashed the file is read from the kernel's own count of bytes this
process read (``/proc/self/io``, rchar): hashing V1 reads its megabytes, trusting
a record reads a few hundred bytes.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from berg_onnx import BERG
from berg_onnx.errors import ModelLoadError
from berg_onnx.source.manifest import Manifest
from berg_onnx.utils import verified

IO = Path("/proc/self/io")
pytestmark = pytest.mark.skipif(not IO.is_file(), reason="needs /proc/self/io (Linux)")


def bytes_read() -> int:
    for line in IO.read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def check(path: Path, entry) -> tuple[str | None, int]:
    """(problem, bytes read while checking)."""
    before = bytes_read()
    problem = verified.check_file(path, entry.size, entry.sha256)
    return problem, bytes_read() - before


@pytest.fixture
def export(export_dir, tmp_path, monkeypatch):
    """A private copy of the test export, its files' ctimes older than the racy window,
    and a private verification cache."""
    out = tmp_path / "export"
    shutil.copytree(export_dir, out)
    monkeypatch.setenv(verified.ENV_VERIFY_CACHE, str(tmp_path / "cache"))
    monkeypatch.setattr(verified, "RACY_SECONDS", 0.05)
    time.sleep(0.1)
    entry = Manifest.load(out / "manifest.json").get("fmri-nsd-fwrf", 1, "V1").onnx
    return out, entry


def test_second_check_trusts_the_record_and_reads_almost_nothing(export, tmp_path):
    out, entry = export
    path = out / entry.name
    problem, first = check(path, entry)
    assert problem is None and first >= entry.size  # hashed: every byte read
    assert len(list((tmp_path / "cache").iterdir())) == 1
    problem, second = check(path, entry)
    assert problem is None and second < 4096  # the record only


def test_same_size_tamper_with_restored_mtime_is_caught(export):
    out, entry = export
    path = out / entry.name
    assert check(path, entry)[0] is None
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # size and mtime as before
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    problem, n = check(path, entry)
    assert problem is not None and "sha256" in problem and n >= entry.size


def test_a_replaced_file_is_hashed_again(export):
    out, entry = export
    path = out / entry.name
    assert check(path, entry)[0] is None
    copy = path.with_name("copy.tmp")
    shutil.copy2(path, copy)
    os.replace(copy, path)  # same bytes, same mtime: a new inode
    time.sleep(0.1)
    problem, n = check(path, entry)
    assert problem is None and n >= entry.size
    assert check(path, entry)[1] < 4096  # and remembered again


def test_a_record_for_another_sha256_is_not_trusted(export):
    out, entry = export
    path = out / entry.name
    assert check(path, entry)[0] is None
    problem = verified.check_file(path, entry.size, "0" * 64)
    assert problem is not None and "expected " + "0" * 64 in problem


def test_a_just_written_file_is_not_remembered(export, tmp_path, monkeypatch):
    out, entry = export
    monkeypatch.setattr(verified, "RACY_SECONDS", 60.0)
    path = out / entry.name
    assert check(path, entry)[0] is None
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())
    assert check(path, entry)[1] >= entry.size  # hashed again


def test_the_cache_can_be_turned_off_and_garbage_is_ignored(export, tmp_path, monkeypatch):
    out, entry = export
    path = out / entry.name
    monkeypatch.setenv(verified.ENV_VERIFY_CACHE, "off")
    assert check(path, entry)[0] is None and verified.cache_dir() is None
    assert not (tmp_path / "cache").exists()
    monkeypatch.setenv(verified.ENV_VERIFY_CACHE, str(tmp_path / "cache"))
    assert check(path, entry)[0] is None
    (record,) = (tmp_path / "cache").iterdir()
    record.write_bytes(b"\x00not json")
    problem, n = check(path, entry)
    assert problem is None and n >= entry.size  # hashed, and the record rewritten
    assert check(path, entry)[1] < 4096


def test_berg_refuses_a_tampered_file_after_a_verified_start(export):
    out, entry = export
    berg = BERG(berg_dir=out, threads=1)
    berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V1"})  # verified and remembered
    st = (out / entry.name).stat()
    data = bytearray((out / entry.name).read_bytes())
    data[100] ^= 0x80
    (out / entry.name).write_bytes(bytes(data))
    os.utime(out / entry.name, ns=(st.st_atime_ns, st.st_mtime_ns))
    fresh = BERG(berg_dir=out, threads=1)  # a new process's view: only the user cache
    with pytest.raises(ModelLoadError, match="sha256"):
        fresh.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V1"})
