"""What went wrong in an evaluation (fastai's ClassificationInterpretation): precision/recall/F1, the most confused
pairs, calibration (ECE, reliability bins) and the highest-loss images, by name, in the report."""

from __future__ import annotations

import json

import pytest
import torch

from resnetkit.evaluate.metrics import CALIBRATION_BINS, ClassificationMetrics

from test_evaluate_protocols import PRE, _model_and_folder


def _batches(n: int = 200, classes: int = 4, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=g) * 3
    labels = torch.randint(0, classes, (n,), generator=g)
    return list(zip(logits.split(37), labels.split(37)))  # uneven batches: positions must run across them


def test_precision_recall_f1_and_the_most_confused_pairs_follow_the_confusion_matrix():
    metrics = ClassificationMetrics(3)
    # actual 0: 3 right, 1 as 2; actual 1: 2 right, 2 as 0; actual 2: 1 right; nothing ever predicted as 1 wrongly
    pairs = [(0, 0)] * 3 + [(0, 2)] + [(1, 1)] * 2 + [(1, 0)] * 2 + [(2, 2)]
    labels = torch.tensor([a for a, _ in pairs])
    metrics.update(torch.nn.functional.one_hot(torch.tensor([p for _, p in pairs]), 3).float() * 5, labels)
    assert metrics.per_class_accuracy() == pytest.approx([3 / 4, 2 / 4, 1.0])
    assert metrics.precision() == pytest.approx([3 / 5, 1.0, 1 / 2])
    f1 = [2 * p * r / (p + r) for p, r in [(3 / 5, 3 / 4), (1.0, 2 / 4), (1 / 2, 1.0)]]
    assert metrics.f1() == pytest.approx(f1)
    assert metrics.macro_f1() == pytest.approx(sum(f1) / 3)
    assert metrics.most_confused(["cat", "dog", "ship"]) == [("dog", "cat", 2), ("cat", "ship", 1)]
    assert metrics.most_confused(["cat", "dog", "ship"], limit=1) == [("dog", "cat", 2)]


def test_a_class_never_predicted_has_precision_0_and_a_class_without_images_is_left_out_of_macro_f1():
    metrics = ClassificationMetrics(3)
    metrics.update(torch.tensor([[5.0, 0, 0], [5.0, 0, 0]]), torch.tensor([0, 1]))
    assert metrics.precision() == pytest.approx([0.5, 0.0, 0.0])
    assert metrics.f1() == pytest.approx([2 / 3, 0.0, 0.0])
    assert metrics.macro_f1() == pytest.approx((2 / 3 + 0.0) / 2)  # class 2 has no images: not counted


def test_expected_calibration_error_matches_a_direct_computation_over_the_samples():
    metrics = ClassificationMetrics(4)
    confidence, correct = [], []
    for logits, labels in _batches():
        metrics.update(logits, labels)
        probs = logits.softmax(1)
        confidence += probs.max(1).values.tolist()
        correct += (probs.argmax(1) == labels).tolist()
    ece = 0.0
    for b in range(CALIBRATION_BINS):
        members = [i for i, c in enumerate(confidence) if b / CALIBRATION_BINS < c <= (b + 1) / CALIBRATION_BINS]
        if members:
            gap = sum(correct[i] for i in members) / len(members) - sum(confidence[i] for i in members) / len(members)
            ece += len(members) / len(confidence) * abs(gap)
    assert metrics.expected_calibration_error == pytest.approx(ece, abs=1e-6)
    assert sum(row["images"] for row in metrics.calibration()) == len(confidence) == metrics.count
    assert ece > 0.01  # random logits are not calibrated: the check above compares something


def test_a_confidence_of_exactly_1_falls_in_the_last_bin():
    metrics = ClassificationMetrics(2)
    metrics.update(torch.tensor([[0.0, -200.0]]), torch.tensor([0]))
    assert metrics.calibration() == [{"low": pytest.approx(14 / 15), "high": 1.0, "images": 1, "confidence": 1.0,
                                      "accuracy": 1.0}]
    assert metrics.expected_calibration_error == 0.0


def test_top_losses_are_the_highest_per_sample_losses_across_batches_worst_first():
    metrics = ClassificationMetrics(4, keep_worst=7)
    losses = []
    for logits, labels in _batches():
        metrics.update(logits, labels)
        losses += torch.nn.functional.cross_entropy(logits, labels, reduction="none").tolist()
    worst = metrics.top_losses()
    expected = sorted(range(len(losses)), key=lambda i: -losses[i])[:7]
    assert [s.position for s in worst] == expected
    assert [s.loss for s in worst] == pytest.approx([losses[i] for i in expected], rel=1e-5)
    for s in worst:
        assert s.prob_label == pytest.approx(torch.tensor(-s.loss).exp().item(), rel=1e-4)
        assert s.prob_predicted >= s.prob_label
    assert ClassificationMetrics(4).top_losses() == []  # not asked for: nothing kept


def test_equal_losses_keep_the_earlier_image():
    metrics = ClassificationMetrics(2, keep_worst=2)
    for _ in range(3):
        metrics.update(torch.zeros(2, 2), torch.tensor([0, 1]))  # every loss is log 2
    assert [s.position for s in metrics.top_losses()] == [0, 1]


def test_eval_report_names_the_highest_loss_files_and_draws_them(tmp_path, capsys):
    """`resnetkit eval --top-losses 2` on a folder: the report lists the two files whose loss, computed here
    independently, is highest, worst first, with their classes; the figures are written."""
    from resnetkit.cli import main
    from resnetkit.data import decode_rgb, eval_transform

    model, files = _model_and_folder(tmp_path)
    assert main(["eval", str(tmp_path / "m.safetensors"), str(tmp_path / "data"), "--out-dir", str(tmp_path / "ev"),
                 "--device", "cpu", "--workers", "0", "--top-losses", "2"]) == 0
    with torch.no_grad():
        losses = {str(path): -model(eval_transform(PRE)(decode_rgb(path.read_bytes()))[None]).log_softmax(1)[0, label]
                  .item() for path, label in files}
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    expected = sorted(losses, key=losses.get, reverse=True)[:2]
    assert [row["image"] for row in report["top_losses"]] == expected
    assert [row["loss"] for row in report["top_losses"]] == pytest.approx([losses[p] for p in expected], abs=1e-4)
    labels = {str(path): "ab"[label] for path, label in files}
    assert [row["actual"] for row in report["top_losses"]] == [labels[p] for p in expected]
    assert set(report["precision"]) == {"a", "b"} and 0 <= report["ece"] <= 1
    markdown = (tmp_path / "ev" / "report.md").read_text()
    assert "## Top losses" in markdown and expected[0] in markdown and "expected calibration error" in markdown
    pytest.importorskip("matplotlib")
    assert (tmp_path / "ev" / "top_losses.png").stat().st_size > 0
    assert (tmp_path / "ev" / "reliability.png").stat().st_size > 0


def test_held_out_images_of_a_tar_are_named_by_member(tmp_path):
    """With --val-split on a tar the report names each high-loss image as TAR:MEMBER, the member it was read from."""
    import tarfile

    from resnetkit.config import EvalConfig
    from resnetkit.evaluate.run import run_evaluation

    _model_and_folder(tmp_path)
    (tmp_path / "data" / "test" / "b" / "broken.png").unlink()
    tar = tmp_path / "images.tar"
    with tarfile.open(tar, "w") as archive:
        for folder in (tmp_path / "data" / "test").iterdir():
            for image in folder.iterdir():
                archive.add(image, arcname=f"train/{folder.name}/{image.name}")
    metrics = run_evaluation(EvalConfig(model=str(tmp_path / "m.safetensors"), data=str(tar), val_split=2,
                                        out_dir=str(tmp_path / "ev"), device="cpu", workers=0, top_losses=2))
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert metrics.count == 2 and len(report["top_losses"]) == 2
    with tarfile.open(tar) as archive:
        members = set(archive.getnames())
    for row in report["top_losses"]:
        source, member = row["image"].rsplit(":", 1)
        assert source == str(tar) and member in members and member.split("/")[1] == row["actual"]


@pytest.mark.parametrize("count", [-1, 1001, 2.5])
def test_top_losses_outside_0_to_1000_is_refused_naming_the_setting(count):
    from resnetkit.config import EvalConfig

    with pytest.raises(ValueError, match="top_losses"):
        EvalConfig(model="m", data="d", top_losses=count)
