"""Responses in brain space: (N, nv) rows <-> NIfTI volumes in the subject's native space.

A model's voxel axis is the order of the ``True`` entries of the metadata's
``fmri.roi_mask_volume`` flattened in C order; ``fmri.fmri_affine`` maps voxel
indices to world millimetres. This module is the one place that puts rows back
into that volume and reads them out again, so that every image becomes one
3-D volume of a 4-D NIfTI (volumes last, as NIfTI wants; BERG's tutorial stacks
images first, which puts them on the x axis).

nibabel comes with the optional ``[viz]`` extra and is imported only when a
NIfTI is made or read; the name helpers below work without it.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from berg_onnx.errors import InvalidParameterError, ResourceError
from berg_onnx.utils.outputs import is_nifti_path

#: NIfTI codes for the transforms: both hold the metadata's affine, which maps
#: voxels to the subject's native (scanner-derived) space, not a template.
QFORM_CODE = "scanner"
SFORM_CODE = "aligned"
#: Images per block when streaming a 4-D NIfTI to disk (about 2.8 MB per image).
WRITE_BLOCK = 32
OVERLAP_CHOICES = ("first", "last")


def require_nibabel():
    """nibabel, or a one-line error naming the extra that installs it."""
    try:
        import nibabel
    except ImportError:
        raise ResourceError('NIfTI volumes need nibabel: pip install "berg-onnx[viz]"') from None
    return nibabel


@dataclass(frozen=True)
class Space:
    """One subject's volume grid: shape and voxel-to-world affine."""

    shape: tuple[int, int, int]
    affine: np.ndarray  # (4, 4) float64


def _fmri(metadata: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(mask, affine) of one ROI's metadata dict, checked."""
    try:
        mask = np.asarray(metadata["fmri"]["roi_mask_volume"])
        affine = np.asarray(metadata["fmri"]["fmri_affine"], dtype=np.float64)
    except (KeyError, TypeError, IndexError):
        raise InvalidParameterError(
            f"{what} must be a model's metadata dict with fmri.roi_mask_volume and "
            "fmri.fmri_affine (from get_model_metadata(..., roi=...) or "
            "encode(..., return_metadata=True))"
        ) from None
    if mask.ndim != 3 or mask.dtype != bool:
        raise InvalidParameterError(
            f"{what}: fmri.roi_mask_volume must be a 3-D bool array, got "
            f"{mask.dtype} of shape {mask.shape}"
        )
    if not mask.any():
        raise InvalidParameterError(f"{what}: fmri.roi_mask_volume has no True voxel")
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise InvalidParameterError(
            f"{what}: fmri.fmri_affine must be a finite (4, 4) array, got shape {affine.shape}"
        )
    return mask, affine


def _check_source(responses: Any, nv: int, what: str) -> int:
    """Images in one ROI's responses ((N, nv) or (nv,)), checked without reading them all."""
    shape = np.shape(responses)
    dtype = getattr(responses, "dtype", None)
    dtype = np.asarray(responses).dtype if dtype is None else np.dtype(dtype)
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise InvalidParameterError(f"{what} must be a numeric array, got dtype {dtype}")
    if len(shape) not in (1, 2) or shape[-1] != nv:
        raise InvalidParameterError(
            f"{what} must have shape (N, {nv}) or ({nv},) to match the ROI mask's {nv} "
            f"voxels, got {shape}; pass the responses and metadata of the same subject "
            "and ROI"
        )
    return shape[0] if len(shape) == 2 else 1


@dataclass(frozen=True)
class _Layout:
    """Where each ROI's rows go: masks in write order (later ones win overlaps)."""

    space: Space
    rois: tuple[str, ...]
    masks: tuple[np.ndarray, ...]


def _overlaps(names: Sequence[str], masks: Sequence[np.ndarray]) -> list[tuple[str, str, int]]:
    found = []
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            n = int(np.count_nonzero(masks[i] & masks[j]))
            if n:
                found.append((names[i], names[j], n))
    return found


def _write_order(names: list[str], overlap: Any) -> list[str]:
    """ROIs from lowest to highest priority, so that writing in this order lets winners win."""
    if overlap == "first":
        return names[::-1]
    if overlap == "last":
        return names
    if isinstance(overlap, str) or not isinstance(overlap, Iterable):
        raise InvalidParameterError(
            f"overlap must be None, 'first', 'last' or a list of ROI names (highest priority "
            f"first), got {overlap!r}"
        )
    ranked = list(overlap)
    unknown = [r for r in ranked if r not in names]
    if unknown or len(set(ranked)) != len(ranked):
        raise InvalidParameterError(
            f"overlap priority list {ranked} must name each of the given ROIs "
            f"({', '.join(names)}) at most once"
        )
    priority = ranked + [r for r in names if r not in ranked]
    return priority[::-1]


def _one_roi(metadata: Any) -> bool:
    """One ROI's metadata dict (or something that is no {roi: metadata} dict at all)."""
    if not isinstance(metadata, Mapping):
        return True
    return "fmri" in metadata or "encoding_models" in metadata


def layout(metadata: Any, overlap: Any = None, rois: Sequence[str] | None = None) -> _Layout:
    """The masks of one ROI's metadata, or of {roi: metadata} of one subject, checked.

    ``rois`` restricts a dict to those ROIs (the keys of a responses dict).
    """
    if _one_roi(metadata):
        mask, affine = _fmri(metadata, "metadata")
        return _Layout(Space(mask.shape, affine), ("",), (mask,))
    names = list(metadata) if rois is None else list(rois)
    missing = [r for r in names if r not in metadata]
    if missing or not names:
        raise InvalidParameterError(
            f"metadata has no entry for ROI(s) {missing or '(none given)'}; give "
            f"{{roi: metadata}} for every ROI of the responses (have: {', '.join(metadata)})"
        )
    masks, space = [], None
    for roi in names:
        mask, affine = _fmri(metadata[roi], f"metadata[{roi!r}]")
        if space is None:
            space = Space(mask.shape, affine)
        elif mask.shape != space.shape or not np.allclose(affine, space.affine, atol=1e-6):
            raise InvalidParameterError(
                f"ROI {roi} lies in a different volume (shape {mask.shape}, affine\n{affine}) "
                f"than {names[0]} (shape {space.shape}, affine\n{space.affine}); combine ROIs "
                "of one subject only"
            )
        masks.append(mask)
    by_name = dict(zip(names, masks, strict=True))
    if overlap is None:
        shared = _overlaps(names, masks)
        if shared:
            pairs = ", ".join(f"{a} and {b} share {n} voxels" for a, b, n in shared)
            raise InvalidParameterError(
                f"ROIs overlap: {pairs} (composite ROIs such as early or lateral contain "
                "others); pass overlap='first' or 'last' (which of the given ROIs wins) or a "
                "priority list such as overlap=['V1', 'early'], or combine ROIs that do not "
                "overlap"
            )
        order = names
    else:
        order = _write_order(names, overlap)
    return _Layout(space, tuple(order), tuple(by_name[r] for r in order))


def prepare(responses: Any, metadata: Any, overlap: Any = None) -> tuple[_Layout, list[Any], int]:
    """The layout, each ROI's responses in its write order, and their common image count.

    One ROI: (nv,) or (N, nv) responses with its metadata dict; several:
    {roi: responses} with {roi: metadata} (a dict holding at least those ROIs).
    Shapes and types are checked without reading the rows (they may be a memory
    map or a Zarr array).
    """
    one = _one_roi(metadata)
    if isinstance(responses, Mapping) and one:
        raise InvalidParameterError(
            "responses is a {roi: responses} dict but metadata is one ROI's; give "
            "{roi: metadata} for the same ROIs"
        )
    if not isinstance(responses, Mapping) and isinstance(metadata, Mapping) and not one:
        raise InvalidParameterError(
            "metadata is a {roi: metadata} dict: give responses as {roi: responses} too"
        )
    if isinstance(responses, Mapping):
        lay = layout(metadata, overlap, list(responses))
        views, whats = [responses[r] for r in lay.rois], [f"responses[{r!r}]" for r in lay.rois]
    else:
        lay = layout(metadata, overlap)
        views, whats = [responses], ["responses"]
    counts = {
        what: _check_source(v, int(m.sum()), what)
        for v, m, what in zip(views, lay.masks, whats, strict=True)
    }
    if len(set(counts.values())) > 1:
        raise InvalidParameterError(f"every ROI needs the same number of images, got {counts}")
    if len({np.ndim(v) for v in views}) > 1:
        raise InvalidParameterError("give every ROI's responses as (N, nv), or every one as (nv,)")
    n = next(iter(counts.values()))
    if n == 0:
        raise InvalidParameterError("responses hold no images (shape (0, nv)); give at least one")
    return lay, views, n


def volumes(views: list[Any], lay: _Layout, lo: int, hi: int, fill: float) -> np.ndarray:
    """Images lo..hi as a (X, Y, Z, hi - lo) float32 block, in NIfTI's (Fortran) memory order.

    Fortran order makes the block's bytes the file's bytes (x fastest, images
    slowest): written without a transposing copy, which took ~20x the fill.
    """
    block = np.full((*lay.space.shape, hi - lo), fill, dtype=np.float32, order="F")
    for mask, v in zip(lay.masks, views, strict=True):
        rows = np.asarray(v[lo:hi] if np.ndim(v) == 2 else v, dtype=np.float32)
        block[mask] = rows.reshape(hi - lo, -1).T  # boolean indexing: True entries in C order
    return block


#: NIfTI-1 stores dimensions as int16: more images than this need NIfTI-2 (int64 dims).
NIFTI1_MAX_DIM = 32767


def _header(space: Space, n_images: int | None, description: str):
    """A float32 NIfTI header for the space: qform and sform = affine, zooms from it.
    NIfTI-1, or NIfTI-2 where the images are more than NIfTI-1's int16 dims can count."""
    nib = require_nibabel()
    two = n_images is not None and n_images > NIFTI1_MAX_DIM
    hdr = nib.Nifti2Header() if two else nib.Nifti1Header()
    shape = space.shape if n_images is None else (*space.shape, n_images)
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(np.float32)
    hdr.set_qform(space.affine, code=QFORM_CODE)
    hdr.set_sform(space.affine, code=SFORM_CODE)
    zooms = tuple(float(z) for z in nib.affines.voxel_sizes(space.affine))
    hdr.set_zooms(zooms if n_images is None else (*zooms, 1.0))  # axis 4: images, not time
    hdr.set_xyzt_units("mm", "unknown")
    hdr["descrip"] = description.encode("ascii", "replace")[:79]
    return hdr


def to_nifti(
    responses: Any,
    metadata: Any,
    fill: float = 0.0,
    *,
    overlap: Any = None,
    description: str = "berg-onnx responses (z-scored)",
):
    """responses -> a float32 ``nibabel.Nifti1Image`` in the subject's native space.

    ``responses`` (nv,) gives a 3-D (81, 104, 83) volume; (N, nv) gives a 4-D
    (81, 104, 83, N) one, N = 1 included (a 4-D file stays 4-D, so code that
    reads it need not special-case one image). Values go to the True entries of
    ``fmri.roi_mask_volume`` in C order, ``fill`` (0, or e.g. NaN) elsewhere;
    ``fmri.fmri_affine`` is both qform and sform, and the voxel size comes from it.

    Several ROIs of one subject: ``to_nifti({roi: responses}, {roi: metadata})``
    combines them into one volume. Masks must not overlap (composite ROIs such
    as ``early`` contain V1..V3) unless ``overlap`` says which ROI wins where
    they do: ``"first"`` or ``"last"`` in the dict's order, or a list of ROI
    names, highest priority first (unlisted ROIs rank below, in dict order).
    """
    nib = require_nibabel()
    lay, views, n = prepare(responses, metadata, overlap)
    vector = np.ndim(views[0]) == 1
    data = volumes(views, lay, 0, n, fill)
    if vector:
        data = data[..., 0]
    hdr = _header(lay.space, None if vector else n, description)
    kind = nib.Nifti2Image if isinstance(hdr, nib.Nifti2Header) else nib.Nifti1Image
    img = kind(data, lay.space.affine, header=hdr)
    img.set_qform(lay.space.affine, code=QFORM_CODE)
    img.set_sform(lay.space.affine, code=SFORM_CODE)
    return img


def save_nifti(
    path: str | Path,
    responses: Any,
    metadata: Any,
    fill: float = 0.0,
    *,
    overlap: Any = None,
    description: str = "berg-onnx responses (z-scored)",
) -> Path:
    """Write ``to_nifti(responses, metadata, ...)`` to a .nii or .nii.gz file, atomically.

    Streams WRITE_BLOCK images at a time, so a (N, nv) array that is a memory
    map or a Zarr array never needs all N volumes (2.8 MB each) in memory.
    """
    from berg_onnx.utils.fileio import atomic_path

    path = Path(path)
    if not is_nifti_path(path):
        raise InvalidParameterError(f"a NIfTI file name ends in .nii or .nii.gz, got {path}")
    with atomic_path(path) as tmp, open(tmp, "wb") as raw:
        write_nifti(
            raw,
            str(path).lower().endswith(".gz"),
            responses,
            metadata,
            fill,
            overlap=overlap,
            description=description,
        )
    return path


def write_nifti(
    raw: BinaryIO,
    gz: bool,
    responses: Any,
    metadata: Any,
    fill: float = 0.0,
    *,
    overlap: Any = None,
    description: str = "berg-onnx responses (z-scored)",
) -> None:
    """``to_nifti(responses, metadata, ...)`` as NIfTI bytes into an open file (gzipped if
    ``gz``), WRITE_BLOCK images at a time; ``save_nifti`` and encode's paired output use it."""
    lay, views, n = prepare(responses, metadata, overlap)
    vector = np.ndim(views[0]) == 1
    hdr = _header(lay.space, None if vector else n, description)
    f = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) if gz else raw
    try:
        hdr.write_to(f)
        f.write(b"\0" * (int(hdr["vox_offset"]) - f.tell()))
        for lo in range(0, n, WRITE_BLOCK):
            block = volumes(views, lay, lo, min(n, lo + WRITE_BLOCK), fill)
            f.write(memoryview(block.T))  # block.T is C-contiguous: x fastest, images slowest
    finally:
        if f is not raw:
            f.close()


#: Volumes read at a time by from_nifti (about 2.8 MB each in float32 on BERG's grid).
READ_BLOCK = 8


#: Bytes a NIfTI header with its extensions may take before the data (berg-onnx writes 352).
MAX_NIFTI_OFFSET = 1 << 20


def _check_nifti_header(path: str | Path) -> None:
    """The header's own sizes, read in bounded memory before nibabel reads it: nibabel
    reads each extension's claimed size (2 GB, or with a size of 0 the rest of the file)
    into memory, so a tiny .nii.gz could expand to gigabytes before any check."""
    import struct
    import zlib

    try:
        opener = gzip.open if str(path).lower().endswith(".gz") else open
        with opener(path, "rb") as f:
            head = f.read(544)
            order = next(
                (
                    o
                    for o in "<>"
                    if head[:4] in (struct.pack(o + "i", 348), struct.pack(o + "i", 540))
                ),
                None,
            )
            if order is None:
                raise InvalidParameterError(f"{path} is not a NIfTI-1 or NIfTI-2 file")
            size = struct.unpack(order + "i", head[:4])[0]
            if size == 348:
                offset = int(struct.unpack(order + "f", head[108:112])[0])
            else:
                offset = struct.unpack(order + "q", head[168:176])[0]
            start = size + 4
            if not start <= max(offset, start) <= MAX_NIFTI_OFFSET:
                raise InvalidParameterError(
                    f"{path}: its header puts the data at byte {offset}, beyond the "
                    f"{MAX_NIFTI_OFFSET} bytes a header with extensions may take"
                )
            if len(head) < start or not head[size]:  # no extension flag: nothing more
                return
            rest = head[start:] + f.read(max(0, offset - len(head)))
            ext = rest[: max(0, offset - start)]
    except InvalidParameterError:
        raise
    except FileNotFoundError:
        raise InvalidParameterError(f"no such file: {path}") from None
    except (OSError, EOFError, ValueError, struct.error, zlib.error) as e:
        raise InvalidParameterError(f"{path} is not a readable NIfTI file ({e})") from None
    pos = 0
    while len(ext) - pos >= 16:
        (esize,) = struct.unpack(order + "i", ext[pos : pos + 4])
        if esize < 16 or esize % 16 or pos + esize > len(ext):
            raise InvalidParameterError(
                f"{path}: a header extension claims {esize} bytes where {len(ext) - pos} "
                "remain before the data; the header is damaged"
            )
        pos += esize


def _load_nifti(path: str | Path) -> Any:
    """A nibabel image of ``path`` (header read, data not), its errors as one line."""
    nib = require_nibabel()
    _check_nifti_header(path)
    try:
        return nib.load(path, keep_file_open=True)  # one open file: blocks read forward
    except FileNotFoundError:
        raise InvalidParameterError(f"no such file: {path}") from None
    except Exception as e:  # noqa: BLE001 - nibabel, gzip, struct and OS errors alike
        raise InvalidParameterError(
            f"{path} is not a readable NIfTI file ({type(e).__name__}: "
            f"{' '.join(str(e).split())[:200]})"
        ) from None


def _check_nifti_data(img: Any, what: str) -> None:
    """Real-valued voxels of a plain numeric type: responses are never complex or RGB."""
    try:
        dtype = np.dtype(img.get_data_dtype())
    except Exception:  # noqa: BLE001 - a header nibabel cannot describe
        dtype = None
    if dtype is None or dtype.fields is not None or dtype.kind not in "iuf":
        raise InvalidParameterError(
            f"{what} holds {dtype} voxels; responses are real numbers (float32 as "
            "berg-onnx writes them): complex, RGB and other data types are refused"
        )


def from_nifti(img: Any, metadata: Any) -> np.ndarray | dict[str, np.ndarray]:
    """The exact inverse of ``to_nifti``: (N, nv) float32 for a 4-D image, (nv,) for 3-D.

    ``img`` is a ``nibabel`` image or a path. With ``{roi: metadata}`` it returns
    ``{roi: responses}`` (where ROIs overlapped, the volume holds the winner's values).
    The image must lie on the metadata's grid (same shape and affine) and hold real
    numbers. Everything is checked from the header before any voxel is read; the
    volumes are then read READ_BLOCK at a time, so only the (N, nv) result (checked
    against the output budget first) grows with N.
    """
    from berg_onnx.utils.memory import check_output_size

    what = "the image"
    if isinstance(img, (str, Path)):
        what = str(img)
        img = _load_nifti(img)
    lay = layout(metadata, overlap="last")
    shape = tuple(img.shape)
    if len(shape) not in (3, 4) or shape[:3] != lay.space.shape:
        raise InvalidParameterError(
            f"{what} has shape {shape}; expected {lay.space.shape} (3-D) or "
            f"{lay.space.shape + ('N',)} (4-D), the grid of the metadata's ROI mask"
        )
    _check_nifti_data(img, what)
    if not np.allclose(img.affine, lay.space.affine, atol=1e-4):
        raise InvalidParameterError(
            f"the affine of {what}\n{img.affine}\ndiffers from the metadata's fmri_affine\n"
            f"{lay.space.affine}\n(another subject, or resampled?)"
        )
    n = shape[3] if len(shape) == 4 else 1
    check_output_size(n, sum(int(m.sum()) for m in lay.masks), f"the volumes of {what}")
    out = {
        r: np.empty((n, int(m.sum())), dtype=np.float32)
        for r, m in zip(lay.rois, lay.masks, strict=True)
    }
    try:
        for lo in range(0, n, READ_BLOCK):
            hi = min(n, lo + READ_BLOCK)
            block = np.asanyarray(img.dataobj[..., lo:hi] if len(shape) == 4 else img.dataobj)
            block = block.reshape(*lay.space.shape, hi - lo)
            for roi, mask in zip(lay.rois, lay.masks, strict=True):
                out[roi][lo:hi] = block[mask].T  # (hi - lo, nv)
    except InvalidParameterError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated data, gzip and OS errors alike
        raise InvalidParameterError(
            f"cannot read the volumes of {what} ({type(e).__name__}: "
            f"{' '.join(str(e).split())[:200]}); the file is truncated or damaged"
        ) from None
    if len(shape) == 3:
        out = {r: v[0] for r, v in out.items()}  # (nv,)
    return out[""] if lay.rois == ("",) else {r: out[r] for r in metadata}
