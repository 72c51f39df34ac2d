"""The runtime against PyTorch reference responses, end to end, without torch."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from berg_onnx import BERG, EncodingModel, InvalidParameterError, StimulusError

TOL = 1e-4


@pytest.mark.parametrize("roi", ["V1", "FFA-1", "lateral"])
def test_matches_pytorch_reference_on_photographs(berg, artifacts_dir, photos, roi):
    model = berg.get_encoding_model("fmri-nsd-fwrf", subject=1, selection={"roi": roi})
    expected = np.load(artifacts_dir / "reference" / f"sub-01_{roi}.npy")
    got = berg.encode(model, photos, show_progress=False)
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.abs(got - expected).max() <= TOL
    assert expected.std(axis=0).mean() > 0.02  # responses really vary across images


def test_split_roi_is_split1_then_split2(berg, artifacts_dir, photos, artifacts_info):
    model = berg.get_encoding_model("fmri-nsd-fwrf", subject=1, selection={"roi": "lateral"})
    got = berg.encode(model, photos, show_progress=False)
    ref = artifacts_dir / "reference"
    s1 = np.load(ref / "sub-01_lateral_split-1_own-mu.npy")
    s2 = np.load(ref / "sub-01_lateral_split-2_own-mu.npy")
    n1 = -(-artifacts_info["voxels"]["lateral"] // 2)
    assert s1.shape[1] == n1 and got.shape[1] == n1 + s2.shape[1]
    # synthetic splits share mu, so each split alone equals its block of the ROI output
    assert np.abs(got[:, :n1] - s1).max() <= TOL
    assert np.abs(got[:, n1:] - s2).max() <= TOL


@pytest.mark.parametrize("roi", ["V1", "lateral"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int64])
def test_golden_responses_of_the_original(golden_export, golden_dir, roi, dtype):
    berg = BERG(berg_dir=golden_export)
    stimuli = np.load(golden_dir / "stimuli_400_uint8.npy").astype(dtype)
    expected = np.load(golden_dir / f"responses_sub-01_roi-{roi}.npy")
    model = berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": roi}, device="cpu")
    got = berg.encode(model, stimuli, show_progress=False)
    assert np.abs(got - expected).max() <= TOL


def test_batch_size_does_not_change_results(berg, photos):
    model = berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V1"})
    a = berg.encode(model, photos, show_progress=False, batch_size=1)
    b = berg.encode(model, photos, show_progress=False, batch_size=5)
    c = berg.encode(model, photos, show_progress=False, batch_size=64)
    assert np.abs(a - b).max() <= 1e-5 and np.abs(a - c).max() <= 1e-5


def test_pil_images_and_files_equal_array(berg, photos, tmp_path):
    from PIL import Image

    model = berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "FFA-1"})
    expected = berg.encode(model, photos[:3], show_progress=False)
    pils = [Image.fromarray(p.transpose(1, 2, 0)) for p in photos[:3]]
    paths = []
    for i, im in enumerate(pils):
        paths.append(tmp_path / f"img{i}.png")
        im.save(paths[-1])
    # same pixels -> same responses (1e-5 allows onnxruntime's batch-size-dependent blocking)
    for stimulus in (pils, paths, [str(p) for p in paths]):
        got = berg.encode(model, stimulus, show_progress=False)
        assert got.shape == expected.shape and np.abs(got - expected).max() <= 1e-5
    single = berg.encode(model, pils[0], show_progress=False)
    assert single.shape == (1, 25) and np.abs(single - expected[:1]).max() <= 1e-5


def test_batch_of_one_and_mixed_sizes(berg, photos):
    from PIL import Image

    model = berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V1"})
    one = berg.encode(model, photos[:1], show_progress=False)
    assert one.shape == (1, 60)
    big = Image.fromarray(photos[0].transpose(1, 2, 0)).resize((300, 300))
    small = Image.fromarray(photos[1].transpose(1, 2, 0)).resize((100, 100))
    mixed = berg.encode(model, [big, small], show_progress=False)
    alone = berg.encode(model, np.asarray(small).transpose(2, 0, 1)[None], show_progress=False)
    assert mixed.shape == (2, 60) and np.abs(mixed[1:] - alone).max() <= 1e-5


def test_models_are_cached_per_subject_roi_device(berg):
    a = berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V1"}, device="cpu")
    b = berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V1"}, device="cpu")
    c = berg.get_encoding_model("fmri-nsd-fwrf", 2, {"roi": "V1"}, device="cpu")
    assert a is b and a is not c
    assert isinstance(a, EncodingModel) and a.provider == "CPUExecutionProvider"
    assert "provider='CPUExecutionProvider'" in repr(a)


def test_subjects_have_their_own_weights(berg, photos):
    m1 = berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V1"})
    m2 = berg.get_encoding_model("fmri-nsd-fwrf", 2, {"roi": "V1"})
    r1 = berg.encode(m1, photos[:2], show_progress=False)
    r2 = berg.encode(m2, photos[:2], show_progress=False)
    assert r1.shape == r2.shape and not np.allclose(r1, r2)


def test_metadata_keys_shapes_and_voxel_order(berg, artifacts_info):
    meta = berg.get_model_metadata("fmri-nsd-fwrf", subject=1, roi="lateral")
    nv = artifacts_info["voxels"]["lateral"]
    assert set(meta) == {"fmri", "encoding_models"}
    assert set(meta["fmri"]) == {"ncsnr", "roi_mask_volume", "fmri_affine"}
    assert meta["fmri"]["roi_mask_volume"].shape == (81, 104, 83)
    assert meta["fmri"]["roi_mask_volume"].dtype == bool
    assert int(meta["fmri"]["roi_mask_volume"].sum()) == nv
    assert meta["fmri"]["fmri_affine"].shape == (4, 4)
    for key in ("r2", "noise_ceiling", "explained_variance"):
        assert meta["encoding_models"][key].shape == (nv,)
    assert meta["encoding_models"]["train_img_num"].shape == (9000,)
    assert meta["encoding_models"]["val_img_num"].shape == (485,)
    assert meta["encoding_models"]["test_img_num"].shape == (515,)
    assert meta["fmri"]["ncsnr"].shape == (nv,) and meta["fmri"]["ncsnr"].dtype == np.float32


def test_golden_metadata_matches_original_values(golden_export):
    # The golden V1 metadata: noise_ceiling = ncsnr^2 / (ncsnr^2 + 1/3) per voxel, in order.
    meta = BERG(berg_dir=golden_export).get_model_metadata("fmri-nsd-fwrf", 1, "V1")
    ncsnr = meta["fmri"]["ncsnr"].astype(np.float64)
    nc = meta["encoding_models"]["noise_ceiling"]
    np.testing.assert_allclose(nc, ncsnr**2 / (ncsnr**2 + 1 / 3), rtol=1e-5)
    assert int(meta["fmri"]["roi_mask_volume"].sum()) == 40


def test_return_metadata_and_metadata_for_all_rois(berg, photos):
    model = berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V1"})
    responses, meta = berg.encode(model, photos[:2], return_metadata=True, show_progress=False)
    assert responses.shape == (2, 60) and meta["fmri"]["ncsnr"].shape == (60,)
    everything = berg.get_model_metadata("fmri-nsd-fwrf", subject=1)
    assert set(everything) == {"V1", "FFA-1", "lateral"}
    assert everything["FFA-1"]["fmri"]["ncsnr"].shape == (25,)


def test_catalog_details_list_models(berg):
    cat = berg.get_catalog_details()
    spec = cat["fmri-nsd-fwrf"]
    assert spec["subjects"] == list(range(1, 9))
    assert len(spec["rois"]) == 23 and spec["split_rois"] == ["lateral", "ventral"]
    assert spec["voxels"][1]["lateral"] == 7799


def test_progress_bar_on_stderr_and_quiet(berg, photos, capsys, monkeypatch):
    model = berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V1"})
    berg.encode(model, photos[:3], show_progress=True)
    assert "3/3" in capsys.readouterr().err
    berg.encode(model, photos[:3], show_progress=False)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr("sys.stderr", None)  # pythonw / some services
    assert berg.encode(model, photos[:2], show_progress=True).shape == (2, 60)


def test_encode_draws_a_bar_by_default_only_on_a_terminal(berg, photos, capsys, monkeypatch):
    """show_progress=None (the default): a bar on a real terminal, none into a pipe or log."""
    import fcntl
    import os
    import pty
    import select
    import struct
    import termios

    model = berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V1"})
    berg.encode(model, photos[:3])
    assert capsys.readouterr().err == ""  # pytest's captured stderr is not a terminal
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    seen = b""
    try:
        with os.fdopen(follower, "w", buffering=1) as tty:
            monkeypatch.setattr("sys.stderr", tty)
            for show, expected in [(False, False), (None, True)]:
                berg.encode(model, photos[:3], show_progress=show)
                tty.flush()
                got = b""
                while select.select([leader], [], [], 2)[0]:
                    chunk = os.read(leader, 65536)
                    if not chunk:
                        break
                    got += chunk
                assert (b"3/3" in got) is expected, (show, got[-200:])
                seen += got
    finally:
        os.close(leader)
    assert seen


def _truncated_png(path, image: np.ndarray):
    """A PNG whose header reads fine but whose pixel data stops halfway."""
    from PIL import Image

    Image.fromarray(image.transpose(1, 2, 0)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_every_schedule_gives_the_same_results(export_dir, photos, tmp_path):
    """Serial, per-core workers and GPU-style prefetching: same responses, same errors."""
    from PIL import Image

    good = [Image.fromarray(p.transpose(1, 2, 0)) for p in photos[:3]]
    broken = good + [_truncated_png(tmp_path / "broken.png", photos[3])] + good
    berg = BERG(berg_dir=export_dir, threads=2)
    model = berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "FFA-1"}, device="cpu")
    assert model.batch_size == 1 and model.threads == 2
    assert model.session.get_session_options().intra_op_num_threads == 1  # the workers'
    many = berg.encode(model, photos, show_progress=False)
    assert model._all_core_session is None  # made only for a single-chunk encode
    one = berg.encode(model, photos[:1], show_progress=False)
    assert model._all_core_session is None  # one image is not worth a second session
    while model._all_core_session is None:  # single chunks until they paid for one
        assert berg.encode(model, photos[:1], show_progress=False).shape == one.shape
    assert model._single_chunk_seconds >= model.session_seconds > 0
    assert model._all_core_session.get_session_options().intra_op_num_threads == 2
    np.testing.assert_allclose(
        berg.encode(model, photos[:1], show_progress=False), one, atol=1e-6, rtol=0
    )
    results = {}
    try:
        for schedule in ("serial", "workers", "prefetch"):
            model.schedule = schedule
            results[schedule] = berg.encode(model, photos, show_progress=False, batch_size=2)
            # passes the up-front probe, fails while a worker decodes it
            with pytest.raises(StimulusError, match="broken.png"):
                berg.encode(model, broken, show_progress=False)
        model.schedule = "sometimes"
        with pytest.raises(InvalidParameterError, match="schedule"):
            berg.encode(model, photos[:2], show_progress=False)
    finally:
        model.schedule = "auto"
    np.testing.assert_array_equal(results["workers"], many)
    np.testing.assert_array_equal(results["prefetch"], many)  # same session as the workers
    np.testing.assert_allclose(results["serial"], many, atol=1e-6, rtol=0)
    np.testing.assert_allclose(one, many[:1], atol=1e-6, rtol=0)


def test_model_is_safe_to_share_between_threads(berg, photos):
    model = berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V1"})
    expected = berg.encode(model, photos, show_progress=False)
    with ThreadPoolExecutor(3) as pool:
        results = list(
            pool.map(lambda _: berg.encode(model, photos, show_progress=False), range(3))
        )
    for r in results:
        np.testing.assert_array_equal(r, expected)


def test_bad_thread_count_is_refused(export_dir):
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(InvalidParameterError, match="threads"):
            BERG(berg_dir=export_dir, threads=bad)


def test_int8_tier_is_opt_in_close_and_separate(berg, photos, artifacts_dir):
    fp32 = berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "lateral"})
    int8 = berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "lateral"}, precision="int8")
    assert fp32 is not int8 and fp32.precision == "fp32" and int8.precision == "int8"
    assert ".int8." in int8.onnx_path.name and ".int8." not in fp32.onnx_path.name
    exact = np.load(artifacts_dir / "reference" / "sub-01_lateral.npy")
    fast = berg.encode(int8, photos, show_progress=False)
    diff = np.abs(fast - exact).max()
    assert 1e-4 < diff <= 0.05  # really quantised, still close
    assert np.corrcoef(fast.ravel(), exact.ravel())[0, 1] > 0.999


def test_import_loads_nothing_the_first_call_may_not_need(export_dir, tmp_path):
    """Cold start (issue 11, finding 15): Pillow, tqdm, huggingface_hub and the thread pool
    load only when used, and one image in a fresh process makes no second session."""
    from PIL import Image

    image = tmp_path / "one.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image)
    code = (
        "import sys\n"
        "import berg_onnx\n"
        "lazy = ('PIL', 'tqdm', 'huggingface_hub', 'concurrent.futures', 'importlib.abc',\n"
        "        'importlib.resources', 'tempfile', 'hashlib')\n"
        "early = [m for m in lazy if m in sys.modules]\n"
        "assert not early, early\n"
        f"berg = berg_onnx.BERG(berg_dir={str(export_dir)!r}, threads=2)\n"
        "model = berg.get_encoding_model('fmri-nsd-fwrf', 1, {'roi': 'V1'}, device='cpu')\n"
        f"assert berg.encode(model, [{str(image)!r}], show_progress=False).shape == (1, 60)\n"
        "assert model._all_core_session is None\n"
        "assert 'huggingface_hub' not in sys.modules and 'tqdm' not in sys.modules\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_import_freezes_what_it_loaded_and_leaves_the_collector_as_it_was():
    """Cold start: the objects alive after the imports go to the collector's permanent
    generation (no later collection walks them); the collector's on/off state is the
    caller's, and objects made afterwards are still collected."""
    code = (
        "import gc, sys, weakref\n"
        "assert gc.get_freeze_count() == 0\n"
        "gc.disable() if sys.argv[1] == 'off' else None\n"
        "import berg_onnx\n"
        "assert gc.isenabled() == (sys.argv[1] == 'on'), gc.isenabled()\n"
        "assert gc.get_freeze_count() > 10_000, gc.get_freeze_count()\n"
        "class Node: pass\n"
        "a, b = Node(), Node(); a.other, b.other = b, a  # a cycle made after the import\n"
        "alive = weakref.ref(a); del a, b\n"
        "gc.collect()\n"
        "assert alive() is None\n"
    )
    for state in ("on", "off"):
        run = subprocess.run([sys.executable, "-c", code, state], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
