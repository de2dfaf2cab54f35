"""The imagenet-lt suite: file readers, the long-tail profile, shot groups, a tiny run."""

from __future__ import annotations

import gzip
import json
import pickle

import numpy as np
import pytest

from bench.cli import main
from bench.errors import UsageError
from bench.vision.data import (
    cifar100,
    group_accuracy,
    longtail_counts,
    longtail_indices,
    per_class_accuracy,
    read_idx,
    shot_groups,
)


def write_idx(path, array: np.ndarray, *, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_reader_round_trip(tmp_path, compress):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("x.idx.gz" if compress else "x.idx")
    write_idx(path, array, compress=compress)
    out = read_idx(path)
    assert out.shape == (2, 3, 4) and out.dtype == np.uint8
    assert (out == array).all()


def test_idx_reader_rejects_bad_magic_and_truncation(tmp_path):
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(UsageError, match="bad.idx: not an IDX file"):
        read_idx(bad)
    short = tmp_path / "short.idx"
    write_idx(short, np.zeros((2, 2), np.uint8), compress=False)
    short.write_bytes(short.read_bytes()[:-1])
    with pytest.raises(UsageError, match="truncated or corrupt"):
        read_idx(short)


def test_longtail_counts_follow_the_exponential_profile():
    counts = longtail_counts(6000, 10, 100)
    assert counts[0] == 6000 and counts[-1] == 60
    assert counts == [int(6000 * 100 ** (-i / 9)) for i in range(10)]
    assert all(a > b for a, b in zip(counts, counts[1:], strict=False))
    assert longtail_counts(500, 100, 100)[-1] == 5  # CIFAR-100-LT
    with pytest.raises(UsageError):
        longtail_counts(10, 1, 100)


def test_longtail_sampler_class_counts_and_determinism():
    labels = np.repeat(np.arange(4), 50)
    counts = longtail_counts(40, 4, 10)
    idx = longtail_indices(labels, counts, seed=0)
    assert np.bincount(labels[idx], minlength=4).tolist() == counts
    assert len(set(idx.tolist())) == len(idx)
    assert (longtail_indices(labels, counts, seed=0) == idx).all()
    assert not (longtail_indices(labels, counts, seed=1) == idx).all()
    with pytest.raises(UsageError, match="class 0 has 50 images"):
        longtail_indices(labels, [60, 1, 1, 1])


def test_shot_groups_thirds_for_ten_classes_and_standard_rule_for_many():
    groups = shot_groups(longtail_counts(6000, 10, 100))
    assert groups == {"many": [0, 1, 2], "medium": [3, 4, 5, 6], "few": [7, 8, 9]}
    # sorting is by count, not by class id
    assert shot_groups([5, 50, 500])["many"] == [2]
    counts = longtail_counts(500, 100, 100)
    std = shot_groups(counts)
    assert all(counts[c] > 100 for c in std["many"])
    assert all(20 <= counts[c] <= 100 for c in std["medium"])
    assert all(counts[c] < 20 for c in std["few"])
    assert sum(len(v) for v in std.values()) == 100


def test_per_class_and_group_accuracy():
    labels = np.array([0, 0, 1, 1, 2])
    correct = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
    per_class = per_class_accuracy(correct, labels, 4)
    assert per_class == [0.5, 1.0, 0.0, None]
    assert group_accuracy(per_class, [0, 1]) == 0.75
    assert group_accuracy(per_class, [3]) is None


def test_cifar100_reader(tmp_path):
    data = {b"data": np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072) % 255,
            b"fine_labels": [3, 7]}
    (tmp_path / "train").write_bytes(pickle.dumps(data))
    (tmp_path / "meta").write_bytes(pickle.dumps(
        {b"fine_label_names": [f"c{i}".encode() for i in range(100)]}))
    out = cifar100(tmp_path, "train")
    assert out.images.shape == (2, 3, 32, 32) and out.labels.tolist() == [3, 7]
    assert out.classes[7] == "c7"
    with pytest.raises(UsageError, match="cifar_root"):
        cifar100(tmp_path, "test")


def test_imagenet_lt_lists_and_images(tmp_path):
    from PIL import Image

    from bench.vision.imagenet import imagenet_lt

    (tmp_path / "train" / "n1").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (40 + i, 30), (i * 50, 0, 0)).save(tmp_path / "train" / "n1" / f"{i}.png")
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "ImageNet_LT_train.txt").write_text(
        "".join(f"train/n1/{i}.png {i % 2}\n" for i in range(3)))
    data = imagenet_lt(tmp_path, lists, "train", resize=20, crop=16)
    assert data.labels.tolist() == [0, 1, 0] and len(data.classes) == 2
    batch = data.batch([0, 2])
    assert batch.shape == (2, 3, 16, 16) and batch.dtype == np.uint8
    assert batch[1, 0].mean() == pytest.approx(100, abs=1)
    (lists / "ImageNet_LT_test.txt").write_text("train/n1/0.png notanumber\n")
    with pytest.raises(UsageError, match=r"ImageNet_LT_test.txt:1: expected"):
        imagenet_lt(tmp_path, lists, "test")
    with pytest.raises(UsageError, match="lt_lists"):
        imagenet_lt(tmp_path, lists, "val")


def test_unknown_dataset_and_missing_paths_are_usage_errors(tmp_path, capsys):
    out = ["--out", str(tmp_path / "r"), "--work-dir", str(tmp_path / "w")]
    assert main(["run", "--method", "ce", "--suite", "imagenet-lt", "--dataset", "mnist",
                 *out]) == 2
    assert "not a dataset of suite 'imagenet-lt'" in capsys.readouterr().err
    assert main(["run", "--method", "ce", "--suite", "imagenet-lt", "--dataset", "cifar100-lt",
                 *out]) == 2
    assert "cifar_root" in capsys.readouterr().err
    assert main(["run", "--method", "ce", "--suite", "imagenet-lt", "--set", "knn_k=3",
                 *out]) == 2
    assert "--set knn_k" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_end_to_end_runs_and_leaderboard(tmp_path):
    results = tmp_path / "results"
    common = ["--suite", "imagenet-lt", "--preset", "smoke", "--out", str(results),
              "--work-dir", str(tmp_path / "work"), "--limit", "10",
              "--set", "n_max=60"]
    for method in ("teacher", "kd", "trg"):
        assert main(["run", "--method", method, *common]) == 0
    files = {f.name.split("__")[0]: json.loads(f.read_text())
             for f in (results / "imagenet-lt").rglob("*.json")}
    assert set(files) == {"teacher", "kd", "trg"}
    trg = files["trg"]
    assert trg["dataset"]["offline_stand_in"] and trg["dataset"]["num_items"] == 100
    assert set(trg["metrics"]) == {"top1", "top1_many", "top1_medium", "top1_few"}
    assert trg["config"]["train_per_class"][0] == 60
    assert trg["config"]["paired_bootstrap_vs_baseline"]["baseline"] == "kd"
    assert set(trg["config"]["train"]["trg"]["recipe"]["extra"]) >= {"inner_weight", "knn_k"}
    assert len(trg["per_item"]["top1"]) == 100
    assert len(trg["per_item"]["top1_few"]) == 30 and len(trg["per_item"]["top1_medium"]) == 40
    # size and speed beside the score: the student is smaller than the teacher it learns from
    for record in files.values():
        assert record["cost"]["parameters"] > 0 and record["cost"]["ms_per_item"] > 0
        assert record["cost"]["per"].startswith("image, batch 100, fp32 weights")
    assert trg["cost"]["parameters"] < files["teacher"]["cost"]["parameters"]
    # the teacher is trained once: kd and trg reuse its checkpoint
    assert len(list((tmp_path / "work").rglob("teachertraining-*"))) == 1
    assert main(["leaderboard", "--results", str(results), "--out", str(tmp_path / "lb")]) == 0
    assert (tmp_path / "lb" / "imagenet-lt.md").exists()
    assert list((tmp_path / "lb").glob("imagenet-lt_*shots.png"))


def test_cifar_reader_accepts_numpy_arrays_and_refuses_code(tmp_path):
    """CIFAR files are pickles; a tampered one must be an error, not code execution."""
    import os
    import pickle

    import numpy as np

    from bench.errors import UsageError
    from bench.vision.data import cifar100

    data = {b"data": np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072),
            b"fine_labels": [3, 7]}
    (tmp_path / "train").write_bytes(pickle.dumps(data))
    (tmp_path / "meta").write_bytes(pickle.dumps(
        {b"fine_label_names": [f"c{i}".encode() for i in range(100)]}))
    arrays = cifar100(tmp_path, "train")
    assert arrays.labels.tolist() == [3, 7] and arrays.classes[7] == "c7"

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    (tmp_path / "test").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(UsageError, match="not a CIFAR-100 pickle.*not part of the CIFAR"):
        cifar100(tmp_path, "test")
    assert not (tmp_path / "pwned").exists()
