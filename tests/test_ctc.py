import numpy as np
import pytest

from cellinr.errors import InputError
from cellinr.io.ctc import (
    Track,
    check_ctc_sequence,
    format_man_track,
    frame_digits,
    read_ctc_sequence,
    read_man_track,
    track_masks,
    write_ctc_sequence,
)


def dividing_spheres(T=7, S=32, split=3):
    """One sphere for frames < split, then two spheres moving apart (T, Z, Y, X) uint8."""
    zz, yy, xx = np.mgrid[:S, :S, :S]
    masks = np.zeros((T, S, S, S), np.uint8)
    for t in range(T):
        if t < split:
            masks[t] = (zz - 16) ** 2 + (yy - 16) ** 2 + (xx - 16) ** 2 <= 8**2
        else:
            d = 4 + t
            masks[t] = ((zz - 16) ** 2 + (yy - 16) ** 2 + (xx - 16 + d) ** 2 <= 5**2) | (
                (zz - 16) ** 2 + (yy - 16) ** 2 + (xx - 16 - d) ** 2 <= 5**2)
    return masks


def test_track_masks_division_gives_daughters_new_ids():
    masks = dividing_spheres()
    labels, tracks = track_masks(masks)
    assert [(t.label, t.begin, t.end, t.parent) for t in tracks] == [(1, 0, 2, 0), (2, 3, 6, 1), (3, 3, 6, 1)]
    assert labels.dtype == np.uint16
    for t in range(3):
        assert set(np.unique(labels[t])) == {0, 1}
    for t in range(3, 7):
        assert set(np.unique(labels[t])) == {0, 2, 3}
    # same pixels as the input, and daughters keep their ids as they move
    np.testing.assert_array_equal(labels > 0, masks > 0)
    left = [set(np.unique(labels[t][..., :16])) - {0} for t in range(3, 7)]
    right = [set(np.unique(labels[t][..., 16:])) - {0} for t in range(3, 7)]
    assert all(ids == left[0] for ids in left) and all(ids == right[0] for ids in right)
    assert len(left[0]) == 1 and left[0] != right[0]


def test_track_masks_appearing_cell_and_instance_labels():
    masks = np.zeros((3, 10, 10), np.int32)
    masks[:, 1:4, 1:4] = 5  # one cell all along, label value 5
    masks[1:, 6:9, 6:9] = 5  # a new cell with the same label value but another component, from frame 1
    masks[2, 1:4, 1:4] = 7  # relabelled in frame 2: overlap keeps the track
    labels, tracks = track_masks(masks)
    assert [(t.label, t.begin, t.end, t.parent) for t in tracks] == [(1, 0, 2, 0), (2, 1, 2, 0)]
    assert labels[2, 2, 2] == 1 and labels[2, 7, 7] == 2


@pytest.mark.parametrize("three_d", [False, True])
def test_ctc_export_rereads_consistently(tmp_path, three_d):
    masks = dividing_spheres()
    if not three_d:
        masks = masks.max(axis=1)
    labels, tracks = track_masks(masks)
    images = (labels.astype(np.uint16) * 100 + 7).astype(np.uint16)
    write_ctc_sequence(tmp_path, 2, images, labels, tracks, spacing=(2.0, 0.5, 0.5) if three_d else None)
    names = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    expected = sorted(
        [f"02/t{t:03d}.tif" for t in range(7)] + [f"02_GT/SEG/man_seg{t:03d}.tif" for t in range(7)]
        + [f"02_GT/TRA/man_track{t:03d}.tif" for t in range(7)] + ["02_GT/TRA/man_track.txt"]
    )
    assert names == expected
    seq = read_ctc_sequence(tmp_path, 2)
    assert seq.images.shape == masks.shape
    np.testing.assert_array_equal(seq.images, images)
    np.testing.assert_array_equal(seq.seg, labels)
    for t in range(7):
        assert set(np.unique(seq.seg[t])) == set(np.unique(seq.tra[t]))
    assert check_ctc_sequence(seq) == []
    assert (tmp_path / "02_GT/TRA/man_track.txt").read_text() == "1 0 2 0\n2 3 6 1\n3 3 6 1\n"
    assert [(t.label, t.begin, t.end, t.parent) for t in seq.tracks] == [(1, 0, 2, 0), (2, 3, 6, 1), (3, 3, 6, 1)]


def test_check_ctc_finds_inconsistencies(tmp_path):
    labels, tracks = track_masks(dividing_spheres().max(axis=1))
    write_ctc_sequence(tmp_path, 1, labels, labels, tracks)
    seq = read_ctc_sequence(tmp_path, 1)
    seq.tracks[1] = Track(2, 2, 6, 1)  # daughter begins while the mother is alive
    problems = check_ctc_sequence(seq)
    assert any("frame 2" in p for p in problems)
    assert any("parent 1 ends at 2, not before 2" in p for p in problems)
    seq = read_ctc_sequence(tmp_path, 1)
    seq.seg[4][seq.seg[4] == 3] = 9
    assert any("SEG labels" in p for p in check_ctc_sequence(seq))


def test_man_track_format_and_bad_file(tmp_path):
    assert format_man_track([Track(2, 3, 4, 1), Track(1, 0, 2, 0)]) == "1 0 2 0\n2 3 4 1\n"
    assert frame_digits(10) == 3 and frame_digits(1000) == 3 and frame_digits(1001) == 4
    bad = tmp_path / "man_track.txt"
    bad.write_text("1 0 2\n")
    with pytest.raises(InputError, match="line 1"):
        read_man_track(bad)
    with pytest.raises(InputError, match="not found"):
        read_ctc_sequence(tmp_path, 1)
