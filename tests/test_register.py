"""Registration: transforms and their files, warping, estimation on known misalignments, the CLI, fuse --register."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("SimpleITK")
pytest.importorskip("cv2")

from causalfuse.cli import main as cli_main  # noqa: E402
from causalfuse.errors import CausalFuseError  # noqa: E402
from causalfuse.io import load_image, rgb_to_ycbcr, write_image  # noqa: E402
from causalfuse.register import (  # noqa: E402
    SNAP,
    RegistrationError,
    Transform,
    coverage_mask,
    estimate_transform,
    fit_once,
    largest_covered_box,
    nominal_matrix,
    warp_to_visible,
)
from causalfuse.register.synthetic import corner_error, misalign  # noqa: E402
from causalfuse.synthetic import synthetic_pair  # noqa: E402


@pytest.fixture(scope="module")
def street():
    """The package's own street scene, exactly aligned by construction (uint8)."""
    return synthetic_pair(480, 640, seed=3)


def _similarity(scale: float, degrees: float, tx: float, ty: float) -> np.ndarray:
    r = np.radians(degrees)
    return np.array([[scale * np.cos(r), -scale * np.sin(r), tx], [scale * np.sin(r), scale * np.cos(r), ty], [0, 0, 1.0]])


# -- transforms and files ----------------------------------------------------------------------


def test_transform_file_round_trip(tmp_path):
    t = Transform("similarity", _similarity(0.5, 3, 10, -4), (320, 240), (640, 480), 0.8, 0.95, {"pair": "a"})
    back = Transform.load(t.save(tmp_path / "t.json"))
    np.testing.assert_allclose(back.matrix, t.matrix, atol=1e-12)
    assert (back.model, back.ir_size, back.vi_size, back.info) == ("similarity", (320, 240), (640, 480), {"pair": "a"})


@pytest.mark.parametrize(
    "content, message",
    [
        ({"format": "something-else"}, "not a causalfuse transform"),
        ("not json", "not a readable transform"),
        ({"format": "causalfuse-transform", "version": 1, "model": "similarity", "matrix": [[1, 0.2, 0], [0, 1, 0], [0, 0, 1]],
          "infrared_size": [10, 10], "visible_size": [10, 10]}, "not a similarity transform"),
        ({"format": "causalfuse-transform", "version": 1, "model": "affine", "matrix": [[1, 0], [0, 1]],
          "infrared_size": [10, 10], "visible_size": [10, 10]}, "3 x 3"),
        ({"format": "causalfuse-transform", "version": 1, "model": "affine"}, "damaged transform file"),
    ],
)
def test_bad_transform_files_are_refused_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(CausalFuseError, match=message) as err:
        Transform.load(path)
    assert str(path) in str(err.value)


def test_a_transform_of_another_model_or_size_is_refused(tmp_path):
    path = Transform("affine", np.eye(3), (64, 48), (64, 48)).save(tmp_path / "t.json")
    with pytest.raises(CausalFuseError, match="holds an affine transform, but a projective transform was asked for"):
        Transform.load(path, model="projective")
    with pytest.raises(CausalFuseError, match="64 x 48.*but this pair is 80 x 60"):
        Transform.load(path).check_sizes((80, 60), (80, 60))


def test_translation_keeps_the_scale_of_the_image_sizes():
    m = nominal_matrix((320, 240), (640, 480))
    assert m[0, 0] == pytest.approx(0.5)
    # the centres map onto each other
    np.testing.assert_allclose(m @ [319.5, 239.5, 1], [159.5, 119.5, 1])
    m[:2, 2] += [3, -2]
    Transform("translation", m, (320, 240), (640, 480))
    with pytest.raises(CausalFuseError, match="not a translation transform"):
        Transform("translation", np.eye(3), (320, 240), (640, 480))


# -- warping -----------------------------------------------------------------------------------


def test_identity_warp_returns_the_image_unchanged(street):
    ir = street[0]
    h, w = ir.shape
    warped, covered = warp_to_visible(ir, Transform("affine", np.eye(3), (w, h), (w, h)))
    assert covered.all() and warped.dtype == ir.dtype
    np.testing.assert_array_equal(warped, ir)


def test_shift_warp_moves_pixels_and_marks_the_uncovered_band():
    rng = np.random.default_rng(0)
    ir = rng.integers(0, 65535, (40, 50), dtype=np.uint16)
    m = np.eye(3)
    m[0, 2] = 7  # visible x -> infrared x + 7
    warped, covered = warp_to_visible(ir, Transform("affine", m, (50, 40), (50, 40)))
    np.testing.assert_array_equal(warped[:, :43], ir[:, 7:])
    assert covered[:, :43].all() and not covered[:, 43:].any() and (warped[:, 43:] == 0).all()


def test_largest_covered_box_is_covered_and_close_to_the_best():
    t = Transform("similarity", _similarity(1.0, 20, 0, 0) @ np.array([[1, 0, -30], [0, 1, -20], [0, 0, 1.0]]), (60, 40), (60, 40))
    covered = coverage_mask(t)
    x0, y0, x1, y1 = largest_covered_box(covered)
    assert covered[y0:y1, x0:x1].all()
    # brute force over all rectangles of this small mask
    integral = np.pad(np.cumsum(np.cumsum(~covered, 0), 1), ((1, 0), (1, 0)))
    best = 0
    for a in range(41):
        for b in range(a + 1, 41):
            for c in range(61):
                for d in range(c + 1, 61):
                    if integral[b, d] - integral[a, d] - integral[b, c] + integral[a, c] == 0:
                        best = max(best, (b - a) * (d - c))
    assert (x1 - x0) * (y1 - y0) >= 0.9 * best


# -- estimation --------------------------------------------------------------------------------


def test_an_aligned_pair_comes_back_unchanged(street):
    ir, vi = street
    h, w = ir.shape
    identity = Transform("affine", np.eye(3), (w, h), (w, h))
    raw = estimate_transform(ir, vi, "affine", snap=0.0)
    assert raw.corner_error(identity) < SNAP  # what the estimate itself gives: 0.4 to 0.9 px on such scenes
    assert "snapped_from_px" not in raw.info
    t = estimate_transform(ir, vi, "affine")
    np.testing.assert_array_equal(t.matrix, np.eye(3))  # the identity itself, not an estimate near it
    assert t.info["snapped_from_px"] == pytest.approx(raw.corner_error(identity), abs=0.05)
    assert t.overlap == pytest.approx(1.0, abs=0.01)
    warped, covered = warp_to_visible(ir, t)
    np.testing.assert_array_equal(warped, ir)  # not resampled
    assert covered.all()


def test_a_small_real_shift_is_not_taken_for_an_aligned_pair(street):
    ir, vi = street
    h, w = ir.shape
    dx, dy = 2, -2  # two crops of one size, 2.8 px apart
    cam, vic = ir[10 + dy:h - 10 + dy, 10 + dx:w - 10 + dx], vi[10:h - 10, 10:w - 10]
    shift = np.array([[1, 0, -dx], [0, 1, -dy], [0, 0, 1.0]])  # visible px -> infrared px
    t = estimate_transform(cam, vic, "similarity")
    assert "snapped_from_px" not in t.info
    assert corner_error(shift, t.matrix, cam.shape) < 1.0


def test_an_aligned_pair_from_a_camera_of_half_the_resolution():
    """The issue's two cameras: the infrared image has half the visible resolution, the fields of view are the same.

    Until 2026-12-03 the visible gradient image was made at full resolution and
    then shrunk: this scene came out 2.6 to 3.8 px off as a similarity (two runs),
    other seeds a median 1.3 px; with both gradient images made alike at the
    infrared resolution, 0.8 px (median of 8 seeds 1.0 px).
    """
    cv2 = pytest.importorskip("cv2")
    ir, vi = synthetic_pair(960, 1280, seed=14)
    cam = cv2.resize(ir, (640, 480), interpolation=cv2.INTER_AREA)
    t = estimate_transform(cam, vi, "similarity", snap=0.0)
    rig = Transform("affine", nominal_matrix((640, 480), (1280, 960)), (640, 480), (1280, 960))
    assert t.corner_error(rig) < 1.5


@pytest.mark.parametrize("model", ["translation", "similarity", "affine", "projective"])
def test_known_misalignments_are_undone(street, model):
    ir, vi = street
    rng = np.random.default_rng(11)
    kwargs = {"rotation": 0.0, "scales": (1.0, 1.0)} if model == "translation" else {}
    cam, vic, truth = misalign(ir, vi, rng, **kwargs)
    t = estimate_transform(cam, vic, model)
    assert t.model == model
    assert corner_error(truth, t.matrix, cam.shape) < 2.0


def test_an_affine_move_is_undone_by_affine_and_not_by_similarity(street):
    ir, vi = street
    cam, vic, truth = misalign(ir, vi, np.random.default_rng(2), anisotropy=0.04, shear=0.03)
    a = truth[:2, :2]
    assert abs(np.linalg.norm(a[:, 0]) / np.linalg.norm(a[:, 1]) - 1) > 0.01  # not a similarity
    assert corner_error(truth, estimate_transform(cam, vic, "affine").matrix, cam.shape) < 2.0
    assert corner_error(truth, estimate_transform(cam, vic, "similarity").matrix, cam.shape) > 4.0


def test_a_night_pair_whose_rotation_and_scale_fell_between_the_search_grid_points(val_data):
    """LLVIP 190005 as two cameras of the nominal rig: the night street's edges are weak.

    With the search grid of steps 1.06 in scale and 2.5 degrees, no candidate
    came near the truth and the result lay 75 px off; with steps of 1.03 and
    1.25 degrees it is about 5.7 px off, the offset registration finds on
    every LLVIP val pair (README, registration). 12 px tells the two apart.
    """
    ir = load_image(val_data / "LLVIP" / "ir" / "190005.jpg")
    vi = load_image(val_data / "LLVIP" / "vi" / "190005.jpg")
    cam, vic, truth = misalign(ir, vi, np.random.default_rng(0), still=True)
    assert corner_error(truth, estimate_transform(cam, vic, "similarity").matrix, cam.shape) < 12.0


def test_misalign_without_anisotropy_draws_what_it_drew_before(street):
    ir, vi = street
    plain = misalign(ir, vi, np.random.default_rng(4))[2]
    zero = misalign(ir, vi, np.random.default_rng(4), anisotropy=0.0, shear=0.0)[2]
    np.testing.assert_array_equal(plain, zero)
    a = misalign(ir, vi, np.random.default_rng(4), anisotropy=0.04)[2][:2, :2]
    assert not np.allclose(a @ a.T / (a @ a.T)[0, 0], np.eye(2), atol=1e-3)  # scales differ along the axes


def test_estimation_repeats_whatever_the_candidates_threads(street, monkeypatch):
    """The candidates run side by side in threads; the choice and the result do not depend on their timing.

    The judgements of the candidates agree to about 1e-7 bits in every run
    (candidates differ by 0.007 bits and more here). SimpleITK's
    multi-threaded metric sums in a varying order, so the fine stages that
    follow differ by rounding: 0.003 to 0.018 px here over five runs.
    """
    from causalfuse.register import estimate as estimate_module

    judged = []
    real = estimate_module._shared_information

    def spy(frames, tx, min_overlap):
        value = real(frames, tx, min_overlap)
        judged[-1].append(value)
        return value

    monkeypatch.setattr(estimate_module, "_shared_information", spy)
    ir, vi = street
    cam, vic, _ = misalign(ir, vi, np.random.default_rng(7))
    results = []
    for _ in range(3):
        judged.append([])
        results.append(estimate_transform(cam, vic, "affine").matrix)
    assert len(judged[0]) == estimate_module._CANDIDATES + 1
    for other in judged[1:]:  # the same judgements (to rounding), so the same winner
        np.testing.assert_allclose(sorted(other), sorted(judged[0]), rtol=0, atol=1e-5)
    for m in results[1:]:
        assert corner_error(results[0], m, cam.shape) < 0.05


def test_pyramid_levels_keep_pixel_positions():
    """A linear ramp keeps its values at the levels' pixel positions (smoothing and block means preserve it)."""
    from causalfuse.register.estimate import _Frames

    sitk = pytest.importorskip("SimpleITK")
    yy, xx = np.mgrid[0:96, 0:128].astype(np.float32)
    ramp = (xx + 2 * yy) / 400
    frames = _Frames(ramp, ramp)
    frames.fixed = sitk.GetImageFromArray(ramp)
    frames.moving = sitk.GetImageFromArray(ramp)
    for shrink in (2, 4):
        fixed, _ = frames.level(shrink)
        values = sitk.GetArrayFromImage(fixed)
        ox, oy = fixed.GetOrigin()
        sx, sy = fixed.GetSpacing()
        i, j = 5, 7  # away from the borders, where the smoothing pads
        x, y = ox + j * sx, oy + i * sy
        assert values[i, j] == pytest.approx((x + 2 * y) / 400, abs=1e-4)


def test_a_lower_resolution_infrared_camera_is_registered(street):
    ir, vi = street
    cam, vic, truth = misalign(ir, vi, np.random.default_rng(5), cam_width=320)
    assert cam.shape == (240, 320) and vic.shape[:2] == (336, 448)
    t = estimate_transform(cam, vic, "affine")
    assert corner_error(truth, t.matrix, cam.shape) < 2.0


@pytest.mark.parametrize("which", ["ir", "vi"])
def test_a_blank_image_is_refused_naming_the_pair(street, which):
    ir, vi = street
    blank = np.full_like(ir, 128)
    with pytest.raises(RegistrationError, match=f"pair7: the {'infrared' if which == 'ir' else 'visible'} image has too little structure"):
        estimate_transform(blank if which == "ir" else ir, blank if which == "vi" else vi, name="pair7")


def test_unrelated_images_are_refused_with_the_metric_reached(street):
    rng = np.random.default_rng(0)
    noise = (rng.random(street[0].shape) * 255).astype(np.uint8)
    with pytest.raises(RegistrationError, match=r"mutual information reached 0\.\d+ bits"):
        estimate_transform(noise, street[1], "affine", name="noise")


def test_fit_once_takes_the_median_of_the_pairs(street):
    ir, vi = street
    truth = None
    transforms = []
    for seed in (1, 2, 3):
        rng = np.random.default_rng(100)  # the same rig for every pair
        cam, vic, truth = misalign(ir, vi, rng)
        m = truth.copy()
        m[:2, 2] += np.random.default_rng(seed).normal(0, 0.3, 2)  # estimates differ a little
        transforms.append(Transform("affine", m, (cam.shape[1], cam.shape[0]), (vic.shape[1], vic.shape[0]), info={"pair": str(seed)}))
    bad = transforms[0].matrix.copy()
    bad[:2, 2] += 60  # one pair registered wrongly
    transforms.append(Transform("affine", bad, transforms[0].ir_size, transforms[0].vi_size, info={"pair": "bad"}))
    fitted = fit_once(transforms)
    assert corner_error(truth, fitted.matrix, (transforms[0].ir_size[1], transforms[0].ir_size[0])) < 1.0
    assert fitted.info["pairs"] == ["1", "2", "3", "bad"]


# -- the command line and fuse ------------------------------------------------------------------


@pytest.fixture(scope="module")
def rig(street, tmp_path_factory):
    """Two folders of a misaligned rig: two good pairs and one with a blank infrared image."""
    ir, vi = street
    root = tmp_path_factory.mktemp("rig")
    (root / "ir").mkdir()
    (root / "vi").mkdir()
    cam, vic, truth = misalign(ir, vi, np.random.default_rng(21))
    for name in ("a", "b"):
        write_image(root / "ir" / f"{name}.png", cam)
        write_image(root / "vi" / f"{name}.png", vic)
    write_image(root / "ir" / "c.png", np.full_like(cam, 90))
    write_image(root / "vi" / "c.png", vic)
    return root, truth, cam.shape


def test_cli_register_a_pair_writes_image_transform_and_check(rig, tmp_path, capsys):
    root, truth, cam_shape = rig
    out = tmp_path / "out" / "a.png"
    assert cli_main(["register", "--ir", str(root / "ir" / "a.png"), "--vi", str(root / "vi" / "a.png"), "-o", str(out),
                     "--check", str(tmp_path / "check")]) == 0
    warped = load_image(out)
    assert warped.shape == load_image(root / "vi" / "a.png").shape[:2]
    t = Transform.load(out.with_suffix(".json"))
    assert corner_error(truth, t.matrix, cam_shape) < 2.0
    assert load_image(tmp_path / "check" / "a.png").shape == warped.shape + (3,)
    assert "mutual information" in capsys.readouterr().out


def test_cli_register_says_when_a_pair_is_already_aligned(street, tmp_path, capsys):
    ir, vi = street
    write_image(tmp_path / "ir.png", ir)
    write_image(tmp_path / "vi.png", vi)
    args = ["register", "--ir", str(tmp_path / "ir.png"), "--vi", str(tmp_path / "vi.png"), "--model", "similarity"]
    assert cli_main(args + ["-o", str(tmp_path / "a.png")]) == 0
    assert "already aligned: the estimate was within" in capsys.readouterr().out
    t = Transform.load(tmp_path / "a.json")
    np.testing.assert_array_equal(t.matrix, np.eye(3))
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), ir)
    assert cli_main(args + ["-o", str(tmp_path / "b.png"), "--snap", "0"]) == 0
    assert "already aligned" not in capsys.readouterr().out
    assert 0 < Transform.load(tmp_path / "b.json").corner_error(t) < SNAP
    assert cli_main(args + ["-o", str(tmp_path / "c.png"), "--snap", "-1"]) == 2
    assert "--snap -1.0: give a distance in visible pixels, 0 or more" in capsys.readouterr().err
    assert not (tmp_path / "c.png").exists()


def test_cli_register_folder_keep_going_and_no_output_for_the_failed_pair(rig, tmp_path, capsys):
    root, _, _ = rig
    out = tmp_path / "reg"
    code = cli_main(["register", "--ir", str(root / "ir"), "--vi", str(root / "vi"), "-o", str(out), "--model", "similarity", "-q"])
    assert code == 2
    assert "c: the infrared image has too little structure" in capsys.readouterr().err
    code = cli_main(["register", "--ir", str(root / "ir"), "--vi", str(root / "vi"), "-o", str(out), "--model", "similarity",
                     "-q", "--keep-going"])
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.png", "b.json", "b.png"]
    assert "failed: c: the infrared image has too little structure" in capsys.readouterr().err


def test_cli_fit_once_and_a_saved_transform_for_a_rig(rig, tmp_path, capsys):
    root, truth, cam_shape = rig
    out = tmp_path / "fit"
    code = cli_main(["register", "--ir", str(root / "ir"), "--vi", str(root / "vi"), "-o", str(out), "--fit-once", "-q"])
    assert code == 0  # the blank pair fails to register, but the fitted transform applies to it
    assert "one affine transform from 2 of 3 pairs tried" in capsys.readouterr().out
    fitted = Transform.load(out / "a.json")
    assert corner_error(truth, fitted.matrix, cam_shape) < 2.0
    np.testing.assert_allclose(Transform.load(out / "c.json").matrix, fitted.matrix)
    # the saved transform applied to another run
    again = tmp_path / "again"
    assert cli_main(["register", "--ir", str(root / "ir"), "--vi", str(root / "vi"), "-o", str(again), "-q",
                     "--transform", str(out / "a.json")]) == 0
    np.testing.assert_array_equal(load_image(again / "b.png"), load_image(out / "b.png"))


def test_cli_refuses_a_transform_for_another_size_or_model(rig, tmp_path, capsys):
    root, _, _ = rig
    other = Transform("affine", np.eye(3), (100, 80), (100, 80)).save(tmp_path / "other.json")
    args = ["fuse", "--ir", str(root / "ir" / "a.png"), "--vi", str(root / "vi" / "a.png"), "-o", str(tmp_path / "f.png")]
    assert cli_main(args + ["--transform", str(other)]) == 2
    assert "is for an infrared image of 100 x 80" in capsys.readouterr().err
    assert cli_main(args + ["--transform", str(other), "--model", "similarity"]) == 2
    assert "holds an affine transform, but a similarity transform was asked for" in capsys.readouterr().err
    assert not (tmp_path / "f.png").exists()


def test_fuse_register_keeps_the_visible_grid_and_fills_uncovered_pixels(rig):
    from causalfuse import fuse
    from causalfuse.fuse import fuse_registered

    root, _, _ = rig
    ir, vi = root / "ir" / "a.png", root / "vi" / "a.png"
    vi_img = load_image(vi).astype(np.float32) / 255
    fused, reg = fuse_registered(ir, vi, "average")
    assert fused.shape == vi_img.shape
    assert 0 < reg.uncovered_fraction < 0.5
    np.testing.assert_allclose(fused[~reg.covered], vi_img[~reg.covered], atol=1e-5)
    # where covered, the luminance is the average of the registered infrared and the visible luminance
    y_fused, y_vi = rgb_to_ycbcr(fused)[..., 0], rgb_to_ycbcr(vi_img)[..., 0]
    ir_on_vi = reg.warped  # float in [0, 1]: fuse reads the files as such
    np.testing.assert_allclose(y_fused[reg.covered], (ir_on_vi[reg.covered] + y_vi[reg.covered]) / 2, atol=1e-4)
    cropped = fuse(ir, vi, "average", register=True, uncovered="crop")
    assert cropped.shape[0] < vi_img.shape[0] or cropped.shape[1] < vi_img.shape[1]


def test_fuse_register_leaves_an_aligned_pair_as_it_is(street, tmp_path, capsys):
    ir, vi = street
    write_image(tmp_path / "ir.png", ir)
    write_image(tmp_path / "vi.png", vi)
    pair = ["--ir", str(tmp_path / "ir.png"), "--vi", str(tmp_path / "vi.png"), "--method", "average", "-q"]
    assert cli_main(["fuse", *pair, "-o", str(tmp_path / "plain.png")]) == 0
    assert cli_main(["fuse", *pair, "-o", str(tmp_path / "registered.png"), "--register", "--model", "similarity"]) == 0
    out = capsys.readouterr().out
    assert "already aligned" in out and "0.0 % of the visible image had no infrared" in out
    np.testing.assert_array_equal(load_image(tmp_path / "registered.png"), load_image(tmp_path / "plain.png"))


def test_fuse_without_register_still_refuses_pairs_of_two_sizes(rig):
    from causalfuse import fuse

    root, _, _ = rig
    with pytest.raises(CausalFuseError, match="register them first"):
        fuse(root / "ir" / "a.png", root / "vi" / "a.png", "average")
