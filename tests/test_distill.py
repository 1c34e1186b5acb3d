"""Knowledge distillation: the loss, and a student that learns from a teacher's outputs alone."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from resnetkit import create_model, save_model
from resnetkit.cli import main
from resnetkit.train.distill import distillation_loss


def test_the_loss_mixes_the_labels_and_the_softened_teacher():
    torch.manual_seed(0)
    student, teacher, labels = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    hard = F.cross_entropy(student, labels)
    assert torch.equal(distillation_loss(hard, student, teacher, alpha=0.0, temperature=4.0), hard)
    # A student that already outputs the teacher's logits pays nothing for the soft part.
    assert distillation_loss(hard, teacher, teacher, alpha=1.0, temperature=4.0).abs() < 1e-6
    t = 2.0
    expected = 0.3 * hard + 0.7 * t * t * (F.softmax(teacher / t, 1) * (F.log_softmax(teacher / t, 1)
                                                                          - F.log_softmax(student / t, 1))).sum(1).mean()
    assert torch.allclose(distillation_loss(hard, student, teacher, alpha=0.7, temperature=t), expected, atol=1e-6)


def test_a_student_learns_the_digits_from_the_teacher_alone(tmp_path):
    assert main(["train", "--recipe", "demo", "--epochs", "4", "--amp", "none", "--out-dir", str(tmp_path / "teacher"),
                 "--no-progress"]) == 0
    teacher = tmp_path / "teacher" / "model.safetensors"
    # alpha 1: the labels get no weight, so everything the student knows comes from the teacher's outputs.
    # (chance is 10%; 4 epochs from the teacher alone gave 82% here)
    assert main(["train", "--recipe", "demo", "--epochs", "4", "--amp", "none", "--teacher", str(teacher),
                 "--distill-alpha", "1.0", "--out-dir", str(tmp_path / "student"), "--no-progress"]) == 0
    report = json.loads((tmp_path / "student" / "report.json").read_text())
    assert report["top1"] >= 0.6 and report["config"]["optim"]["teacher"] == str(teacher)


def test_a_teacher_of_other_classes_is_refused_before_training(tmp_path, capsys):
    other = save_model(create_model("resnet20", num_classes=3), tmp_path / "three.safetensors",
                       class_names=["a", "b", "c"])
    assert main(["train", "--recipe", "demo", "--teacher", str(other), "--out-dir", str(tmp_path / "run"),
                 "--no-progress"]) == 2
    assert "same classes" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    # Same classes, but made for other inputs (32-pixel CIFAR statistics, not the 16-pixel digits): refused.
    digits_names = [str(d) for d in range(10)]
    other_inputs = save_model(create_model("resnet20"), tmp_path / "imagenet.safetensors",
                                     class_names=digits_names)
    assert main(["train", "--recipe", "demo", "--teacher", str(other_inputs), "--out-dir",
                 str(tmp_path / "run2"), "--no-progress"]) == 2
    assert "--mean/--std" in capsys.readouterr().err
    assert main(["train", "--recipe", "demo", "--distill-alpha", "2", "--out-dir", str(tmp_path / "run3")]) == 2
    assert "distill_alpha=2.0" in capsys.readouterr().err
