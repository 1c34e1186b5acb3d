"""`resnetkit reproduce cifar10`: the study's plan, its measurements, and the whole command on the digits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from resnetkit import create_model
from resnetkit.cli import main
from resnetkit.config import StudyConfig
from resnetkit.reproduce import gradient_norms, layer_response_std, plan_runs, response_layers, train_config_for
from resnetkit.reproduce.analysis import ANALYSIS_VERSION, PROBE_IMAGES, probe_indices


def test_plan_orders_runs_and_filters_them_with_only():
    study = StudyConfig(depths=(20, 56), plain=True, seeds=2)
    names = [r.name for r in plan_runs(study)]
    assert names == ["resnet20-s0", "plain20-s0", "resnet56-s0", "plain56-s0",
                     "resnet20-s1", "plain20-s1", "resnet56-s1", "plain56-s1"]
    only = StudyConfig(depths=(20, 56), plain=True, seeds=2, only=("plain*", "resnet56-s1"))
    assert [r.name for r in plan_runs(only)] == ["plain20-s0", "plain56-s0", "plain20-s1", "resnet56-s1", "plain56-s1"]
    with pytest.raises(ValueError, match="matches none"):
        plan_runs(StudyConfig(depths=(20,), only=("resnet32",)))
    with pytest.raises(ValueError, match="not CIFAR ResNet depths"):
        plan_runs(StudyConfig(depths=(20, 50)))


def test_paper_schedule_scales_iterations_and_milestones_and_warms_up_the_deep_nets(tmp_path):
    study = StudyConfig(out_dir=str(tmp_path), depths=(20, 110), epochs_scale=0.1)
    shallow, deep = (train_config_for(study, run) for run in plan_runs(study))
    assert (shallow.schedule.iterations, tuple(shallow.schedule.milestones)) == (6400, (3200, 4800))
    assert (shallow.optim.lr, shallow.optim.batch_size, shallow.optim.weight_decay, shallow.data.val_split) == \
        (0.1, 128, 1e-4, 5000)
    assert shallow.schedule.warmup == 0 and (deep.schedule.warmup, deep.schedule.warmup_lr) == (400, 0.01)
    assert shallow.run.out_dir == str(tmp_path / "resnet20-s0") and shallow.run.eval_every == 1
    assert not shallow.run.resume
    fast = train_config_for(StudyConfig(schedule="fast", epochs_scale=0.5), plan_runs(StudyConfig(depths=(20,)))[0])
    assert fast.schedule.epochs == 13 and fast.schedule.name == "onecycle"
    assert fast.run.amp == "auto"  # the recipe's precision unless the study names one
    long = train_config_for(StudyConfig(schedule="fast", epochs=80, amp="none", compile=True),
                            plan_runs(StudyConfig(depths=(56,)))[0])
    assert (long.schedule.epochs, long.run.amp, long.run.compile, long.model.arch) == (80, "none", True, "resnet56")


def test_study_options_that_cannot_apply_are_refused():
    with pytest.raises(ValueError, match="fast schedule only"):
        StudyConfig(schedule="paper", epochs=80)
    with pytest.raises(ValueError, match="give one length"):
        StudyConfig(schedule="fast", epochs=80, epochs_scale=0.5)
    with pytest.raises(ValueError, match="amp='fp32'"):
        StudyConfig(schedule="fast", amp="fp32")


def test_responses_are_taken_after_bn_before_the_addition_and_gradients_leave_the_model_untouched():
    torch.manual_seed(0)
    model = create_model("resnet20")
    points = response_layers(model)
    assert len(points) == 19 and points[0][0] == "bn1" and points[1][0] == "layer1.0.bn1" and \
        points[-1][0] == "layer3.2.bn2"
    assert all(isinstance(m, torch.nn.BatchNorm2d) for _, m in points)
    preact = response_layers(create_model("resnet20", variant="v2"))
    assert len(preact) == 19 and all(isinstance(m, torch.nn.Conv2d) for _, m in preact)
    deep = [name for name, _ in response_layers(create_model("resnet20", shortcut="D", num_classes=10))][:2]
    assert [name for name, _ in response_layers(create_model("resnet18d"))][:4] == [
        "conv1.1", "conv1.4", "bn1", "layer1.0.bn1"]  # a deep stem: each 3x3's own BN, the last one's is bn1
    assert deep == ["bn1", "layer1.0.bn1"]

    images, labels = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    stds = layer_response_std(model, images)
    # An eval-mode BN at initialisation is the identity: the stem's response std is the stem conv's output std.
    assert len(stds) == 19 and stds[0] == pytest.approx(float(model.conv1(images).detach().std()), rel=1e-5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    norms = gradient_norms(model, images, labels)
    assert len(norms) == 19 and all(n > 0 for n in norms)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics too
    assert all(p.grad is None for p in model.parameters())


def _study_args(out, *extra):
    return ["reproduce", "cifar10", "--data", "digits", "--out", str(out), "--depths", "20", "32", "--plain",
            "--epochs-scale", "0.0005", "--val-split", "100", "--no-progress", *extra]


def test_the_whole_study_on_the_digits_writes_every_table_and_figure_and_resumes(tmp_path, monkeypatch, capsys,
                                                                                   caplog):
    out = tmp_path / "study"
    # Kill the plain-32 run in its second epoch: the study stops, with the finished runs' report written.
    from resnetkit.data.loader import InMemoryLoader

    real_iter = InMemoryLoader.__iter__

    def killed(self):
        for i, batch in enumerate(real_iter(self)):
            if self.epoch == 2 and i == 2 and self.augment is not None and "plain32" in killed.run:
                raise KeyboardInterrupt
            yield batch

    import resnetkit.reproduce.study as study_module

    real_training = study_module.run_training

    def remember_run(config):
        killed.run = config.run.out_dir
        return real_training(config)

    monkeypatch.setattr(InMemoryLoader, "__iter__", killed)
    monkeypatch.setattr(study_module, "run_training", remember_run)
    assert main(_study_args(out)) == 130  # Ctrl-C: one line and status 130, the checkpoint kept
    assert (out / "plain32-s0" / "checkpoint.pt").exists() and not (out / "plain32-s0" / "analysis.json").exists()
    assert json.loads((out / "report.json").read_text())["rows"][0]["network"] == "plain-20"
    finished = {p: (out / p / "analysis.json").stat().st_mtime_ns for p in ("resnet20-s0", "plain20-s0", "resnet32-s0")}

    # The killed run resumes only with its own settings, and a refused command leaves the study's record as it was.
    record = (out / "study.json").read_text()
    capsys.readouterr()
    assert main([*_study_args(out, "--only", "plain32"), "--val-split", "200"]) == 2
    assert "was written by a different configuration (val_split: 100 -> 200)" in capsys.readouterr().err
    assert (out / "study.json").read_text() == record

    # The same command again: finished runs are skipped, the killed one resumes from its checkpoint.
    monkeypatch.setattr(InMemoryLoader, "__iter__", real_iter)
    capsys.readouterr()
    assert main(_study_args(out)) == 0
    assert all((out / p / "analysis.json").stat().st_mtime_ns == t for p, t in finished.items())
    epochs = [json.loads(line)["epoch"] for line in (out / "plain32-s0" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) == 4  # 32 iterations, 10 per epoch (1,337 images, batch 128)

    report = json.loads((out / "report.json").read_text())
    assert [r["network"] for r in report["rows"]] == ["plain-20", "plain-32", "resnet-20", "resnet-32"]
    resnet20 = report["rows"][2]
    assert resnet20["paper_error"] == 8.75 and resnet20["params"] == 269_722 and resnet20["iterations"] == 32
    assert 0 <= resnet20["val_error"] <= 1 and 0 <= resnet20["test_error"] <= 1  # digits have a test split
    run = next(r for r in report["runs"] if r["name"] == "plain32-s0")
    assert len(run["response_std"]) == 31 and len(run["grad_norm_init"]) == 31 == len(run["grad_norm_trained"])
    assert len(report["verdicts"]) == 2
    markdown = (out / "report.md").read_text()
    assert "| resnet-20 | 0.27M | 8.75 |" in markdown and "x 0.0005" in markdown and "Degradation" in markdown
    for figure in ("figure6.png", "figure7.png", "gradient_flow.png"):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({figure})" in markdown

    # A finished run is never silently reused for a different study.
    assert main(_study_args(out, "--schedule", "fast")) == 2
    assert "holds a finished run with other settings" in capsys.readouterr().err

    # An analysis of an older version (the probe was the first 500 held-out images: one class) is measured again
    # from the trained model, also for a carried run whose checkpoint was not kept; nothing is retrained.
    old = json.loads((out / "resnet32-s0" / "analysis.json").read_text())
    del old["version"]
    (out / "resnet32-s0" / "analysis.json").write_text(json.dumps(old))
    (out / "resnet32-s0" / "checkpoint.pt").unlink()
    model_time = (out / "resnet32-s0" / "model.safetensors").stat().st_mtime_ns
    with caplog.at_level("INFO", logger="resnetkit.reproduce.study"):
        assert main(_study_args(out)) == 0
    assert "resnet32-s0: finished earlier, measured again" in caplog.text
    again = json.loads((out / "resnet32-s0" / "analysis.json").read_text())
    assert again["version"] == ANALYSIS_VERSION and again["iterations"] == old["iterations"] == 32
    assert (out / "resnet32-s0" / "model.safetensors").stat().st_mtime_ns == model_time
    assert again["val_error"] == old["val_error"] and len(again["response_std"]) == len(old["response_std"])


def test_the_probe_images_are_drawn_from_every_class_of_a_held_out_set_listed_class_by_class():
    """The held-out indices come in file order, class by class: the first 500 of CIFAR-10's 5,000 were one class."""
    labels = torch.arange(10).repeat_interleave(500)
    counts = torch.bincount(labels[probe_indices(len(labels))], minlength=10)
    assert counts.sum() == PROBE_IMAGES and counts.min() >= 25, counts.tolist()
    assert torch.equal(probe_indices(len(labels)), probe_indices(len(labels)))  # the same for every network
    assert torch.equal(probe_indices(300), torch.arange(300))  # fewer than 500: all of them


def test_a_run_another_process_is_on_is_skipped_and_a_dead_ones_claim_is_taken_over(tmp_path, caplog):
    import subprocess
    import sys

    from resnetkit.files import _owner, claim
    from resnetkit.reproduce.study import run_study

    study = StudyConfig(data="digits", out_dir=str(tmp_path), depths=(20,), schedule="fast", epochs=1,
                        val_split=100)
    (tmp_path / "resnet20-s0.lock").write_text(_owner())  # a live process of this host: this one
    with caplog.at_level("INFO", logger="resnetkit.reproduce.study"):
        run_study(study)
    assert "resnet20-s0: skipped, another process on this machine is on it (pid" in caplog.text
    assert not (tmp_path / "resnet20-s0").exists() and (tmp_path / "resnet20-s0.lock").exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = tmp_path / "other.lock"
    lock.write_text(_owner().split("p")[0] + "p" + dead.stdout.strip())
    with claim(lock) as holder:
        assert holder is None and lock.read_text() == _owner()
    assert not lock.exists()
    lock.write_text("")  # a process still writing its name: held for a few seconds
    with claim(lock) as holder:
        assert holder == "a process that is starting"


def test_an_unfinished_fast_run_is_not_resumed_with_another_length(tmp_path):
    """train --resume may lengthen a run (the one-cycle schedule is stretched); a study may not: its report would
    mix lengths under one header (the fast schedule has no milestones to catch it)."""
    from resnetkit.reproduce.study import _check_same_plan

    study = StudyConfig(data="digits", out_dir=str(tmp_path), depths=(20,), schedule="fast", epochs=1)
    (tmp_path / "config.json").write_text(json.dumps(train_config_for(study, plan_runs(study)[0]).to_dict()))
    longer = StudyConfig(data="digits", out_dir=str(tmp_path), depths=(20,), schedule="fast", epochs=3)
    with pytest.raises(ValueError, match=r"holds an unfinished run with other settings \(epochs: 1 -> 3\)"):
        _check_same_plan(tmp_path / "config.json", train_config_for(longer, plan_runs(longer)[0]), finished=False)


def test_a_finished_run_recorded_before_a_new_train_field_or_with_another_path_spelling_still_counts(tmp_path,
                                                                                                     monkeypatch):
    from resnetkit.reproduce.study import _check_same_plan

    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    study = StudyConfig(data=str(tmp_path / "data"), out_dir=str(tmp_path / "study"), depths=(20,))
    config = train_config_for(study, plan_runs(study)[0])
    recorded = config.to_flat()  # as runs were recorded before TrainConfig had sections
    del recorded["optimizer"]  # written by a version without the field: it had its default then
    recorded["data"] = "data"  # the same folder, given relative to where the study ran
    path = tmp_path / "config.json"
    path.write_text(json.dumps(recorded))
    _check_same_plan(path, config)
    recorded["lr"] = 0.2
    path.write_text(json.dumps(recorded))
    with pytest.raises(ValueError, match=r"other settings \(lr: 0.2 -> 0.1\)"):
        _check_same_plan(path, config)


def test_a_refused_study_command_leaves_its_record_as_it_was(tmp_path, capsys):
    from resnetkit.cli import main

    out = tmp_path / "study"
    out.mkdir()
    (out / "study.json").write_text('{"the": "record"}')
    for bad in (["--depths", "21"], ["--only", "zzz"], ["--data", str(tmp_path / "nowhere")]):
        assert main(["reproduce", "cifar10", "--data", "digits", "--out", str(out), *bad]) == 2
        capsys.readouterr()
        assert (out / "study.json").read_text() == '{"the": "record"}'
        assert sorted(p.name for p in out.iterdir()) == ["study.json"]  # no run folder begun either
    (tmp_path / "file").write_text("")
    assert main(["reproduce", "cifar10", "--data", "digits", "--out", str(tmp_path / "file")]) == 2
    assert "--out" in capsys.readouterr().err
    # A training run's folder, or an evaluation's: its report is not replaced by the study's.
    for name, content in (("report.json", '{"title": "eval", "history": []}'), ("model.safetensors", "model")):
        other = tmp_path / f"other-{name}"
        other.mkdir()
        (other / name).write_text(content)
        assert main(["reproduce", "cifar10", "--data", "digits", "--out", str(other)]) == 2
        assert f"holds another command's results ({name}" in capsys.readouterr().err
        assert sorted(p.name for p in other.iterdir()) == [name] and (other / name).read_text() == content


def test_a_run_finished_but_not_analysed_still_counts_only_with_its_own_settings(tmp_path):
    """A run killed while it was being analysed is trained: continuing with other settings is refused, not "done"
    with the report stating settings the run never had."""
    from resnetkit.reproduce.study import run_study

    study = StudyConfig(data="digits", out_dir=str(tmp_path), depths=(20,), schedule="fast", epochs=1)
    run_dir = Path(train_config_for(study, plan_runs(study)[0]).run.out_dir)
    run_dir.mkdir(parents=True)
    (run_dir / "model.safetensors").write_text("trained")
    (run_dir / "config.json").write_text(json.dumps(train_config_for(study, plan_runs(study)[0]).to_dict()))
    longer = StudyConfig(data="digits", out_dir=str(tmp_path), depths=(20,), schedule="fast", epochs=3)
    with pytest.raises(ValueError, match=r"holds a finished run with other settings \(epochs: 1 -> 3\)"):
        run_study(longer)


@pytest.mark.parametrize("damage", ["", "garbage", "[]", '{"optim": "x"}'], ids=["empty", "not-json", "list", "bad"])
def test_a_finished_runs_damaged_record_is_named_with_what_to_do(tmp_path, damage):
    """Before: JSONDecodeError / "'list' object has no attribute 'items'", naming no file."""
    from resnetkit.reproduce.study import _check_same_plan

    study = StudyConfig(data="digits", out_dir=str(tmp_path), depths=(20,))
    (tmp_path / "config.json").write_text(damage)
    with pytest.raises(ValueError, match=r"config\.json: the finished run's settings cannot be read \(.*\); restore "
                                         r"the file, or delete the folder .* to train that run again"):
        _check_same_plan(tmp_path / "config.json", train_config_for(study, plan_runs(study)[0]))
