"""Figures of responses in brain space and of a model's accuracy (matplotlib, [viz] extra).

Figures are built on ``matplotlib.figure.Figure`` directly, never through
pyplot: no display, no global backend switch in the caller's session, and
``fig.savefig("x.png")`` renders with Agg. Volumes are shown in the subject's
native space, turned to the closest RAS orientation (left on the left,
anterior up in axial views) with millimetre axes from the metadata's affine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from berg_onnx.brain.volume import Space, prepare, require_nibabel, volumes
from berg_onnx.errors import InvalidParameterError, ResourceError

#: Responses are z-scored per voxel, so a colour map centred on 0 reads best.
DEFAULT_CMAP = "RdBu_r"
UNITS = "z-scored response"
VIEWS = ("ortho", "mosaic")
#: Voxels of margin around the ROI's bounding box in each view.
MARGIN = 3
#: Mosaic: at most this many axial slices (evenly chosen among those holding the ROI).
MOSAIC_SLICES = 20
_FOOTPRINT = "#cccccc"  # the ROI on every slice, projected: where this slice lies in it
_BACKGROUND = "#f7f7f7"


def require_matplotlib():
    """matplotlib's Figure class, or a one-line error naming the extra that installs it."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ResourceError('figures need matplotlib: pip install "berg-onnx[viz]"') from None
    return Figure


def _label(subject: int | None, roi: str | None) -> str:
    parts = [f"sub-{subject:02d}" if subject is not None else None, roi]
    return " ".join(p for p in parts if p) or "ROI"


def _image_values(views: list[Any], n: int, image: int | None) -> tuple[list[np.ndarray], str]:
    """One (nv,) vector per ROI: image K's responses or the mean over images."""
    if image is None:
        means = []
        for v in views:
            if np.ndim(v) == 1:
                means.append(np.asarray(v, dtype=np.float64))
                continue
            total = np.zeros(np.shape(v)[1])
            for lo in range(0, n, 256):  # blocks: a Zarr array or memory map is never loaded whole
                total += np.asarray(v[lo : lo + 256], dtype=np.float64).sum(axis=0)
            means.append(total / n)
        return means, f"mean over {n} image{'s' if n != 1 else ''}"
    if isinstance(image, bool) or not isinstance(image, (int, np.integer)) or not 0 <= image < n:
        raise InvalidParameterError(f"image must be an integer in 0..{n - 1}, got {image!r}")
    picked = [np.asarray(v[image] if np.ndim(v) == 2 else v, dtype=np.float64) for v in views]
    return picked, f"image {image}"


def _ras(data: np.ndarray, mask: np.ndarray, space: Space):
    """data, mask and affine turned to the closest RAS orientation (axis order and flips)."""
    nib = require_nibabel()
    from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

    ornt = io_orientation(space.affine)
    affine = space.affine @ inv_ornt_aff(ornt, space.shape)
    return apply_orientation(data, ornt), apply_orientation(mask, ornt), affine, nib


def _bounds(mask: np.ndarray) -> list[tuple[int, int]]:
    idx = np.nonzero(mask)
    return [
        (max(0, int(i.min()) - MARGIN), min(s, int(i.max()) + 1 + MARGIN))
        for i, s in zip(idx, mask.shape, strict=True)
    ]


def _mm(affine: np.ndarray, axis: int, lo: float, hi: float) -> tuple[float, float]:
    """World coordinates (mm) of voxel edges lo..hi along an axis of an RAS affine."""
    step, origin = affine[axis, axis], affine[axis, 3]
    return origin + step * (lo - 0.5), origin + step * (hi - 0.5)


_AXES = ("x", "y", "z")
_VIEWS = {0: "sagittal", 1: "coronal", 2: "axial"}
_EDGES = {0: ("L", "R"), 1: ("P", "A"), 2: ("I", "S")}


def _panel(ax, vol, mask, affine, box, axis: int, index: int, norm, cmap, short: bool = False):
    """One slice (index along axis) with the ROI's projected footprint underneath."""
    from matplotlib.colors import ListedColormap
    from matplotlib.ticker import MaxNLocator

    h, v = [a for a in range(3) if a != axis]  # horizontal and vertical display axes
    take = [slice(*box[0]), slice(*box[1]), slice(*box[2])]
    footprint = mask[tuple(take)].any(axis=axis)
    take[axis] = index
    values = vol[tuple(take)]
    extent = (*_mm(affine, h, *box[h]), *_mm(affine, v, *box[v]))
    ax.set_facecolor(_BACKGROUND)
    ax.imshow(
        np.where(footprint, 1.0, np.nan).T,
        origin="lower",
        extent=extent,
        cmap=ListedColormap([_FOOTPRINT]),
        interpolation="nearest",
    )
    im = ax.imshow(
        values.T, origin="lower", extent=extent, cmap=cmap, norm=norm, interpolation="nearest"
    )
    world = affine[axis, 3] + affine[axis, axis] * index
    where = f"{_AXES[axis]} = {world:.1f} mm"
    ax.set_title(where if short else f"{_VIEWS[axis]}, {where}", fontsize=9 if short else 10)
    ax.set_xlabel(f"{_AXES[h]} (mm)  {_EDGES[h][0]} \u2192 {_EDGES[h][1]}", fontsize=9)
    ax.set_ylabel(f"{_AXES[v]} (mm)", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(5, integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(5, integer=True))
    return im


def _norm(values: np.ndarray):
    from matplotlib.colors import Normalize

    finite = np.abs(values[np.isfinite(values)])
    limit = float(np.percentile(finite, 99)) if finite.size else 1.0
    limit = limit if limit > 0 else 1.0
    return Normalize(-limit, limit), bool(finite.size and finite.max() > limit)


def response_map(
    responses: Any,
    metadata: Any,
    image: int | None = None,
    *,
    subject: int | None = None,
    roi: str | None = None,
    view: str = "ortho",
    image_name: str | None = None,
    overlap: Any = None,
    units: str = UNITS,
    cmap: str = DEFAULT_CMAP,
):
    """The responses of one image (``image=K``) or their mean, on slices of the native volume.

    ``view="ortho"``: sagittal, coronal and axial slices, each the one that
    holds most of the ROI's voxels; ``"mosaic"``: the axial slices that hold it.
    The ROI's footprint over all slices is grey underneath, so each slice is seen
    in its place. Colours: a diverging map centred on 0 with symmetric limits
    (the 99th percentile of |response|). ``responses``/``metadata`` may be
    ``{roi: ...}`` dicts of one subject, as for ``volume.to_nifti``; for ROIs far
    apart, ``view="mosaic"`` shows each in colour (the three ortho slices may
    miss all but one, which then shows only as grey footprint).
    """
    Figure = require_matplotlib()
    if view not in VIEWS:
        raise InvalidParameterError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
    keys = list(responses) if isinstance(responses, Mapping) else None
    lay, views, n = prepare(responses, metadata, overlap)
    picked, what = _image_values(views, n, image)
    if image is not None and image_name:
        what += f" ({image_name})"
    vol = volumes([p.astype(np.float32) for p in picked], lay, 0, 1, np.nan)[..., 0]
    union = np.zeros(lay.space.shape, dtype=bool)
    for m in lay.masks:
        union |= m
    vol, union, affine, _ = _ras(vol, union, lay.space)
    box = _bounds(union)
    norm, clipped = _norm(vol)
    title_roi = roi or (", ".join(keys) if keys else None)
    if view == "ortho":
        fig = Figure(figsize=(12, 4.4), dpi=100, layout="constrained")
        axes = fig.subplots(1, 3)
        for axis, ax in enumerate(axes):
            counts = union.sum(axis=tuple(a for a in range(3) if a != axis))
            im = _panel(ax, vol, union, affine, box, axis, int(counts.argmax()), norm, cmap)
    else:
        counts = union.sum(axis=(0, 1))
        slices = np.flatnonzero(counts)
        if len(slices) > MOSAIC_SLICES:
            slices = slices[np.linspace(0, len(slices) - 1, MOSAIC_SLICES).round().astype(int)]
        k = len(slices)
        spans = [abs(affine[a, a]) * (box[a][1] - box[a][0]) for a in (0, 1)]
        panel_w = 2.4
        panel_h = float(np.clip(panel_w * spans[1] / spans[0], 0.6, 3.6))
        # columns for a figure about 4:3 wide: cols * w ~ 4/3 * rows * (h + title)
        cols = int(np.clip(round(np.sqrt(4 / 3 * k * (panel_h + 0.45) / panel_w)), 1, k))
        rows = -(-k // cols)
        size = (panel_w * cols + 1.4, (panel_h + 0.45) * rows + 0.8)
        fig = Figure(figsize=size, dpi=100, layout="constrained")
        grid = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
        axes = grid.ravel()
        for ax, z in zip(axes, slices, strict=False):
            im = _panel(ax, vol, union, affine, box, 2, int(z), norm, cmap, short=True)
        for ax in axes:
            ax.label_outer()
        what += ", axial slices"
        for ax in axes[len(slices) :]:
            ax.set_visible(False)
    fig.colorbar(
        im,
        ax=list(np.atleast_1d(axes)),
        shrink=0.85 if len(axes) <= 6 else 0.5,
        aspect=25,
        label=units,
        extend="both" if clipped else "neither",
    )
    fig.suptitle(f"{_label(subject, title_roi)}: predicted {units}, {what}", fontsize=12)
    return fig


def _noise_ceiling_fraction(r2: np.ndarray, nc: np.ndarray) -> tuple[np.ndarray, str]:
    """The noise ceiling on r²'s scale: NSD often states it in percent, r² as a fraction."""
    if np.nanmax(nc) > 1.5 and np.nanmax(r2) <= 1.0:
        return nc / 100.0, "noise ceiling (stored in %, shown as a fraction)"
    return nc, "noise ceiling"


def accuracy(metadata: Any, *, subject: int | None = None, roi: str | None = None):
    """BERG's accuracy figures for one model: ncsnr histogram, explained variance, r² vs ceiling.

    ``metadata`` is one ROI's metadata dict (``get_model_metadata(..., roi=...)``).
    """
    Figure = require_matplotlib()
    try:
        ncsnr = np.asarray(metadata["fmri"]["ncsnr"], dtype=np.float64)
        em = metadata["encoding_models"]
        r2 = np.asarray(em["r2"], dtype=np.float64)
        nc = np.asarray(em["noise_ceiling"], dtype=np.float64)
        ev = np.asarray(em["explained_variance"], dtype=np.float64)
    except (KeyError, TypeError, IndexError):
        raise InvalidParameterError(
            "accuracy() needs one ROI's metadata dict with fmri.ncsnr and encoding_models."
            "r2/noise_ceiling/explained_variance (get_model_metadata(..., roi=...))"
        ) from None
    nv = ncsnr.size
    if not (r2.size == nc.size == ev.size == nv) or nv == 0:
        raise InvalidParameterError(
            f"metadata arrays disagree in length: ncsnr {ncsnr.size}, r2 {r2.size}, "
            f"noise_ceiling {nc.size}, explained_variance {ev.size}"
        )
    from matplotlib.ticker import MaxNLocator

    nc, nc_label = _noise_ceiling_fraction(r2, nc)
    fig = Figure(figsize=(13, 4.2), dpi=100, layout="constrained")
    a, b, c = fig.subplots(1, 3)
    a.hist(ncsnr[np.isfinite(ncsnr)], bins=40, color="#4c72b0", edgecolor="white", linewidth=0.5)
    a.axvline(np.nanmean(ncsnr), color="black", linestyle="--", linewidth=1)
    a.set_title(f"noise-ceiling SNR (mean {np.nanmean(ncsnr):.3f})", fontsize=10)
    a.set_xlabel("ncsnr")
    a.set_ylabel("voxels")

    b.hist(
        ev[np.isfinite(ev)],
        bins=40,
        range=(0, 100),
        color="#55a868",
        edgecolor="white",
        linewidth=0.5,
    )
    mean_ev = float(np.nanmean(ev))
    b.axvline(mean_ev, color="black", linestyle="--", linewidth=1)
    b.set_title(f"explained variance (mean {mean_ev:.1f}% of the noise ceiling)", fontsize=10)
    b.set_xlabel("explained variance (% of noise ceiling)")
    b.set_ylabel("voxels")
    for ax in (a, b):
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))

    points = c.scatter(nc, r2, c=ncsnr, s=8, cmap="viridis", alpha=0.8, linewidths=0)
    top = float(np.nanmax([np.nanmax(nc), np.nanmax(r2), 1e-3])) * 1.05
    low = float(min(0.0, np.nanmin(r2)))
    c.plot([low, top], [low, top], color="black", linewidth=1, linestyle="--", label="r² = ceiling")
    c.set_xlim(low, top)
    c.set_ylim(low, top)
    c.set_aspect("equal")
    c.set_title("test r² against the noise ceiling", fontsize=10)
    c.set_xlabel(nc_label)
    c.set_ylabel("test r²")
    c.legend(loc="upper left", fontsize=8, frameon=False)
    fig.colorbar(points, ax=c, label="ncsnr", shrink=0.85)
    fig.suptitle(f"{_label(subject, roi)}: encoding accuracy ({nv} voxels)", fontsize=12)
    return fig
