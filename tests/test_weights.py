"""resnetkit model files round-trip everything needed to use a model; damaged and crafted ones fail clearly (foreign
state dicts: test_state_dict.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from model_states import assert_same_state, with_statistics
from resnetkit import create_model
from resnetkit.config import CIFAR_PREPROCESS, ModelInfo, Preprocess
from resnetkit.models import (WeightFileError, load_model, load_pretrained, load_state_dict_file, read_model_info,
                              save_model)
from resnetkit.models.weights import resolve_weight_path


def test_safetensors_round_trip_keeps_architecture_classes_and_preprocessing(tmp_path):
    model = create_model("resnet20", variant="v2", shortcut="B", num_classes=3, width=0.5).eval()
    path = save_model(model, tmp_path / "m.safetensors", class_names=["cat", "dog", "bird"])
    loaded, info = load_model(path)
    assert info.model == model.config
    assert info.class_names == ["cat", "dog", "bird"]
    assert info.preprocess == CIFAR_PREPROCESS
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert b"pickle" not in path.read_bytes()[:64] and path.read_bytes()[8:9] == b"{"
    assert read_model_info(path).model.arch == "resnet20"


def test_custom_preprocessing_is_stored(tmp_path):
    model = create_model("resnet18", num_classes=2)
    info = ModelInfo(model=model.config, class_names=["a", "b"], preprocess=Preprocess(input_size=160, resize_size=182))
    save_model(model, tmp_path / "m.safetensors", info=info)
    assert read_model_info(tmp_path / "m.safetensors").preprocess.input_size == 160


def test_save_is_atomic_and_keeps_the_previous_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    save_model(create_model("resnet20"), path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("resnetkit.models.weights.save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_model(create_model("resnet20"), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_url_download_path_is_real_and_cached(tmp_path):
    saved = with_statistics(create_model("resnet20")).state_dict()
    torch.save(saved, tmp_path / "w.pth")
    url = (tmp_path / "w.pth").as_uri()
    local = resolve_weight_path(url, cache_dir=tmp_path / "cache")
    assert local.parent == tmp_path / "cache" / "weights" and local.exists()
    assert local.read_bytes() == (tmp_path / "w.pth").read_bytes()
    model = create_model("resnet20")
    assert load_pretrained(model, url, cache_dir=tmp_path / "cache") is model
    assert_same_state(model.state_dict(), saved)
    with pytest.raises(WeightFileError, match="could not download"):
        resolve_weight_path((tmp_path / "absent.pth").as_uri(), cache_dir=tmp_path / "cache")
    # The same file name at another address is other weights, not a cache hit.
    (tmp_path / "other").mkdir()
    torch.save(create_model("resnet20", num_classes=3).state_dict(), tmp_path / "other" / "w.pth")
    other = resolve_weight_path((tmp_path / "other" / "w.pth").as_uri(), cache_dir=tmp_path / "cache")
    assert other != local and load_state_dict_file(other)["fc.weight"].shape[0] == 3
    assert resolve_weight_path(url, cache_dir=tmp_path / "cache") == local


def test_truncated_files_fail_clearly(tmp_path):
    good = save_model(create_model("resnet20"), tmp_path / "good.safetensors")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(WeightFileError, match="cut.safetensors.*truncated"):
        load_model(cut)
    torch.save(create_model("resnet20").state_dict(), tmp_path / "w.pth")
    cut_pth = tmp_path / "cut.pth"
    cut_pth.write_bytes((tmp_path / "w.pth").read_bytes()[:3000])
    with pytest.raises(WeightFileError, match="cut.pth"):
        load_state_dict_file(cut_pth)
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(WeightFileError, match="empty.pth.*truncated or empty"):
        load_state_dict_file(tmp_path / "empty.pth")
    (tmp_path / "notes.pth").write_text("these are not weights at all, just some text")
    with pytest.raises(WeightFileError, match="notes.pth"):
        load_state_dict_file(tmp_path / "notes.pth")
    with pytest.raises(FileNotFoundError, match="absent.safetensors"):
        load_model(tmp_path / "absent.safetensors")


def test_safetensors_without_our_metadata_says_what_to_do(tmp_path):
    saved = with_statistics(create_model("resnet20")).state_dict()
    save_file(saved, tmp_path / "plain.safetensors")
    with pytest.raises(WeightFileError, match="a bare state dict, not a resnetkit model file.*ARCH --weights"):
        load_model(tmp_path / "plain.safetensors")
    model = create_model("resnet20")
    load_pretrained(model, str(tmp_path / "plain.safetensors"))  # the tensors themselves still load
    assert_same_state(model.state_dict(), saved)


def test_class_name_count_must_match_the_head(tmp_path):
    with pytest.raises(ValueError, match="2 class names for a 10-class model"):
        save_model(create_model("resnet20"), tmp_path / "m.safetensors", class_names=["a", "b"])


def test_metadata_is_plain_json(tmp_path):
    from safetensors import safe_open

    path = save_model(create_model("resnet20"), tmp_path / "m.safetensors", class_names=[str(i) for i in range(10)])
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["resnetkit"])
    assert meta["model"]["arch"] == "resnet20" and meta["format_version"] == 1
    assert path == tmp_path / "m.safetensors"  # save_model returns the file it wrote
    assert meta["class_names"] == [str(i) for i in range(10)]
    assert meta["preprocess"]["mean"] == [0.4914, 0.4822, 0.4465]  # CIFAR-10's statistics, the CIFAR default
    assert meta["preprocess"]["std"] == [0.247, 0.2435, 0.2616]


def test_crafted_metadata_claiming_a_huge_network_fails_fast_before_allocating(tmp_path, capsys):
    from safetensors.torch import load_file

    from resnetkit.cli import main

    honest = save_model(create_model("resnet20"), tmp_path / "honest.safetensors")
    meta = json.loads(__import__("safetensors").safe_open(str(honest), "pt").metadata()["resnetkit"])
    meta["model"].update(arch="resnet1202", width=64.0)  # about 19 billion parameters at width 64
    crafted = tmp_path / "crafted.safetensors"
    save_file(load_file(str(honest)), str(crafted), metadata={"resnetkit": json.dumps(meta)})
    assert crafted.stat().st_size < 1_200_000  # the 270 thousand parameters of a ResNet-20
    with torch.device("meta"):
        create_model("resnet20")  # first use of the meta device pays a one-off set-up; not the file's cost
    start = time.perf_counter()
    with pytest.raises(WeightFileError) as failure:
        load_model(crafted)
    assert time.perf_counter() - start < 1.0
    message = str(failure.value)
    assert str(crafted) in message and "resnet1202" in message
    assert "conv1.weight: file (16, 3, 3, 3) vs metadata (16, 3, 3, 3)" not in message  # the stem is 16 in both
    assert "layer1.0.conv1.weight: file (16, 16, 3, 3) vs metadata (1024, 16, 3, 3)" in message
    assert main(["predict", str(crafted), str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "refused before building the network" in err and "Traceback" not in err


def _rewrite(tmp_path: Path, name: str, *, metadata: str | None = None, edit=None,
             tensors=None) -> Path:
    """A copy of an honest ResNet-20 file with its metadata text, its metadata dict (``edit``) or its tensors
    changed: what a damaged or crafted file looks like."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    honest = save_model(create_model("resnet20"), tmp_path / "honest.safetensors", class_names=list("abcdefghij"))
    text = safe_open(str(honest), "pt").metadata()["resnetkit"]
    if edit is not None:
        data = json.loads(text)
        edit(data)
        text = json.dumps(data)
    state = load_file(str(honest))
    if tensors is not None:
        state = {k: tensors(k, v) for k, v in state.items()}
    path = tmp_path / f"{name}.safetensors"
    save_file(state, str(path), metadata={"resnetkit": text if metadata is None else metadata})
    return path


@pytest.mark.parametrize("name, make, words", [
    ("not-json", dict(metadata="{'model': 1"), "not valid JSON"),
    ("a-list", dict(metadata="[1, 2]"), "a JSON list, not an object"),
    ("model-as-text", dict(edit=lambda d: d.update(model="resnet20")), "does not describe a usable model"),
    ("unknown-arch", dict(edit=lambda d: d["model"].update(arch="resnet_nonexistent")), "cannot be built"),
    ("three-names", dict(edit=lambda d: d.update(class_names=["a", "b", "c"])), "3 class names for a 10-class"),
    ("nan", dict(tensors=lambda k, v: v.fill_(float("nan")) if v.is_floating_point() else v), "NaN or infinite"),
    ("integers", dict(tensors=lambda k, v: v.to(torch.int32)), "integers where the network has real numbers"),
    ("float8-nan", dict(tensors=lambda k, v: (v.fill_(float("nan")) if k == "bn1.running_var" else v).to(
        torch.float8_e5m2) if v.is_floating_point() else v), "NaN or infinite"),  # torch.isfinite has no float8
    ("control-name", dict(edit=lambda d: d.update(class_names=["a\nb", *"bcdefghij"])), "holds a control character"),
    ("negative-variance", dict(tensors=lambda k, v: -v if k == "bn1.running_var" else v),
     "BatchNorm variance(s) are negative"),
    ("unknown-filter", dict(edit=lambda d: d["preprocess"].update(interpolation="lanczos9")),
     "interpolation 'lanczos9' is not one of"),
    ("number-names", dict(edit=lambda d: d.update(class_names=list(range(10)))), "class_names must be a list of strings"),
    ("deep-json", dict(metadata="[" * 100_000 + "]" * 100_000), "not valid JSON"),
])
def test_damaged_or_crafted_model_files_are_named_with_what_is_wrong(tmp_path, capsys, name, make, words):
    from resnetkit.cli import main

    path = _rewrite(tmp_path, name, **make)
    with pytest.raises(WeightFileError) as failure:
        load_model(path)
    assert str(path) in str(failure.value) and words in str(failure.value)
    image = tmp_path / "x.png"
    torchvision.io.write_png(torch.zeros(3, 8, 8, dtype=torch.uint8), str(image))
    assert main(["predict", str(path), str(image)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and words in err and "Traceback" not in err and "--debug" not in err


def test_a_pth_checkpoint_given_as_the_model_says_to_name_its_architecture(tmp_path):
    path = tmp_path / "resnet20.pth"
    saved = with_statistics(create_model("resnet20")).state_dict()
    torch.save(saved, path)
    with pytest.raises(WeightFileError, match=r"not a resnetkit model file.*--weights"):
        load_model(path)
    model = create_model("resnet20")
    load_pretrained(model, str(path))  # the way the message gives works
    assert_same_state(model.state_dict(), saved)


def test_save_model_to_a_folder_is_refused_with_a_file_name(tmp_path):
    with pytest.raises(ValueError, match="is a folder; give save_model.. a file name"):
        save_model(create_model("resnet20"), tmp_path)


def test_a_model_file_whose_header_length_starts_with_a_pickle_byte_loads(tmp_path):
    """A safetensors file begins with its header length: when its low byte is 0x80 (a pickle's first byte) the
    file is still read as what it is."""
    model = create_model("resnet20")
    for pad in range(0, 600, 8):
        path = save_model(model, tmp_path / "m.safetensors", class_names=[f"c{i}" for i in range(9)] + ["x" * pad])
        if path.read_bytes()[0] == 0x80:
            break
    else:
        pytest.fail("no padding gave a header length ending in 0x80")
    loaded, info = load_model(path)
    assert info.class_names[-1] == "x" * pad


def test_a_download_cut_in_its_tensors_is_called_truncated_not_a_bare_state_dict(tmp_path):
    good = save_model(create_model("resnet20"), tmp_path / "good.safetensors")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-1000])  # the header is whole, the last tensor is not
    with pytest.raises(WeightFileError, match="cut.safetensors: not a readable .safetensors file.*truncated"):
        load_model(cut)


def test_a_named_pipe_is_refused_instead_of_blocking(tmp_path):
    import os

    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    for load in (load_model, load_state_dict_file):
        with pytest.raises(WeightFileError, match="pipe.safetensors: not a regular file"):
            load(fifo)


def test_weights_that_overflow_give_an_error_not_nan_percent(tmp_path):
    from resnetkit.infer import Predictor

    model = create_model("resnet20")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(1e30)  # finite in the file, infinite after a few layers
    path = save_model(model, tmp_path / "overflow.safetensors")
    [prediction] = Predictor.from_file(path, device="cpu").predict(torch.zeros(3, 32, 32, dtype=torch.uint8))
    assert not prediction.ok and "NaN or infinite" in prediction.error and prediction.labels == []


def test_a_float8_weight_file_loads_into_float32(tmp_path):
    """float8 storage (torch.isfinite and comparisons have no float8 kernels) is checked and loaded as any float."""
    path = _rewrite(tmp_path, "float8", tensors=lambda k, v: v.to(torch.float8_e4m3fn) if v.is_floating_point() else v)
    model, _ = load_model(path)
    assert next(model.parameters()).dtype == torch.float32


def test_save_model_records_the_network_as_it_is_or_refuses_what_it_cannot_describe(tmp_path):
    """A head replaced the torchvision way (`model.fc = nn.Linear(64, 5)`) and a pruned network were saved with the
    metadata of the network as built, and every load then called the file damaged."""
    from torch import nn

    from resnetkit.export.pruning import prune_to_macs

    model = create_model("resnet20")
    model.fc = nn.Linear(64, 5)
    save_model(model, tmp_path / "fc5.safetensors", class_names=list("abcde"))
    loaded, info = load_model(tmp_path / "fc5.safetensors")
    assert loaded.num_classes == 5 and info.class_names == list("abcde")
    pruned, _ = prune_to_macs(create_model("resnet20"), 0.6)
    save_model(pruned.eval(), tmp_path / "pruned.safetensors")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(load_model(tmp_path / "pruned.safetensors")[0](x), pruned(x), atol=1e-5)
    model = create_model("resnet20")
    model.conv1 = nn.Conv2d(1, 16, 3, padding=1, bias=False)  # what no option of resnet20 builds
    with pytest.raises(ValueError, match=r"changed in a way its config cannot describe .*conv1\.weight"):
        save_model(model, tmp_path / "odd.safetensors")
    with pytest.raises(ValueError, match=r"not a FeatureExtractor; save the network it wraps, before features_only"):
        save_model(create_model("resnet20", features_only=True), tmp_path / "f.safetensors")
    assert not (tmp_path / "odd.safetensors").exists() and not (tmp_path / "f.safetensors").exists()
