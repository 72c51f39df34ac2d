"""Every environment variable, default and shared value list berg_onnx uses, side by side.

The names live here; the values of environment variables are read when a function
asks for them (``env_str``, ``env_positive_int``), not at import, so a variable set
after ``import berg_onnx`` (a notebook, a test) is still honoured. Bottom layer:
imports only ``errors``.
"""

from __future__ import annotations

import os
from numbers import Integral
from pathlib import Path

from berg_onnx.errors import InvalidParameterError

#: Model id of the only model family shipped so far.
DEFAULT_MODEL_ID = "fmri-nsd-fwrf"
#: Model precisions: the fp32 graph, or the opt-in tier whose readout runs in int8.
PRECISIONS = ("fp32", "int8")
#: How a run store's (N, nv) columns map to voxels: the mask's True voxels in C order.
VOXEL_ORDER = "roi_mask_volume C-order"

#: Hub repository holding the exported models (overrides models.json's ``hub.repo_id``).
ENV_REPO = "BERG_ONNX_REPO"
#: Revision (branch, tag or commit) to download (overrides models.json's ``hub.revision``).
ENV_REVISION = "BERG_ONNX_REVISION"
#: Cache folder for downloaded files (default: the Hugging Face cache).
ENV_CACHE = "BERG_ONNX_CACHE"
#: Images per onnxruntime call in encode() (default below).
ENV_BATCH_SIZE = "BERG_ONNX_BATCH_SIZE"
#: CPU cores encode() uses: worker threads for many images, onnxruntime intra-op
#: threads for a single chunk (default: the cores this process may use).
ENV_THREADS = "BERG_ONNX_THREADS"
#: Ray cluster the ray experiment engine connects to when no address is given
#: (Ray's own variable; unset: the engine starts a local Ray for the run).
ENV_RAY_ADDRESS = "RAY_ADDRESS"

#: Images per onnxruntime call on CUDA, where larger batches keep the GPU busy.
CUDA_BATCH_SIZE = 32
#: Images per onnxruntime call on CPU. Each core's worker runs its own calls
#: (see model.py), and one image at a time keeps the readout's (256, voxels)
#: blocks in cache: on 2 cores, V1 100.6 images/s at 1 vs 97.6 at 2, FFA-1
#: 150 vs 139, lateral 25.0 vs 24.6.
CPU_BATCH_SIZE = 1

#: Side of the square image the encoder takes.
INPUT_SIZE = 227


def env_str(name: str) -> str | None:
    """An environment variable, with empty strings treated as unset."""
    value = os.environ.get(name, "").strip()
    return value or None


def check_positive_int(value: object, name: str) -> int:
    """``value`` as an int if it is a positive integer (numpy integers too, bools not)."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise InvalidParameterError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def env_positive_int(name: str) -> int | None:
    """A positive-integer environment variable, or None where it is unset."""
    value = env_str(name)
    if value is None:
        return None
    if not value.isdigit() or int(value) < 1:
        raise InvalidParameterError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


#: Values of a cache-folder variable that turn that cache off.
OFF_VALUES = ("0", "off", "false", "no", "none")


def user_cache_dir(env_name: str, sub: str) -> Path | None:
    """A berg-onnx cache folder in the user's cache: ``$env_name`` if set (``off`` and
    the other OFF_VALUES: None), else ``$XDG_CACHE_HOME/berg-onnx/<sub>``, else
    ``~/.cache/berg-onnx/<sub>``. None, too, when the home folder is unknown (no
    ``$HOME``, a uid without a passwd entry): never a ``~`` folder in the working one."""
    given = os.environ.get(env_name, "").strip()
    if given.lower() in OFF_VALUES:
        return None
    if given:
        return Path(os.path.expanduser(given))  # as given: a "~" left is the user's choice
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()  # the XDG spec: absolute paths only
    # os.path.expanduser leaves "~" when the home is unknown (Path.expanduser raises)
    base = xdg if os.path.isabs(xdg) else os.path.expanduser(os.path.join("~", ".cache"))
    return Path(base) / "berg-onnx" / sub if os.path.isabs(base) else None


def available_cores() -> int:
    """Cores this process may run on (affinity-aware, unlike os.cpu_count())."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def check_precision(precision: object) -> str:
    """``precision`` if it is one of PRECISIONS, else InvalidParameterError naming them."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise InvalidParameterError(
            f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}."
        )
    return precision


#: Where records of files already verified against their sha256 are kept, so a start
#: does not hash an unchanged model file again (see utils/verified.py); "off" disables
#: it (every start hashes). Default: $XDG_CACHE_HOME/berg-onnx/verified.
ENV_VERIFY_CACHE = "BERG_ONNX_VERIFY_CACHE"
#: Where onnxruntime's optimised graphs of models are kept for this machine, so a start
#: does not optimise or copy a model's weights again (see utils/optimized.py); "off"
#: disables it. Default: $XDG_CACHE_HOME/berg-onnx/optimized.
ENV_SESSION_CACHE = "BERG_ONNX_SESSION_CACHE"
#: Bound on that cache's size in bytes (default 2 GiB); least recently used entries go.
ENV_SESSION_CACHE_MAX_BYTES = "BERG_ONNX_SESSION_CACHE_MAX_BYTES"
#: Test hook: stop a run at a named moment (utils/pausepoints.py), for kill tests.
ENV_PAUSE_AT = "BERG_ONNX_PAUSE_AT"
#: Largest (N, nv) float32 output encode() allocates, in bytes (default: half of this
#: machine's memory; see utils/memory.py). Larger ones are refused before any work.
ENV_MAX_OUTPUT_BYTES = "BERG_ONNX_MAX_OUTPUT_BYTES"
#: Largest image, in pixels (width x height), that is decoded or taken from a .npy array:
#: files, PIL images and array stimuli alike (default below).
ENV_MAX_IMAGE_PIXELS = "BERG_ONNX_MAX_IMAGE_PIXELS"
#: 50 megapixels: a 48 MP phone photo fits; its decoded RGBA plus the (3, H, W) result
#: stay within ~350 MB. Pillow's own bomb limit (~89 MP) applies as well.
MAX_IMAGE_PIXELS = 50_000_000


def max_image_pixels() -> int:
    """The image pixel limit: $BERG_ONNX_MAX_IMAGE_PIXELS, else MAX_IMAGE_PIXELS."""
    return env_positive_int(ENV_MAX_IMAGE_PIXELS) or MAX_IMAGE_PIXELS
