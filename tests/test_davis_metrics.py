"""The DAVIS-2017 metrics against closed forms and against the official evaluator's figures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vidssl.cli import main
from vidssl.data.label_io import LabelFileError, write_indexed_png
from vidssl.eval.davis_metrics import (
    GLOBAL_COLUMNS,
    DavisResult,
    DavisScoreError,
    boundary_tolerance,
    db_eval_boundary,
    db_eval_iou,
    db_statistics,
    decay_bins,
    disk,
    evaluate_davis,
    evaluate_sequence,
    format_table,
    seg2bmap,
    write_csvs,
)

# The official davis2017-evaluation figures for the shared files (../shared/data/README.md).
OSVOS_GLOBAL = (0.814220, 0.795892, 0.868232, 0.131450, 0.832547, 0.941599, 0.113764)
OSVOS_OBJECTS = {
    "blackswan_1": (0.943020, 0.974096),
    "car-shadow_1": (0.928402, 0.917407),
    "dog_1": (0.710792, 0.691109),
    "drift-chicane_1": (0.774220, 0.828893),
    "libby_1": (0.623027, 0.751232),
}
FIXTURE_GLOBAL = (0.811387, 0.749640, 0.876161, 0.056474, 0.873133, 0.886468, 0.053809)
FIXTURE_OBJECTS = {
    "bike-packing_1": (0.682706, 0.894929),
    "bike-packing_2": (0.733700, 0.830095),
    "judo_1": (0.792395, 0.898900),
    "judo_2": (0.647972, 0.812500),
    "pigs_1": (0.738547, 0.866329),
    "pigs_2": (0.754672, 0.837424),
    "pigs_3": (0.897487, 0.971757),
}


def square(size: int = 64, top: int = 20, left: int = 20, side: int = 10) -> np.ndarray:
    """A ``(1, size, size)`` bool stack with one filled square."""
    mask = np.zeros((1, size, size), dtype=bool)
    mask[0, top : top + side, left : left + side] = True
    return mask


# ---------------------------------------------------------------------------------------------------
# Closed forms


def test_empty_prediction_and_empty_ground_truth_score_one() -> None:
    empty = np.zeros((3, 16, 20), dtype=bool)
    np.testing.assert_array_equal(db_eval_iou(empty, empty), [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(db_eval_boundary(empty, empty), [1.0, 1.0, 1.0])  # P = R = 1


def test_empty_prediction_with_object_present_scores_zero() -> None:
    gt, pred = square(), np.zeros((1, 64, 64), dtype=bool)
    assert db_eval_iou(gt, pred)[0] == 0.0
    assert db_eval_boundary(gt, pred)[0] == 0.0  # P = 1, R = 0
    assert db_eval_boundary(pred, gt)[0] == 0.0  # false positive only: P = 0, R = 1


def test_one_pixel_shift_of_a_square() -> None:
    side = 10
    gt, pred = square(side=side), square(left=21, side=side)
    # overlap is side x (side - 1); the union adds one column on each side
    expected_j = side * (side - 1) / (side * (side - 1) + 2 * side)
    assert db_eval_iou(gt, pred)[0] == pytest.approx(expected_j, abs=1e-12)
    assert boundary_tolerance(64, 64) == 1  # ceil(0.008 * 90.5)
    assert db_eval_boundary(gt, pred)[0] == 1.0  # every boundary pixel moved by 1 <= tolerance


def test_shift_beyond_the_tolerance_scores_zero() -> None:
    gt, pred = square(side=6), square(left=20 + 6 + 3, side=6)  # 3 px gap: no boundary within 1 px
    assert db_eval_iou(gt, pred)[0] == 0.0
    assert db_eval_boundary(gt, pred)[0] == 0.0
    # with a 3-pixel tolerance the facing edges match: gt's right boundary column (x = 25) and
    # pred's left one (x = 28) are 3 apart, so each mask recalls a fraction of the other's boundary
    assert db_eval_boundary(gt, pred, bound_th=3)[0] > 0.0


def test_missing_half_of_the_objects_gives_known_j_and_f() -> None:
    gt = square() | square(top=40, left=40)
    pred = square()
    assert db_eval_iou(gt, pred)[0] == pytest.approx(0.5)
    # precision 1, recall 1/2 (the two squares have equal boundaries) -> F = 2/3
    assert db_eval_boundary(gt, pred)[0] == pytest.approx(2 / 3)


def test_void_pixels_are_excluded() -> None:
    gt = square()
    pred = square() | square(top=40, left=40)  # a false positive ...
    void = square(top=38, left=38, side=14)  # ... lying entirely in void
    assert db_eval_iou(gt, pred)[0] < 1.0
    assert db_eval_iou(gt, pred, void)[0] == 1.0
    assert db_eval_boundary(gt, pred)[0] < 1.0
    assert db_eval_boundary(gt, pred, void)[0] == 1.0
    # void over half the true square: only the other half counts in intersection and union
    half_void = np.zeros_like(gt)
    half_void[0, :, :25] = True
    empty = np.zeros_like(gt)
    assert db_eval_iou(gt, empty, half_void)[0] == 0.0
    assert db_eval_iou(gt, gt & ~half_void, half_void)[0] == 1.0


def test_seg2bmap_by_hand() -> None:
    dot = np.zeros((3, 3), dtype=bool)
    dot[1, 1] = True
    # pixels whose east, south or south-east neighbour differs; last row/column only east/south
    expected = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(seg2bmap(dot), expected)
    np.testing.assert_array_equal(seg2bmap(np.ones((4, 5), dtype=bool)), np.zeros((4, 5), dtype=bool))
    last_col = np.zeros((4, 5), dtype=bool)
    last_col[:, -1] = True
    expected = np.zeros((4, 5), dtype=bool)
    expected[:, -2] = True  # the last column itself never differs from its south neighbour
    np.testing.assert_array_equal(seg2bmap(last_col), expected)
    # stacks are handled frame by frame
    stack = np.stack([dot, ~dot])
    np.testing.assert_array_equal(seg2bmap(stack)[1], seg2bmap(~dot))


def test_tolerance_radius_and_disk() -> None:
    assert boundary_tolerance(480, 854) == 8
    assert boundary_tolerance(480, 910) == math.ceil(0.008 * math.hypot(480, 910)) == 9
    assert boundary_tolerance(480, 854, bound_th=3) == 3  # >= 1 means pixels
    k = disk(8)
    y, x = np.mgrid[-8:9, -8:9]
    np.testing.assert_array_equal(k, (x**2 + y**2 <= 64).astype(np.uint8))
    assert k[8, 0] == 1 and k[0, 0] == 0 and k.sum() == 197


def test_decay_bins_and_statistics() -> None:
    # linspace(1, 10, 5) = 1, 3.25, 5.5, 7.75, 10 -> rounded 1, 3, 6, 8, 10 -> minus 1
    assert decay_bins(10) == [(0, 2), (2, 5), (5, 7), (7, 9)]
    # 2.5 rounds up thanks to the + 1e-10 (numpy alone would round half to even, to 2)
    assert decay_bins(4) == [(0, 1), (1, 2), (2, 2), (2, 3)]
    values = np.arange(10) / 10
    mean, recall, decay = db_statistics(values)
    assert mean == pytest.approx(0.45)
    assert recall == pytest.approx(0.4)  # 0.6, 0.7, 0.8, 0.9
    assert decay == pytest.approx(0.1 - 0.8)  # mean(0, .1, .2) - mean(.7, .8, .9)


def test_evaluate_sequence_semantics() -> None:
    t, h, w = 5, 32, 32
    gt = np.zeros((t, h, w), dtype=np.uint8)
    gt[:, 4:12, 4:12] = 1
    gt[:, 20:28, 20:28] = 2
    gt[2:, 0:2, 0:2] = 3  # appears after the first frame: not an object
    gt[:, 30:, :] = 255  # void is background in the semi-supervised task
    pred = np.where(gt == 1, 1, 0).astype(np.uint8)  # object 2 never predicted: zero padded
    pred[0] = 0  # the first and last frames are not scored
    pred[-1] = 0
    scores = evaluate_sequence(gt, pred)
    assert scores["J"].shape == scores["F"].shape == (2, t - 2)
    np.testing.assert_array_equal(scores["J"], [[1, 1, 1], [0, 0, 0]])
    np.testing.assert_array_equal(scores["F"], [[1, 1, 1], [0, 0, 0]])
    pred[1:-1, 30:, :] = 1  # predicting the void region is a false positive
    assert evaluate_sequence(gt, pred)["J"][0, 0] == pytest.approx(64 / (64 + 2 * w))
    pred[2, 0, 0] = 3
    with pytest.raises(ValueError, match="object id 3"):
        evaluate_sequence(gt, pred)


# ---------------------------------------------------------------------------------------------------
# The official figures on the shared data


def check_against_official(
    result: DavisResult, global_ref: tuple[float, ...], objects_ref: dict[str, tuple[float, float]]
) -> None:
    np.testing.assert_allclose([result.global_table[c] for c in GLOBAL_COLUMNS], global_ref, atol=1e-4)
    assert list(result.per_object()) == list(objects_ref)
    np.testing.assert_allclose(list(result.per_object().values()), list(objects_ref.values()), atol=1e-4)


@pytest.mark.slow
def test_osvos_matches_the_official_evaluator(shared_data: Path) -> None:
    result = evaluate_davis(shared_data / "davis", shared_data / "davis_results" / "osvos")
    check_against_official(result, OSVOS_GLOBAL, OSVOS_OBJECTS)
    assert len(result.frames["blackswan"]) == 48  # 50 frames less the first and the last
    assert result.objects[0].j.shape == (48,)


def test_osvos_single_sequence_matches(shared_data: Path) -> None:
    result = evaluate_davis(shared_data / "davis", shared_data / "davis_results" / "osvos", sequences=["car-shadow"])
    np.testing.assert_allclose(result.per_object()["car-shadow_1"], OSVOS_OBJECTS["car-shadow_1"], atol=1e-4)


def test_fixture_single_sequence_matches(shared_data: Path) -> None:
    root = shared_data / "davis_metric_fixture"
    result = evaluate_davis(root, root / "pred", sequences=["judo"])
    refs = {k: v for k, v in FIXTURE_OBJECTS.items() if k.startswith("judo")}
    np.testing.assert_allclose(list(result.per_object().values()), list(refs.values()), atol=1e-4)


@pytest.mark.slow
def test_multi_object_fixture_matches_the_official_evaluator(shared_data: Path) -> None:
    root = shared_data / "davis_metric_fixture"
    result = evaluate_davis(root, root / "pred", sequences=["bike-packing", "judo", "pigs"])
    check_against_official(result, FIXTURE_GLOBAL, FIXTURE_OBJECTS)
    assert result.objects[0].f.shape == (67,)  # 910x480 frames: tolerance 9 px


# ---------------------------------------------------------------------------------------------------
# A tiny DAVIS root built on the fly: frame rules and errors


def make_root(tmp_path: Path, n_frames: int = 5, n_images: int | None = None) -> tuple[Path, Path, np.ndarray]:
    """DAVIS root with one sequence "seq" (2 objects, 24x32) and a perfect results folder."""
    root, results = tmp_path / "davis", tmp_path / "results"
    gt = np.zeros((n_frames, 24, 32), dtype=np.uint8)
    gt[:, 2:10, 2:10] = 1
    gt[:, 12:20, 14:30] = 2
    images = root / "JPEGImages" / "480p" / "seq"
    images.mkdir(parents=True)
    for i in range(n_frames if n_images is None else n_images):
        (images / f"{i:05d}.jpg").touch()  # only counted, never decoded
    for i, labels in enumerate(gt):
        write_indexed_png(root / "Annotations" / "480p" / "seq" / f"{i:05d}.png", labels)
        write_indexed_png(results / "seq" / f"{i:05d}.png", labels)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("seq\n")
    return root, results, gt


def test_perfect_results_and_frame_rules(tmp_path: Path) -> None:
    root, results, _ = make_root(tmp_path, n_frames=6, n_images=4)
    (results / "seq" / "00000.png").unlink()  # first and last predictions are never read
    (results / "seq" / "00005.png").unlink()
    result = evaluate_davis(root, results)
    assert result.global_table["J&F-Mean"] == 1.0
    # every ground-truth PNG is scored, even beyond the counted images, as in the official code
    assert result.frames["seq"] == ["00001", "00002", "00003", "00004"]
    assert [o.name for o in result.objects] == ["seq_1", "seq_2"]


def test_fewer_predicted_objects_are_zero_padded(tmp_path: Path) -> None:
    root, results, gt = make_root(tmp_path)
    for i in range(1, 4):
        write_indexed_png(results / "seq" / f"{i:05d}.png", np.where(gt[i] == 2, 0, gt[i]))
    result = evaluate_davis(root, results)
    assert result.per_object() == {"seq_1": (1.0, 1.0), "seq_2": (0.0, 0.0)}


def test_error_wrong_size_prediction(tmp_path: Path) -> None:
    root, results, _ = make_root(tmp_path)
    write_indexed_png(results / "seq" / "00002.png", np.zeros((24, 30), dtype=np.uint8))
    with pytest.raises(DavisScoreError, match=r"00002\.png: prediction is 30x24, the ground truth 32x24"):
        evaluate_davis(root, results)


def test_error_missing_prediction_frame(tmp_path: Path) -> None:
    root, results, _ = make_root(tmp_path)
    (results / "seq" / "00003.png").unlink()
    with pytest.raises(DavisScoreError, match=r"00003\.png: missing prediction"):
        evaluate_davis(root, results)


def test_error_more_predicted_objects(tmp_path: Path) -> None:
    root, results, gt = make_root(tmp_path)
    labels = gt[2].copy()
    labels[0, 0] = 3
    write_indexed_png(results / "seq" / "00002.png", labels)
    with pytest.raises(DavisScoreError, match=r"00002\.png: object id 3 but the ground truth .* only 2"):
        evaluate_davis(root, results)


def test_error_rgb_png(tmp_path: Path) -> None:
    root, results, _ = make_root(tmp_path)
    Image.new("RGB", (32, 24)).save(results / "seq" / "00001.png")
    with pytest.raises(DavisScoreError, match=r"00001\.png: expected an indexed") as info:
        evaluate_davis(root, results)
    assert isinstance(info.value, LabelFileError)


def test_error_sequence_missing_from_root(tmp_path: Path) -> None:
    root, results, _ = make_root(tmp_path)
    with pytest.raises(DavisScoreError, match=r"JPEGImages/480p/ghost: .*'ghost' is missing"):
        evaluate_davis(root, results, sequences=["ghost"])


def test_error_fewer_annotations_than_images(tmp_path: Path) -> None:
    root, results, _ = make_root(tmp_path, n_images=7)
    with pytest.raises(DavisScoreError, match="5 ground-truth PNGs for 7 frames"):
        evaluate_davis(root, results)


# ---------------------------------------------------------------------------------------------------
# Table, CSVs and the command line


def test_table_and_csvs(tmp_path: Path) -> None:
    root, results, gt = make_root(tmp_path)
    write_indexed_png(results / "seq" / "00002.png", np.where(gt[2] == 2, 0, gt[2]))
    result = evaluate_davis(root, results)
    j2, f2 = result.per_object()["seq_2"]
    assert (j2, f2) == (pytest.approx(2 / 3), pytest.approx(2 / 3))  # one of three frames missed
    table = format_table(result)
    lines = table.splitlines()
    assert lines[1].split() == list(GLOBAL_COLUMNS)
    assert lines[2].split() == [f"{result.global_table[c]:.6f}" for c in GLOBAL_COLUMNS]
    assert f"seq_2 {j2:.6f} {f2:.6f}" in table
    global_csv, sequence_csv = write_csvs(result, tmp_path / "out")
    assert global_csv.name == "global_results-val.csv"
    assert sequence_csv.name == "per-sequence_results-val.csv"
    lines = global_csv.read_text().splitlines()
    assert lines[0] == "J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay"
    values = [float(v) for v in lines[1].split(",")]
    np.testing.assert_allclose(values, [result.global_table[c] for c in GLOBAL_COLUMNS], atol=5e-4)
    assert all(len(v.split(".")[1]) == 3 for v in lines[1].split(","))  # "%.3f", as pandas writes it
    assert sequence_csv.read_text() == (f"Sequence,J-Mean,F-Mean\nseq_1,1.000,1.000\nseq_2,{j2:.3f},{f2:.3f}\n")


def test_cli_recomputes_and_overwrites_stale_csvs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, results, _ = make_root(tmp_path)
    stale = "J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay\n0.1,0.1,0.1,0.1,0.1,0.1,0.1\n"
    (results / "global_results-val.csv").write_text(stale)
    (results / "per-sequence_results-val.csv").write_text("Sequence,J-Mean,F-Mean\nseq_1,0.1,0.1\n")
    assert main(["eval", "davis-score", "--davis-root", str(root), "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "1.000000 1.000000" in out and "seq_2 1.000000 1.000000" in out
    global_rows = (results / "global_results-val.csv").read_text().splitlines()
    assert global_rows[1] == "1.000,1.000,1.000,0.000,1.000,1.000,0.000"  # no decay on perfect results
    assert "seq_2,1.000,1.000" in (results / "per-sequence_results-val.csv").read_text()
    out_dir = tmp_path / "elsewhere"
    args = ["eval", "davis-score", "--davis-root", str(root), "--results", str(results), "--out", str(out_dir)]
    assert main([*args, "--sequences", "seq"]) == 0
    assert (out_dir / "per-sequence_results-val.csv").is_file()


def test_cli_reports_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, results, _ = make_root(tmp_path)
    (results / "seq" / "00002.png").unlink()
    assert main(["eval", "davis-score", "--davis-root", str(root), "--results", str(results)]) == 2
    assert "00002.png: missing prediction" in capsys.readouterr().err
    assert not (results / "global_results-val.csv").exists()
