"""Foreign state dicts (torchvision, timm, Lightning, DDP, compiled, MoCo) load exactly or are refused naming what
is wrong: another architecture, another head, a pickle that runs code, a crafted size."""

from __future__ import annotations

import pickle

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from model_states import assert_same_state, with_statistics
from resnetkit import create_model
from resnetkit.models import WeightFileError, load_pretrained, load_state_dict_file, load_weights
from resnetkit.models.state_dict import model_for_state_dict


def test_torchvision_pth_loads_with_weights_only(tmp_path):
    reference = torchvision.models.resnet18().eval()
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    model = load_pretrained(create_model("resnet18"), str(tmp_path / "resnet18.pth")).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (model(x) - reference(x)).abs().max() <= 1e-5


def test_wrapped_and_ddp_checkpoints_unwrap(tmp_path):
    sd = with_statistics(create_model("resnet20")).state_dict()
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "ckpt.pth")
    loaded = load_state_dict_file(tmp_path / "ckpt.pth")
    assert_same_state(loaded, sd)
    # A network saved after torch.compile (and inside DDP): its names under "_orig_mod." (and "module.").
    torch.save({f"module._orig_mod.{k}": v for k, v in sd.items()}, tmp_path / "compiled.pth")
    assert_same_state(load_state_dict_file(tmp_path / "compiled.pth"), sd)
    save_file({f"_orig_mod.{k}": v.contiguous() for k, v in sd.items()}, tmp_path / "compiled.safetensors")
    assert_same_state(load_state_dict_file(tmp_path / "compiled.safetensors"), sd)
    # A PyTorch Lightning checkpoint (the network is the LightningModule's `model`), and one of an nn.Sequential.
    torch.save({"epoch": 9, "global_step": 90, "state_dict": {f"model.{k}": v for k, v in sd.items()},
                "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.1}]}]}, tmp_path / "lightning.ckpt")
    assert_same_state(load_state_dict_file(tmp_path / "lightning.ckpt"), sd)
    torch.save({f"0.{k}": v for k, v in sd.items()}, tmp_path / "sequential.pth")
    assert_same_state(load_state_dict_file(tmp_path / "sequential.pth"), sd)
    # Only the classifier (all keys under fc.): the network's own name, kept, so the error says what is missing.
    head = {k: v for k, v in sd.items() if k.startswith("fc.")}
    torch.save(head, tmp_path / "head.pth")
    assert set(load_state_dict_file(tmp_path / "head.pth")) == {"fc.weight", "fc.bias"}
    # Two networks in one file (MoCo's encoder_q and encoder_k): nothing is guessed.
    torch.save({**{f"q.{k}": v for k, v in sd.items()}, **{f"k.{k}": v for k, v in sd.items()}}, tmp_path / "two.pth")
    assert {k.split(".")[0] for k in load_state_dict_file(tmp_path / "two.pth")} == {"q", "k"}
    with pytest.raises(WeightFileError, match=r"under 'k\.' and 'q\.': take one network's keys"):
        load_weights(create_model("resnet20"), load_state_dict_file(tmp_path / "two.pth"), source="two.pth")
    torch.save({0: torch.zeros(1), **sd}, tmp_path / "odd-key.pth")  # a key that is no name: refused, no crash
    with pytest.raises(WeightFileError, match="not a state dict of named tensors"):
        load_state_dict_file(tmp_path / "odd-key.pth")


def test_head_size_mismatch_points_to_reset_classifier(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    with pytest.raises(WeightFileError) as e:
        load_pretrained(create_model("resnet18", num_classes=10), str(tmp_path / "r18.pth"))
    msg = str(e.value)
    assert "r18.pth" in msg and "1000 classes" in msg and "reset_classifier" in msg


def test_architecture_mismatch_names_missing_keys(tmp_path):
    torch.save(create_model("resnet18").state_dict(), tmp_path / "r18.pth")
    with pytest.raises(WeightFileError, match="missing from the file.*variant=v1.5"):
        load_pretrained(create_model("resnet34"), str(tmp_path / "r18.pth"))


class _RunsCode:
    def __reduce__(self):
        return (print, ("this pickle ran code",))


def test_pickle_that_runs_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _RunsCode()}, path)
    with pytest.raises(WeightFileError, match="evil.pth.*arbitrary code"):
        load_state_dict_file(path)
    assert "this pickle ran code" not in capsys.readouterr().out
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(_RunsCode()))
    with pytest.raises(WeightFileError, match="raw.pkl"):
        load_state_dict_file(raw)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_timm_state_dict_loads_and_gives_identical_logits(tmp_path, name):
    timm = pytest.importorskip("timm")
    reference = timm.create_model(name, pretrained=False).eval()
    torch.save(reference.state_dict(), tmp_path / f"timm-{name}.pth")
    model = load_pretrained(create_model(name), str(tmp_path / f"timm-{name}.pth")).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (model(x) - reference(x)).abs().max() <= 1e-5


def test_a_classifier_of_the_wrong_rank_is_named_not_an_index_error(tmp_path):
    state = with_statistics(create_model("resnet20")).state_dict()
    state["fc.weight"] = torch.tensor(1.0)  # 0-dim: once 'tuple index out of range'
    torch.save(state, tmp_path / "odd.pth")
    with pytest.raises(WeightFileError, match=r"odd\.pth: fc\.weight has shape \(\), where this network's classifier's is"):
        model_for_state_dict("resnet20", load_state_dict_file(tmp_path / "odd.pth"), source=str(tmp_path / "odd.pth"))


def test_training_from_a_file_whose_classifier_takes_other_features_is_refused_before_building_its_head(tmp_path):
    """A crafted (1,000,000, 0) classifier stores no bytes; building a head of its size for ResNet-50 would have
    allocated 8 GB before the shapes were compared."""
    from resnetkit.config import load_train_config
    from resnetkit.train.run import build_model_for

    state = create_model("resnet20").state_dict()
    state["fc.weight"], state["fc.bias"] = torch.zeros(1_000_000, 0), torch.zeros(1_000_000)
    torch.save(state, tmp_path / "crafted.pth")
    config = load_train_config("cifar10-fast", model="resnet20", pretrained=str(tmp_path / "crafted.pth"))
    with pytest.raises(WeightFileError, match=r"crafted\.pth: fc\.weight has shape \(1000000, 0\), where this "
                                              r"network's classifier's is \(classes, 64\)"):
        build_model_for(config, 10)


def test_random_bytes_are_not_called_a_pickle_that_runs_code(tmp_path):
    noise = tmp_path / "noise.pth"
    noise.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(WeightFileError, match="noise.pth: not a readable PyTorch weight file"):
        load_state_dict_file(noise)


def test_a_saved_view_claiming_a_million_classes_is_refused_before_building(tmp_path):
    from resnetkit.infer import Predictor

    state = create_model("resnet20").state_dict()
    state["fc.weight"] = torch.zeros(1).expand(1_000_000, 64)  # 4 bytes on disk; 256 MB once built
    state["fc.bias"] = torch.zeros(1).expand(1_000_000)
    torch.save(state, tmp_path / "crafted.pth")
    assert (tmp_path / "crafted.pth").stat().st_size < 2_000_000
    with pytest.raises(WeightFileError, match=r"crafted.pth: 2 tensor\(s\) claim more values than the file stores"):
        Predictor.from_name("resnet20", weights=tmp_path / "crafted.pth")


def test_weights_of_another_architecture_are_named_as_such_before_allocating(tmp_path, monkeypatch):

    state = create_model("resnet20").state_dict()
    with pytest.raises(WeightFileError, match="takes 64 features but the model's takes 2048: the weights are for "
                                              "another architecture"):
        model_for_state_dict("resnet50", state, source="r20.pth")
    built = model_for_state_dict("resnet20", with_statistics(create_model("resnet20")).state_dict(), source="x")
    assert built.num_classes == 10 and not any(t.is_meta for t in built.state_dict().values())


def test_a_file_for_another_architecture_is_refused_naming_the_one_it_fits(tmp_path):
    """timm's ResNet-18-D weights given for resnet18, or a ResNet-20 saved with projection shortcuts given for the
    default (option A): the error names the registered network, with options, whose tensors the file holds."""
    timm = pytest.importorskip("timm")
    torch.save(timm.create_model("resnet18d", num_classes=7).state_dict(), tmp_path / "d.pth")
    with pytest.raises(WeightFileError, match=r"the file's tensors fit resnet18d: give that architecture"):
        load_pretrained(create_model("resnet18", num_classes=7), str(tmp_path / "d.pth"))
    torch.save(create_model("resnet20", shortcut="B").state_dict(), tmp_path / "b.pth")
    with pytest.raises(WeightFileError, match=r"fit resnet20 with shortcut='B'"):
        load_pretrained(create_model("resnet20"), str(tmp_path / "b.pth"))
    torch.save(timm.create_model("resnet18d", in_chans=1).state_dict(), tmp_path / "gray.pth")
    with pytest.raises(WeightFileError, match=r"fit resnet18d with in_chans=1: give"):
        load_pretrained(create_model("resnet18"), str(tmp_path / "gray.pth"))
    from resnetkit.models.registry import architectures_fitting

    # Crafted keys: a stage number of 10^10 or 5,000 digits is not read as a count to build.
    assert architectures_fitting({"layer10000000000.0.w": (1,), "layer" + "9" * 5000 + ".0.w": (1,)}) == []
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "odd.pth")  # fits nothing: no suggestion
    with pytest.raises(WeightFileError) as refused:
        load_pretrained(create_model("resnet20"), str(tmp_path / "odd.pth"))
    assert "fit" not in str(refused.value).split("width=")[-1]
