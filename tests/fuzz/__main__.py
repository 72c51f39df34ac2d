"""python -m tests.fuzz TARGET [--runs N | --seconds S]: fuzz one loader of untrusted files.

Targets (tests/fuzz/targets.py): checkpoint, pickle, metadata, npz, manifest,
stimulus, or ``all`` (each in turn). The engine is atheris (coverage-guided
libFuzzer, ``pip install -e ".[fuzz]"``, Python 3.11 wheel); without it a
plain seeded mutator runs instead, so the CI stage still exercises the
property. Bounds enforced here: address space of the process limited to its
size at start + ``--memory-mb`` (RLIMIT_AS; a MemoryError is a finding),
``--timeout`` seconds per input (libFuzzer's -timeout; the fallback checks
each input's time). Seeds come from real files (golden checkpoints, the test
export when $BERG_TEST_ARTIFACTS is set) and tests/fuzz/crafted.py, written
under --workdir at run time; findings land there as crash-* files: commit
them under tests/fuzz/regressions/TARGET/ (tests/fuzz/test_regressions.py
replays them).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # keeps the address space small and steady
os.environ.setdefault("OMP_NUM_THREADS", "1")

NAMES = ("checkpoint", "pickle", "metadata", "npz", "manifest", "stimulus")


def _vm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _limit_memory(extra_mb: int) -> None:
    limit = _vm_bytes() + extra_mb * (1 << 20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))


def _write_seeds(seeds, folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for data in seeds():
        (folder / hashlib.sha1(data).hexdigest()).write_bytes(data)
        n += 1
    return n


def _mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(7)
        at = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(at, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[at:at] = rng.randbytes(rng.randint(1, 8))
        elif op == 2:
            del buf[at : at + rng.randint(1, 64)]
        elif op == 3 and buf:
            n = rng.choice((1, 2, 4, 8))
            buf[at : at + n] = rng.choice((b"\xff", b"\x7f", b"\x00", b"\x80")) * n
        elif op == 4 and buf:
            start = rng.randrange(len(buf))
            buf[at:at] = buf[start : start + rng.randint(1, 256)]
        elif op == 5:
            other = rng.choice(pool)
            cut = rng.randrange(len(other) + 1)
            buf = buf[:at] + bytearray(other[cut:])
        elif op == 6 and buf:
            buf[at : at + 1] = bytes([rng.randrange(256)])
    return bytes(buf)


def _run_random(target, corpus: Path, runs: int, seconds: float, timeout: float, work: Path):
    """A seeded mutational fuzzer (no coverage feedback): the fallback without atheris."""
    pool = [p.read_bytes() for p in sorted(corpus.iterdir())]
    rng = random.Random(int(os.environ.get("BERG_FUZZ_SEED", "0")))
    start, done, slowest = time.monotonic(), 0, 0.0
    while (runs <= 0 or done < runs) and (seconds <= 0 or time.monotonic() - start < seconds):
        data = pool[done % len(pool)] if done < len(pool) else _mutate(rng, rng.choice(pool), pool)
        t = time.monotonic()
        try:
            target(data)
        except BaseException:
            crash = work / f"crash-{hashlib.sha1(data).hexdigest()}"
            crash.write_bytes(data)
            print(f"finding: input written to {crash}", file=sys.stderr)
            raise
        took = time.monotonic() - t
        slowest = max(slowest, took)
        if took > timeout:
            crash = work / f"slow-{hashlib.sha1(data).hexdigest()}"
            crash.write_bytes(data)
            raise SystemExit(f"finding: an input took {took:.2f} s (> {timeout} s): {crash}")
        done += 1
    print(
        f"random engine: {done} inputs in {time.monotonic() - start:.1f} s, slowest {slowest:.3f} s"
    )


def _run_one(name: str, args: argparse.Namespace) -> None:
    work = Path(args.workdir) / name
    corpus, seeds = work / "corpus", work / "seeds"
    corpus.mkdir(parents=True, exist_ok=True)
    try:
        import atheris
    except ImportError:
        atheris = None
    if atheris is not None and args.engine != "random":
        # resize is numeric, not parsing (and instrumented it grew ~15 MB/s under atheris)
        with atheris.instrument_imports(
            include=["berg_onnx", "export", "pickle", "zipfile"],
            exclude=["berg_onnx.inputs.resize"],
        ):
            import berg_onnx.source.metadata  # noqa: F401
            from tests.fuzz.targets import TARGETS

            try:
                import export.checkpoint  # noqa: F401  (imported lazily by the targets)
            except ImportError:
                pass
    else:
        from tests.fuzz.targets import TARGETS
    target, seed_fn = TARGETS[name]
    n = _write_seeds(seed_fn, seeds)
    print(f"fuzz {name}: {n} seeds in {seeds}", flush=True)
    _limit_memory(args.memory_mb)
    if atheris is None or args.engine == "random":
        for p in seeds.iterdir():
            (corpus / p.name).write_bytes(p.read_bytes())
        _run_random(target, corpus, args.runs, args.seconds, args.timeout, work)
        return
    max_len = max(p.stat().st_size for p in seeds.iterdir())
    argv = [
        sys.argv[0],
        str(corpus),
        str(seeds),
        f"-timeout={int(max(1, round(args.timeout)))}",
        f"-rss_limit_mb={args.memory_mb + 400}",
        f"-max_len={max(4096, max_len)}",
        f"-artifact_prefix={work}/",
        "-print_final_stats=1",
    ]
    argv.append(f"-runs={args.runs}" if args.runs > 0 else f"-max_total_time={int(args.seconds)}")
    atheris.Setup(argv, lambda data: target(bytes(data)))
    atheris.Fuzz()


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz", description=__doc__.split("\n")[0]
    )
    parser.add_argument("target", choices=[*NAMES, "all"])
    parser.add_argument("--runs", type=int, default=0, help="number of inputs (0: use --seconds)")
    parser.add_argument("--seconds", type=float, default=30, help="time budget per target")
    parser.add_argument("--timeout", type=float, default=1.0, help="seconds allowed per input")
    parser.add_argument("--memory-mb", type=int, default=500, help="address-space growth allowed")
    parser.add_argument("--engine", choices=("auto", "random"), default="auto")
    parser.add_argument("--workdir", default="_work/fuzz")
    args = parser.parse_args()
    if args.target != "all":
        _run_one(args.target, args)
        return 0
    import subprocess

    for name in NAMES:  # libFuzzer exits the process when done: one child per target
        cmd = [sys.executable, "-m", "tests.fuzz", name, *sys.argv[2:]]
        print("+", " ".join(cmd[2:]), flush=True)
        rc = subprocess.call(cmd)
        if rc != 0:
            print(f"fuzz target {name} failed (exit {rc})", file=sys.stderr)
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
