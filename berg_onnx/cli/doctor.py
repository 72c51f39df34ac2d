"""`berg-onnx doctor`: what is installed and usable, as data (``environment_info``), printed.

``environment_info`` returns plain data so a bug report, a notebook or a test can use
it; ``run`` only formats it.
"""

from __future__ import annotations

import argparse
import base64
import importlib.metadata
import sys
from pathlib import Path
from typing import Any

from berg_onnx.cli._common import add_command
from berg_onnx.constants import (
    ENV_CACHE,
    ENV_REPO,
    ENV_REVISION,
    ENV_SESSION_CACHE,
    ENV_SESSION_CACHE_MAX_BYTES,
    ENV_VERIFY_CACHE,
)

#: A 69-byte ONNX graph (Identity) used to try each execution provider.
_PROBE_MODEL = base64.b64decode(
    "CAg6OwoQCgF4EgF5IghJZGVudGl0eRIFcHJvYmVaDwoBeBIKCggIARIECgIIAWIPCgF5EgoKCAgBEgQKAggBQgQKABAN"
)
ORT_FLAVOURS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-directml",
    "onnxruntime-openvino",
    "onnxruntime-silicon",
)
EXAMPLES = """examples:
  berg-onnx doctor"""


def _provider_state(ort: Any, provider: str) -> str:
    try:
        session = ort.InferenceSession(_PROBE_MODEL, providers=[provider])
        used = session.get_providers()[0]
        return "usable" if used == provider else f"NOT usable (fell back to {used})"
    except Exception as e:  # noqa: BLE001 - report whatever the provider raised
        return f"NOT usable ({str(e).splitlines()[0][:120]})"


def _cached_models(cache: Path | None) -> dict[str, list[str]]:
    """Exported models in the cache, per Hub repo (any repo: pins and forks differ)."""
    from huggingface_hub import scan_cache_dir

    try:
        info = scan_cache_dir(cache)
    except Exception:  # noqa: BLE001 - an absent or unreadable cache just means nothing cached
        return {}
    found = {}
    for r in info.repos:
        files = {f.file_name for rev in r.revisions for f in rev.files}
        names = sorted(n.removesuffix(".onnx") for n in files if n.endswith(".onnx"))
        if names:
            found[r.repo_id] = names
    return dict(sorted(found.items()))


def environment_info(
    repo_id: str | None = None, revision: str | None = None, berg_dir: str | None = None
) -> dict[str, Any]:
    """Versions, onnxruntime flavours and providers (each tried on a tiny graph), threads,
    the Hub settings in force and the models cached, as a dict of plain values."""
    import numpy as np
    import onnxruntime as ort
    from huggingface_hub import constants as hf

    from berg_onnx._version import __version__
    from berg_onnx.session import available_cores, default_threads
    from berg_onnx.source.hub import hub_settings, placeholder_hint
    from berg_onnx.utils import optimized, verified

    flavours = {}
    for dist in ORT_FLAVOURS:
        try:
            flavours[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    providers = ort.get_available_providers()
    repo, rev, cache = hub_settings(repo_id, revision)
    return {
        "berg_onnx": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "huggingface_hub": importlib.metadata.version("huggingface-hub"),
        "onnxruntime_flavours": flavours,
        "onnxruntime": ort.__version__,
        "onnxruntime_device": ort.get_device(),
        "providers": {p: _provider_state(ort, p) for p in providers},
        "threads": default_threads(),
        "cores": available_cores(),
        "hub_repo_id": repo,
        "hub_revision": rev,
        "hub_placeholder": bool(placeholder_hint(repo)),
        "hub_endpoint": hf.ENDPOINT,
        "berg_dir": berg_dir,
        "cache": str(cache or hf.HF_HUB_CACHE),
        "offline": bool(hf.HF_HUB_OFFLINE),
        "cached_models": _cached_models(cache),
        "verify_cache": None if (v := verified.cache_dir()) is None else str(v),
        "session_cache": optimized.summary(),
    }


def run(args: argparse.Namespace) -> int:
    info = environment_info(args.repo_id, args.revision, args.berg_dir)
    print(f"berg-onnx {info['berg_onnx']}, Python {info['python']}, numpy {info['numpy']}")
    print(f"huggingface_hub {info['huggingface_hub']}")
    flavours = [f"{d} {v}" for d, v in info["onnxruntime_flavours"].items()]
    print(f"onnxruntime flavours installed: {', '.join(flavours) or 'none'}")
    if len(flavours) > 1:
        print(
            "WARNING: more than one onnxruntime flavour is installed; they share one module "
            "folder and break each other. Uninstall all of them, then install only one."
        )
    print(f"onnxruntime module {info['onnxruntime']}, device {info['onnxruntime_device']}")
    print(f"providers available: {', '.join(info['providers'])}")
    for provider, state in info["providers"].items():
        unused = provider not in ("CPUExecutionProvider", "CUDAExecutionProvider")
        note = " (not used by berg-onnx, whose devices are cpu and cuda)" if unused else ""
        print(f"  {provider}: {state}{note}")
    if "CUDAExecutionProvider" not in info["providers"]:
        print("  CUDA: not available in this onnxruntime (see README, GPU install)")
    print(f"threads: {info['threads']} (cores usable by this process: {info['cores']})")
    print(
        f"Hub repo: {info['hub_repo_id']}@{info['hub_revision']} (env {ENV_REPO}, "
        f"{ENV_REVISION}); endpoint {info['hub_endpoint']}"
    )
    if info["hub_placeholder"] and not info["berg_dir"]:
        from berg_onnx.source.hub import placeholder_hint

        print(f"  WARNING: {placeholder_hint(info['hub_repo_id'])}")
    if info["berg_dir"]:
        print(f"export directory: {info['berg_dir']} (--berg-dir; the Hub is not used)")
    print(f"cache: {info['cache']} (env {ENV_CACHE} or HF_HUB_CACHE)")
    print(f"offline mode (HF_HUB_OFFLINE): {'on' if info['offline'] else 'off'}")
    if not info["cached_models"]:
        print("cached models: none")
    for repo_id, names in info["cached_models"].items():
        print(f"cached models in {repo_id}: {', '.join(names)}")
    print(f"verified-file records: {info['verify_cache'] or 'off'} (env {ENV_VERIFY_CACHE})")
    graphs = info["session_cache"]
    if graphs["folder"] is None:
        print(f"optimised graphs: off (env {ENV_SESSION_CACHE})")
    else:
        print(
            f"optimised graphs: {graphs['folder']} ({graphs['entries']} "
            f"{'entry' if graphs['entries'] == 1 else 'entries'}, "
            f"{graphs['bytes'] / 1e6:.0f} MB of at most {graphs['max_bytes'] / 1e6:.0f} MB; "
            f"env {ENV_SESSION_CACHE}, {ENV_SESSION_CACHE_MAX_BYTES})"
        )
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The `doctor` command's options."""
    p = add_command(
        sub, "doctor", "check the installation: versions, providers, CUDA, cache", EXAMPLES
    )
    p.set_defaults(func=run)
