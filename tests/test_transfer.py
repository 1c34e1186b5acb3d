"""Transfer learning: backbones (features_only), discriminative lrs, the two-stage fine-tune and feature files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from torchvision.transforms.functional import to_pil_image

from resnetkit import create_model, list_models, load_model, save_model
from resnetkit.cli import main
from resnetkit.config import load_train_config
from resnetkit.data import load_digits_dataset
from resnetkit.models.features import FeatureExtractor
from resnetkit.train.groups import discriminative_lrs, layer_groups
from resnetkit.train.loop import param_groups

HUGE = {"resnet1202", "plain1202", "resnet1001"}


@pytest.mark.parametrize("name", [n for n in list_models() if n not in HUGE])
def test_features_only_gives_every_stage_with_its_channels_and_stride(name):
    with torch.device("meta"):  # shapes only: every registered network in milliseconds
        backbone = create_model(name, features_only=True)
        stages = len(backbone.body.stage_names)
        maps = backbone(torch.empty(1, 3, 64, 64))
    assert len(maps) == stages == len(backbone.feature_info)
    for fmap, info in zip(maps, backbone.feature_info):
        assert fmap.shape[1] == info["num_chs"]
        assert 64 // fmap.shape[-1] == info["reduction"]


def test_features_only_maps_equal_the_full_network_stages():
    model = create_model("resnet18").eval()
    backbone = FeatureExtractor(create_model("resnet18"), out_indices=(0, 2, 4)).eval()
    backbone.body.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("fc.")})
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        stem, s2, s4 = backbone(x)
        stages = model.forward_stages(x)
    assert torch.equal(s2, stages[1]) and torch.equal(s4, stages[3])
    assert stem.shape == (2, 64, 32, 32) and [f["reduction"] for f in backbone.feature_info] == [2, 8, 32]
    with pytest.raises(ValueError, match="give distinct whole indices from 0"):
        create_model("resnet20", features_only=True, out_indices=(1, 2, 3, 4))  # CIFAR nets have three stages


def test_discriminative_lrs_cover_every_parameter_once_rising_to_the_head():
    model = create_model("resnet50", num_classes=5)
    groups = layer_groups(model)
    assert [name for name, _ in groups] == ["stem+layer1", "layer2", "layer3", "layer4", "head"]
    ids = [id(p) for _, params in groups for p in params]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    lrs = discriminative_lrs(0.01, 100.0, 5)
    assert lrs[0] == pytest.approx(1e-4) and lrs[-1] == pytest.approx(0.01)
    assert all(a < b for a, b in zip(lrs, lrs[1:]))
    opt_groups = param_groups(model, 1e-4, False, lr=0.01, lr_mult=100.0)
    assert sorted({g["lr"] for g in opt_groups}) == pytest.approx(lrs)
    assert sum(len(g["params"]) for g in opt_groups) == len(ids)
    assert all(g["weight_decay"] == 0.0 for g in opt_groups if "no decay" in g["name"])
    with pytest.raises(ValueError, match="lr_mult=0.5 must be >= 1"):
        discriminative_lrs(0.01, 0.5, 3)


def _body(model):
    return {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}


@pytest.fixture
def initial_heads(monkeypatch):
    """The classifier (fc weight and bias) of each stage's model as built, before any training step."""
    import resnetkit.train.run as run

    heads, build = [], run.build_model_for

    def recording(config, num_classes, class_names=None):
        model = build(config, num_classes, class_names)
        heads.append({k: v.detach().clone() for k, v in model.fc.state_dict().items()})
        return model

    monkeypatch.setattr(run, "build_model_for", recording)
    return heads


@pytest.fixture
def start_file(tmp_path):
    path = tmp_path / "start.safetensors"
    model = create_model("resnet20", num_classes=3).eval()
    for m in model.modules():  # non-default statistics, so a change to them is visible
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
    save_model(model, path, class_names=["a", "b", "c"])
    return path


def test_two_stage_finetune_freezes_body_and_bn_first_then_records_everything(tmp_path, start_file, one_thread,
                                                                              initial_heads):
    classes = tmp_path / "names.txt"
    classes.write_text("\n".join(f"digit {i}" for i in range(10)))
    out = tmp_path / "run"
    code = main(["finetune", str(start_file), "digits", "--epochs", "1", "--batch-size", "128", "--amp", "none",
                 "--out-dir", str(out), "--classes", str(classes), "--no-progress", "--no-channels-last"])
    assert code == 0
    start, start_info = load_model(start_file)
    head_only, _ = load_model(out / "stage1-head" / "model.safetensors")
    final, info = load_model(out / "model.safetensors")
    before, after_head, after_all = _body(start), _body(head_only), _body(final)
    assert all(torch.equal(before[k], after_head[k]) for k in before)  # weights and BN statistics untouched
    assert head_only.num_classes == 10 and len(initial_heads) == 2  # one model built per stage
    stage1_start, stage2_start = initial_heads
    assert stage1_start["weight"].shape == (10, 64)  # a fresh 10-way head, not the start model's 3-way one
    assert not torch.equal(stage1_start["weight"], head_only.fc.weight)  # the head-only stage trained it
    assert not torch.equal(stage1_start["bias"], head_only.fc.bias)
    assert torch.equal(stage2_start["weight"], head_only.fc.weight)  # and the full stage began from it
    assert any(not torch.equal(after_head[k], after_all[k]) for k in after_head if k.startswith("conv1"))
    assert info.class_names == [f"digit {i}" for i in range(10)]
    assert info.preprocess.mean == start_info.preprocess.mean  # the start model's normalisation, not the data's
    config = json.loads((out / "config.json").read_text())
    assert config["finetune"]["freeze_epochs"] == 1 and config["finetune"]["lr_mult"] == 100
    assert config["schedule"]["name"] == "onecycle"
    report = (out / "report.md").read_text()
    assert "head only for 1 epoch(s)" in report and "discriminative lrs from 0.0001" in report


def test_finetune_starts_from_a_shipped_pretrained_name(tmp_path, capsys, one_thread):
    """Before: 'resnet20_cifar10: no such weight file, nor a pretrained name' (it was read as a file path)."""
    from resnetkit.models.pretrained import get_weights

    out = tmp_path / "run"
    assert main(["finetune", "resnet20_cifar10", "digits", "--freeze", "--iterations", "2", "--amp", "none",
                 "--out-dir", str(out), "--no-progress"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["arch"] == "resnet20" and json.loads((out / "start.json").read_text()) == {
        "pretrained": "resnet20_cifar10", "sha256": None}  # a name: no file of the user's to identify it by
    model, info = load_model(out / "model.safetensors")
    _, shipped = load_model(get_weights("resnet20_cifar10").local_path())
    assert model.num_classes == 10 and info.preprocess.mean == shipped.preprocess.mean  # its normalisation kept


def test_train_from_a_start_model_keeps_its_statistics_and_heads_other_classes_afresh(tmp_path, one_thread):
    """`train --pretrained resnet20_cifar10` on the digits: the start model's input statistics (as finetune keeps
    them; the data's were used), and a new classifier for the digits' 0-9 although CIFAR-10 has ten classes too."""
    from resnetkit.config import TrainConfig
    from resnetkit.models.pretrained import get_weights
    from resnetkit.train.run import build_model_for, start_run

    shipped, info = load_model(get_weights("resnet20_cifar10").local_path())
    config = start_run(TrainConfig.from_flat({"model": "resnet20", "data": "digits",
                                              "pretrained": "resnet20_cifar10"}))
    assert config.data.mean == tuple(info.preprocess.mean) and config.data.std == tuple(info.preprocess.std)
    assert start_run(TrainConfig.from_flat({"model": "resnet20", "data": "digits", "pretrained": "resnet20_cifar10",
                                            "mean": [0.5] * 3, "std": [0.25] * 3})).data.mean == (0.5,) * 3
    digits = build_model_for(config, 10, [str(i) for i in range(10)])
    assert not torch.equal(digits.fc.weight, shipped.fc.weight)  # a fresh head
    assert torch.equal(digits.conv1.weight, shipped.conv1.weight)  # the trained body
    again = build_model_for(config, 10, list(info.class_names))  # the same classes: trained further, head kept
    assert torch.equal(again.fc.weight, shipped.fc.weight)


def test_a_new_finetune_never_overwrites_one_stopped_between_its_stages(tmp_path, start_file, capsys):
    out = tmp_path / "stopped"
    (out / "stage1-head").mkdir(parents=True)  # what a run killed after its head-only stage leaves
    (out / "start.safetensors").write_bytes(start_file.read_bytes())
    (out / "start.json").write_text('{"pretrained": "the original"}')
    assert main(["finetune", str(start_file), "digits", "--epochs", "1", "--out-dir", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "already holds a run's results" in err and "start.safetensors" in err and "pass --resume" in err
    assert (out / "start.json").read_text() == '{"pretrained": "the original"}'
    # --resume: with another start model, into a training run's folder or into one holding nothing, refused before
    # any stage trains (each wrote its head stage first, then refused or trained from the start).
    assert main(["finetune", "resnet20_cifar10", "digits", "--epochs", "1", "--out-dir", str(out), "--resume",
                 "--no-progress"]) == 2
    assert "is a fine-tune of the original, not of resnet20_cifar10" in capsys.readouterr().err
    # The same file spelled another way (another working folder, a copy on another machine): known by its digest.
    from resnetkit.files import file_sha256
    from resnetkit.train.finetune import check_same_start

    copy = tmp_path / "elsewhere" / "start.safetensors"
    copy.parent.mkdir()
    copy.write_bytes(start_file.read_bytes())
    (out / "start.json").write_text(json.dumps({"pretrained": "../m.safetensors", "sha256": file_sha256(start_file)}))
    check_same_start(out, str(copy))
    with pytest.raises(ValueError, match=r"is a fine-tune of \.\./m\.safetensors"):
        check_same_start(out, "resnet20_cifar10")
    (out / "start.json").write_text('{"pretrained": "the original"}')
    trained = tmp_path / "trained"
    trained.mkdir()
    (trained / "checkpoint.pt").write_bytes(b"a training run's")
    assert main(["finetune", str(start_file), "digits", "--out-dir", str(trained), "--resume", "--no-progress"]) == 2
    assert "holds a training run, not a fine-tune" in capsys.readouterr().err
    assert main(["finetune", str(start_file), "digits", "--out-dir", str(tmp_path / "typo"), "--resume"]) == 2
    assert "holds no fine-tune to continue" in capsys.readouterr().err
    assert sorted(p.name for p in trained.iterdir()) == ["checkpoint.pt"] and not (tmp_path / "typo").exists()


def test_a_refused_finetune_leaves_nothing_that_blocks_the_corrected_command(tmp_path, start_file, capsys):
    """Too few images for the batch size is refused once training starts; what the refused run wrote (start model,
    start.json, the head stage's folder) goes with it, so the corrected command runs in the same --out-dir."""
    out = tmp_path / "ft"
    assert main(["finetune", str(start_file), "digits", "--batch-size", "4096", "--epochs", "1", "--out-dir",
                 str(out), "--no-progress"]) == 2
    assert "batch(es) of 4096" in capsys.readouterr().err
    assert not out.exists()  # the folder the refused command created goes too
    assert main(["finetune", str(start_file), "digits", "--freeze", "--iterations", "1", "--amp", "none",
                 "--out-dir", str(out), "--no-progress"]) == 0


def test_linear_probe_trains_only_the_head(tmp_path, start_file, one_thread, initial_heads):
    # A random body's features are nearly the same for every image, and the default lr 0.01 made SGD on the head
    # diverge in a probe of this test; at lr 0.001 a working probe must lower the head's loss on those features.
    out = tmp_path / "probe"
    assert main(["finetune", str(start_file), "digits", "--freeze", "--epochs", "1", "--batch-size", "128",
                 "--lr", "0.001", "--amp", "none", "--out-dir", str(out), "--no-progress"]) == 0
    start, _ = load_model(start_file)
    probe, info = load_model(out / "model.safetensors")
    before, after = _body(start), _body(probe)
    assert all(torch.equal(before[k], after[k]) for k in before)
    # The head trained: it moved from the head the run built, and its training loss on the frozen features fell.
    [initial] = initial_heads
    assert initial["weight"].shape == probe.fc.weight.shape == (10, 64)
    assert (probe.fc.weight - initial["weight"]).abs().max() > 1e-2  # far more than weight decay alone moves it
    digits = load_digits_dataset("train")
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (info.preprocess.mean, info.preprocess.std))
    with torch.no_grad():
        features = probe.eval().forward_head(probe.forward_features((digits.images / 255 - mean) / std),
                                             pre_logits=True)
        loss_before = torch.nn.functional.cross_entropy(features @ initial["weight"].T + initial["bias"],
                                                        digits.labels)
        loss_after = torch.nn.functional.cross_entropy(probe.fc(features), digits.labels)
    assert loss_after < loss_before - 0.3, (loss_before, loss_after)
    assert "linear probe" in (out / "report.md").read_text()
    assert not (out / "stage1-head").exists()


def test_finetune_refuses_bad_start_models_in_one_line(tmp_path, capsys):
    state = tmp_path / "tv.pth"
    torch.save(create_model("resnet18").state_dict(), state)
    assert main(["finetune", str(state), "digits", "--out-dir", str(tmp_path / "a")]) == 2
    assert "a bare state dict, not a resnetkit model file" in capsys.readouterr().err
    assert main(["finetune", "resnet18", "digits", "--out-dir", str(tmp_path / "b")]) == 2
    assert "give its weights with --weights" in capsys.readouterr().err
    assert main(["finetune", str(tmp_path / "missing.safetensors"), "digits", "--out-dir", str(tmp_path / "c")]) == 2
    classes = tmp_path / "two.txt"
    classes.write_text("x\ny\n")
    config = load_train_config("finetune", data="digits", classes=str(classes))
    from resnetkit.train.run import class_names_for

    with pytest.raises(ValueError, match="2 class names, but the data has 10 classes"):
        class_names_for(config.data.classes, [str(i) for i in range(10)])
    # the folders' own names in another order would swap the labels silently; a name twice makes two classes one
    classes.write_text("frog\ndog\ncat\n")
    with pytest.raises(ValueError, match=r"another order \('frog' is class 2 of the data, line 1.*cat, dog, frog"):
        class_names_for(str(classes), ["cat", "dog", "frog"])
    classes.write_text("cat\ndog\ncat\n")
    with pytest.raises(ValueError, match=r"\['cat'\] given twice"):
        class_names_for(str(classes), ["cat", "dog", "frog"])
    classes.write_text("Katze\nHund\nFrosch\n")  # a translation: names replace the sorted folder names
    assert class_names_for(str(classes), ["cat", "dog", "frog"]) == ["Katze", "Hund", "Frosch"]


@pytest.fixture
def image_tree(tmp_path):
    root = tmp_path / "tree"
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    (root / "dog" / "broken.png").write_bytes(b"not a png")
    return root


def test_features_command_writes_features_files_and_labels(tmp_path, image_tree, resnet20_file, capsys, caplog):
    out = tmp_path / "feats.safetensors"
    assert main(["features", str(resnet20_file), str(image_tree), "--out", str(out), "--batch-size", "4"]) == 0
    assert "skipped 1 unreadable image" in capsys.readouterr().out
    broken = str(image_tree / "dog" / "broken.png")
    assert f"skipped {broken}: " in caplog.text and f"{broken}: {broken}" not in caplog.text  # named once
    with safe_open(str(out), framework="np") as f:
        features, labels, meta = f.get_tensor("features"), f.get_tensor("labels"), f.metadata()
    files = json.loads(meta["files"])
    assert features.shape == (6, 64) and labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert json.loads(meta["class_names"]) == ["cat", "dog"] and all("broken" not in f for f in files)
    # The same rows as the Predictor's own pipeline gives, in file order.
    from resnetkit.infer import Predictor

    predictor = Predictor.from_file(resnet20_file)
    image = predictor.transform(Image.open(files[4]).convert("RGB")).unsqueeze(0)
    with torch.no_grad():
        expected = predictor.model.forward_head(predictor.model.forward_features(image), pre_logits=True)
    assert np.allclose(features[4], expected[0].numpy(), atol=1e-5)

    npy = tmp_path / "stage2.npy"
    assert main(["features", str(resnet20_file), str(image_tree), "--out", str(npy), "--stage", "2"]) == 0
    assert np.load(npy).shape == (6, 32, 16, 16)  # ResNet-20's second stage: 32 channels at stride 2 of 32 px
    side = json.loads(npy.with_suffix(".json").read_text())
    assert side["labels"] == [0, 0, 0, 1, 1, 1] and side["stage"] == 2 and len(side["files"]) == 6
    digits = tmp_path / "digits.safetensors"  # a dataset by name, as train and eval read it: its test split
    assert main(["features", str(resnet20_file), "digits", "--split", "test", "--out", str(digits)]) == 0
    with safe_open(str(digits), framework="np") as f:
        features, labels, meta = f.get_tensor("features"), f.get_tensor("labels"), f.metadata()
    from resnetkit.data import load_image_dataset

    test = load_image_dataset("digits", split="test")
    assert features.shape == (len(test), 64) and labels.tolist() == test.labels.tolist()
    assert json.loads(meta["class_names"]) == test.class_names and json.loads(meta["files"])[3] == "digits#3"
    image = predictor.transform(to_pil_image(test.images[3])).unsqueeze(0)
    with torch.no_grad():
        expected = predictor.model.forward_head(predictor.model.forward_features(image), pre_logits=True)
    assert np.allclose(features[3], expected[0].numpy(), atol=1e-5)
    assert main(["features", str(resnet20_file), str(image_tree), "--out", str(tmp_path / "x.csv")]) == 2
    assert main(["features", str(resnet20_file), str(image_tree), "--out", str(npy), "--stage", "4"]) == 2


@pytest.mark.parametrize("record", [None, "{}", "[1]", '{"pretrained": 3}', "not json", '"resnet50.pth"'])
def test_a_resumed_finetunes_damaged_start_record_costs_only_its_report_line(tmp_path, record):
    from resnetkit.train.finetune import _recorded_origin

    path = tmp_path / "start.json"
    if record is not None:
        path.write_text(record)
    assert _recorded_origin(path, default="run/start.safetensors") == ("run/start.safetensors", None)
    path.write_text('{"pretrained": "resnet50.pth"}')
    assert _recorded_origin(path, default="run/start.safetensors") == ("resnet50.pth", None)
    path.write_text('{"pretrained": "resnet50.pth", "sha256": "ab12"}')
    assert _recorded_origin(path, default="run/start.safetensors") == ("resnet50.pth", "ab12")


def test_features_only_takes_timms_count_refuses_fractions_and_stray_indices_and_checkpoints(tmp_path, monkeypatch):
    backbone = create_model("resnet20", features_only=True, out_indices=2)  # timm: an int n is the last n maps
    assert backbone.out_indices == (2, 3)
    assert create_model("resnet20", features_only=True, out_indices=np.array([1, 2])).out_indices == (1, 2)
    for bad in ((1.7,), (True,), 9, 0, "12"):
        with pytest.raises(ValueError, match="give distinct whole indices"):
            create_model("resnet20", features_only=True, out_indices=bad)
    with pytest.raises(ValueError, match="give features_only=True too"):  # a classifier was returned silently
        create_model("resnet20", out_indices=(1,))
    import torch.utils.checkpoint as checkpointing

    calls, sequential = [], checkpointing.checkpoint_sequential
    monkeypatch.setattr(checkpointing, "checkpoint_sequential", lambda *a, **k: calls.append(1) or sequential(*a, **k))
    backbone.set_grad_checkpointing()  # the body's stages run through its checkpointing (they ran it by hand)
    maps = backbone(torch.randn(2, 3, 32, 32, requires_grad=True))
    sum(m.sum() for m in maps).backward()
    assert len(calls) == 3  # every stage up to the last map wanted
    # A headless network takes a standard file's body (timm drops the classifier for num_classes=0).
    save = create_model("resnet20")
    torch.save(save.state_dict(), tmp_path / "full.pth")
    from resnetkit.models import load_pretrained

    headless = load_pretrained(create_model("resnet20", num_classes=0), str(tmp_path / "full.pth"))
    assert torch.equal(headless.conv1.weight, save.conv1.weight) and headless.num_classes == 0


def test_a_run_from_a_start_model_resumes_with_the_statistics_it_recorded(tmp_path):
    """A `train --pretrained` run begun before start models kept their statistics recorded the data's (mean ());
    resuming it must not switch to the start model's, which the resume check refused as another configuration."""
    from resnetkit.config import TrainConfig
    from resnetkit.train.checkpoint import CHECKPOINT_KEYS, save_checkpoint
    from resnetkit.train.run import start_run

    flat = {"model": "resnet20", "data": "digits", "pretrained": "resnet20_cifar10", "out_dir": str(tmp_path)}
    earlier = TrainConfig.from_flat(flat)
    state = {key: {} for key in CHECKPOINT_KEYS}
    state.update(config=earlier.to_dict(), epoch=0, step=1, history=[])
    save_checkpoint(state, tmp_path / "checkpoint.pt")
    resumed = start_run(TrainConfig.from_flat({**flat, "resume": True}))
    assert resumed.data.mean == () and resumed.data.std == ()
    assert start_run(TrainConfig.from_flat(flat)).data.mean != ()  # a new run: the start model's
