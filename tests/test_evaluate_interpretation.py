"""What went wrong in an evaluation (fastai's ClassificationInterpretation): precision/recall/F1, the most confused
pairs, calibration (ECE, reliability bins) and the highest-loss images, by name, in the report."""

from __future__ import annotations

import json
import math

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
    assert metrics.macro_f1 == pytest.approx(sum(f1) / 3)
    assert metrics.most_confused(["cat", "dog", "ship"]) == [("dog", "cat", 2), ("cat", "ship", 1)]
    assert metrics.most_confused(["cat", "dog", "ship"], limit=1) == [("dog", "cat", 2)]


def test_a_class_never_predicted_has_precision_0_and_a_class_without_images_is_left_out_of_macro_f1():
    metrics = ClassificationMetrics(3)
    metrics.update(torch.tensor([[5.0, 0, 0], [5.0, 0, 0]]), torch.tensor([0, 1]))
    assert metrics.precision() == pytest.approx([0.5, 0.0, 0.0])
    assert metrics.f1() == pytest.approx([2 / 3, 0.0, 0.0])
    assert metrics.macro_f1 == pytest.approx((2 / 3 + 0.0) / 2)  # class 2 has no images: not counted


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


@pytest.mark.parametrize("batch", [2, 5, 8])
def test_equal_losses_keep_the_earlier_image(batch):
    """Ties go to the image measured first, also within a batch larger than the number kept."""
    metrics = ClassificationMetrics(2, keep_worst=2)
    for _ in range(3):
        metrics.update(torch.zeros(batch, 2), torch.arange(batch) % 2)  # every loss is log 2
    assert [s.position for s in metrics.top_losses()] == [0, 1]


def test_a_very_wrong_answer_keeps_its_own_loss_under_every_protocol():
    """Averaged views are combined in log space: a probability below float32's smallest is not clamped, so the
    worst images are ranked by their real losses (a clamp at 1e-12 made every one of them 27.63)."""
    from resnetkit.evaluate.protocols import evaluate_samples

    class Sure(torch.nn.Module):
        """'Bright' (0) or 'dark' (1), very sure of it, the same on every crop and mirror of a flat image."""

        def forward(self, x):
            brightness = x.mean((1, 2, 3))
            return torch.stack([brightness, -brightness], 1) * 100

    flat = [torch.full((3, 40, 40), level, dtype=torch.uint8) for level in (200, 250)]
    images = [(flat[0], 1), (flat[1], 1)]  # both bright images called dark: wrong, the second more so
    for protocol in ("center", "flip", "10crop"):
        metrics = evaluate_samples(Sure(), images, preprocess=PRE, num_classes=2, protocol=protocol, keep_worst=2)
        worst = metrics.top_losses()
        assert [s.position for s in worst] == [1, 0] and worst[0].loss > worst[1].loss > 100, protocol


def test_non_finite_outputs_stay_out_of_the_calibration_and_the_top_losses():
    metrics = ClassificationMetrics(2, keep_worst=3)
    metrics.update(torch.tensor([[float("nan"), 0.0], [2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1, 0]))
    assert sum(row["images"] for row in metrics.calibration()) == 2
    assert [s.position for s in metrics.top_losses()] == [1, 2]
    assert 0 < metrics.expected_calibration_error < 1


def test_non_finite_outputs_count_as_wrong_and_leave_the_calibration_of_the_rest_unchanged():
    """max() of a NaN row is index 0: a broken model was scored right on every class-0 image and called calibrated."""
    finite_rows = torch.tensor([[3.0, 0.0], [0.0, 3.0], [3.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 1, 0])
    alone = ClassificationMetrics(2)
    alone.update(finite_rows, labels)
    metrics = ClassificationMetrics(2)
    nan_rows = torch.full((4, 2), float("nan"))
    metrics.update(torch.cat([finite_rows, nan_rows]), torch.cat([labels, torch.tensor([0, 0, 1, 0])]))
    assert metrics.top1 == 2 / 8 and metrics.top5 == 4 / 8
    assert metrics.per_class_accuracy() == pytest.approx([1 / 5, 1 / 3])
    assert metrics.confusion.sum() == 4 and metrics.summary()["non_finite"] == 4
    assert metrics.expected_calibration_error == pytest.approx(alone.expected_calibration_error)
    broken = ClassificationMetrics(2)
    broken.update(nan_rows, torch.tensor([0, 0, 1, 0]))
    assert broken.top1 == 0 and broken.top5 == 0 and broken.per_class_accuracy() == [0, 0]
    assert math.isnan(broken.expected_calibration_error) and broken.summary()["ece"] is None


@pytest.mark.parametrize("keep", [-1, 2.5, True])
def test_keep_worst_must_be_a_whole_number(keep):
    with pytest.raises(ValueError, match="keep_worst"):
        ClassificationMetrics(2, keep_worst=keep)


def test_most_confused_with_repeated_class_names_counts_each_class_on_its_own(tmp_path):
    """ImageNet names two classes 'crane': each keeps its own row and share."""
    from resnetkit.evaluate.report import write_report

    metrics = ClassificationMetrics(3)
    pairs = [(0, 0), (1, 2), (1, 2), (2, 2), (2, 2), (2, 2), (2, 2)]
    metrics.update(torch.nn.functional.one_hot(torch.tensor([p for _, p in pairs]), 3).float() * 5,
                   torch.tensor([a for a, _ in pairs]))
    assert metrics.confused_pairs() == [(1, 2, 2)]
    write_report(tmp_path, title="t", metrics=metrics, class_names=["crane", "crane", "heron"], config={},
                 history=[{"epoch": 1, "lr": 0.1, "train_loss": 1.0, "train_acc": 0.5, "images_per_s": 10.0}])
    markdown = (tmp_path / "report.md").read_text()
    assert "| crane | heron | 2 | 100.00% |" in markdown  # the second crane's 2 images, not the first's 1
    assert "## Per class" in markdown and "## Top losses" not in markdown  # a training report: no file names


def test_thumbnails_are_small_rgb_and_keep_the_aspect():
    from resnetkit.data.memory import InMemoryImageDataset
    from resnetkit.evaluate.run import worst_images

    images = torch.randint(0, 256, (2, 3, 400, 200), dtype=torch.uint8)
    dataset = InMemoryImageDataset(images, torch.tensor([0, 1]), ["a", "b"])
    metrics = ClassificationMetrics(2, keep_worst=2)
    metrics.update(torch.tensor([[0.0, 3.0], [1.0, 0.0]]), torch.tensor([0, 1]))
    worst = worst_images(dataset, [1, 0], metrics)  # the first image measured was dataset index 1
    assert [w.name for w in worst] == ["#1", "#0"]
    assert [tuple(w.thumbnail.shape) for w in worst] == [(3, 160, 80)] * 2 and worst[0].thumbnail.dtype == torch.uint8


def test_eval_report_names_the_highest_loss_files_and_draws_them(tmp_path, capsys):
    """`resnetkit eval --top-losses 4` on a folder: the report lists the files by their loss, computed here
    independently, worst first, with their classes; the figures are written."""
    from resnetkit.cli import main
    from resnetkit.data import decode_rgb, eval_transform

    model, files = _model_and_folder(tmp_path)
    # An unreadable file between readable ones (0.png < 0broken.png < 1.png): the names after it must not shift.
    (tmp_path / "data" / "test" / "a" / "0broken.png").write_bytes(b"not a png")
    assert main(["eval", str(tmp_path / "m.safetensors"), str(tmp_path / "data"), "--out-dir", str(tmp_path / "ev"),
                 "--device", "cpu", "--workers", "0", "--top-losses", "4"]) == 0
    with torch.no_grad():
        losses = {str(path): -model(eval_transform(PRE)(decode_rgb(path.read_bytes()))[None]).log_softmax(1)[0, label]
                  .item() for path, label in files}
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    expected = sorted(losses, key=losses.get, reverse=True)  # all 4 readable images, worst first
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


def test_a_figure_not_drawn_again_is_removed_so_an_old_one_cannot_pass_for_current(tmp_path):
    from resnetkit.evaluate.report import write_report

    pytest.importorskip("matplotlib")
    metrics = ClassificationMetrics(2)
    metrics.update(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))
    (tmp_path / "top_losses.png").write_bytes(b"an earlier evaluation's figure")
    paths = write_report(tmp_path, title="t", metrics=metrics, class_names=["a", "b"], config={})
    assert "top_losses" not in paths and not (tmp_path / "top_losses.png").exists()
    assert (tmp_path / "confusion.png").exists() and (tmp_path / "reliability.png").exists()


def test_measuring_a_whole_training_set_with_a_model_that_held_images_out_of_one_warns(tmp_path):
    """A data set without a test split is measured whole (what is given is measured), but a model file that records a
    held-out split gets a warning naming --val-split: otherwise eval on the training tar reports training accuracy."""
    import shutil
    import warnings

    from resnetkit import save_model
    from resnetkit.config import EvalConfig, ModelInfo
    from resnetkit.evaluate.run import run_evaluation

    model, _ = _model_and_folder(tmp_path)
    (tmp_path / "data" / "test" / "b" / "broken.png").unlink()
    shutil.copytree(tmp_path / "data" / "test", tmp_path / "train_only")
    save_model(model, tmp_path / "held.safetensors", info=ModelInfo(
        model=model.config, class_names=["a", "b"], preprocess=PRE, extra={"val_split": 2, "split_seed": 3}))

    def warned(model_file: str, data, **options) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run_evaluation(EvalConfig(model=str(tmp_path / model_file), data=str(data), out_dir=str(tmp_path / "ev"),
                                      device="cpu", workers=0, top_losses=0, **options))
        return [str(w.message) for w in caught if "held out" in str(w.message)]

    [message] = warned("held.safetensors", tmp_path / "train_only")
    assert "--val-split 2 --seed 3" in message and str(tmp_path / "train_only") in message
    assert warned("held.safetensors", tmp_path / "data") == []  # its test split is measured
    assert warned("held.safetensors", tmp_path / "train_only", val_split=2, seed=3) == []
    assert warned("m.safetensors", tmp_path / "train_only") == []  # the file records no held-out split
    for damaged in (float("inf"), -5, 2.5, "many"):  # a crafted record: no warning quoting it, and eval still runs
        save_model(model, tmp_path / "odd.safetensors", info=ModelInfo(
            model=model.config, class_names=["a", "b"], preprocess=PRE, extra={"val_split": damaged}))
        assert warned("odd.safetensors", tmp_path / "train_only") == []
    with pytest.raises(ValueError, match="records val_split 'inf', not a whole number >= 0; give --val-split"):
        ModelInfo(model=model.config, extra={"val_split": float("inf")}).held_out_split()
