"""timm's weights on the Hugging Face Hub by timm's spelling (``hf-hub:timm/NAME``), downloaded over real HTTP from a
local server standing in for the Hub ($HF_ENDPOINT), in the layout timm's own ``save_for_hf`` writes."""

from __future__ import annotations

import functools
import http.server
import json
import threading

import pytest
import torch

from resnetkit.models import load_model
from resnetkit.models.state_dict import WeightFileError

timm = pytest.importorskip("timm")


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A local HTTP server over ``tmp_path/hub`` as $HF_ENDPOINT, and a fresh weight cache."""
    root = tmp_path / "hub"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("RESNETKIT_CACHE", str(tmp_path / "cache"))
    yield root
    server.shutdown()


def _publish(root, repo: str, model: torch.nn.Module, **options) -> None:
    from timm.models import _hub

    _hub.save_for_hf(model, str(root / repo / "resolve" / "main"), **options)


def _timm(name: str, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, **options).eval()
    with torch.no_grad():  # trained-looking BatchNorm statistics, so the comparison is not of identities
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model


def test_a_timm_hub_repository_loads_with_identical_logits_and_timms_preprocessing(hub):
    reference = _timm("resnet18d")
    _publish(hub, "timm/resnet18d.test_in1k", reference, safe_serialization=True)
    model, info = load_model("hf-hub:timm/resnet18d.test_in1k")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    cfg = reference.pretrained_cfg  # resnet18d's default: 224, crop 0.875, bicubic
    assert (info.preprocess.input_size, info.preprocess.resize_size) == (224, int(224 / cfg["crop_pct"]))
    assert info.preprocess.interpolation == cfg["interpolation"] and info.preprocess.mean == tuple(cfg["mean"])
    assert len(info.class_names) == 1000 and info.class_names[0] == "tench"  # ImageNet's, for 1,000 classes
    assert info.model.arch == "resnet18d" and info.extra["weights"] == "hf-hub:timm/resnet18d.test_in1k"


def test_label_names_in_the_config_and_an_older_repository_with_only_pytorch_model_bin(hub):
    reference = _timm("resnet18", num_classes=3)
    _publish(hub, "someone/three", reference, model_config={"label_names": ["ant", "bee", "cow"]})  # .bin only
    model, info = load_model("hf-hub:someone/three")
    assert info.class_names == ["ant", "bee", "cow"] and model.num_classes == 3
    with torch.no_grad():
        assert torch.equal(model(torch.ones(1, 3, 32, 32)), reference(torch.ones(1, 3, 32, 32)))


def test_an_older_repositorys_flat_config_gives_its_preprocessing_and_labels(hub):
    """Older timm repositories keep the preprocessing and ``labels`` at the config's top level (no pretrained_cfg);
    timm reads them so, and so does resnetkit."""
    reference = _timm("resnet18", num_classes=3)
    _publish(hub, "someone/flat", reference, safe_serialization=True)
    (hub / "someone/flat/resolve/main/config.json").write_text(json.dumps({
        "architecture": "resnet18", "num_classes": 3, "input_size": [3, 256, 256], "crop_pct": 1.0,
        "interpolation": "bilinear", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "labels": ["a", "b", "c"]}))
    model, info = load_model("hf-hub:someone/flat")
    assert (info.preprocess.input_size, info.preprocess.resize_size, info.preprocess.interpolation) == (
        256, 256, "bilinear")
    assert info.preprocess.mean == (0.5,) * 3 and info.preprocess.std == (0.25,) * 3
    assert info.class_names == ["a", "b", "c"] and model.num_classes == 3
    _publish(hub, "someone/crlf", reference, safe_serialization=True)  # a class name that would break a header
    config = hub / "someone/crlf/resolve/main/config.json"
    config.write_text((hub / "someone/flat/resolve/main/config.json").read_text().replace('"b"', '"b\\r\\nX: 1"'))
    with pytest.raises(ValueError, match="hf-hub:someone/crlf: its config.json's label_names: class 1 .* control"):
        load_model("hf-hub:someone/crlf")


def test_what_resnetkit_does_not_build_or_cannot_read_is_refused_naming_it(hub):
    _publish(hub, "timm/vit", _timm("resnet18"), safe_serialization=True)
    config = hub / "timm/vit/resolve/main/config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "architecture": "vit_base_patch16_224"}))
    with pytest.raises(ValueError, match="timm's 'vit_base_patch16_224', which resnetkit does not build"):
        load_model("hf-hub:timm/vit")
    (hub / "timm/bad/resolve/main").mkdir(parents=True)
    (hub / "timm/bad/resolve/main/config.json").write_text("{not json")
    with pytest.raises(WeightFileError, match="not JSON"):
        load_model("hf-hub:timm/bad")
    (hub / "timm/deep/resolve/main").mkdir(parents=True)
    (hub / "timm/deep/resolve/main/config.json").write_text("[" * 100_000 + "]" * 100_000)  # 200 kB, too deep
    with pytest.raises(WeightFileError, match="hf-hub:timm/deep/config.json\\): not JSON"):
        load_model("hf-hub:timm/deep")
    (hub / "timm/big/resolve/main").mkdir(parents=True)
    (hub / "timm/big/resolve/main/config.json").write_text(" " * (2 << 20))
    with pytest.raises(WeightFileError, match="hf-hub:timm/big: its config.json of 2,097,152 bytes is not timm's"):
        load_model("hf-hub:timm/big")
    assert all(p.stat().st_size < 1 << 20 for p in (hub.parent / "cache").rglob("*"))  # the big one is not kept
    with pytest.raises(WeightFileError, match="could not download"):
        load_model("hf-hub:timm/missing")
    with pytest.raises(ValueError, match="not a Hugging Face repository name"):
        load_model("hf-hub:../../etc")


def test_predict_takes_an_hf_hub_name(hub, tmp_path, capsys):
    from PIL import Image

    from resnetkit.cli import main

    _publish(hub, "timm/resnet18d.test_in1k", _timm("resnet18d"), safe_serialization=True)
    Image.new("RGB", (40, 30), (200, 30, 30)).save(tmp_path / "red.png")
    assert main(["predict", "hf-hub:timm/resnet18d.test_in1k", str(tmp_path / "red.png"), "--top-k", "2"]) == 0
    assert "1 of 1 image(s) predicted" in capsys.readouterr().out


def test_export_of_an_hf_hub_name_writes_into_the_current_folder(hub, tmp_path, monkeypatch):
    from resnetkit.cli import main

    _publish(hub, "timm/resnet18d.test_in1k", _timm("resnet18d"), safe_serialization=True)
    monkeypatch.chdir(tmp_path)
    assert main(["export", "hf-hub:timm/resnet18d.test_in1k", "--format", "torchscript"]) == 0
    assert (tmp_path / "resnet18d.test_in1k.torchscript.pt").is_file()


def test_create_model_takes_timms_hf_hub_spelling_with_a_new_head(hub):
    """timm.create_model("hf-hub:...", pretrained=True, num_classes=5): the trained body, a fresh 5-way head."""
    from resnetkit import create_model

    reference = _timm("resnet18d")
    _publish(hub, "timm/resnet18d.test_in1k", reference, safe_serialization=True)
    model = create_model("hf-hub:timm/resnet18d.test_in1k", pretrained=True, num_classes=5, drop_path_rate=0.1)
    assert model.num_classes == 5 and torch.equal(model.conv1[0].weight, reference.conv1[0].weight)
    with pytest.raises(ValueError, match="the weights fix the architecture; drop \\['variant'\\]"):
        create_model("hf-hub:timm/resnet18d.test_in1k", variant="v2")


def test_a_fine_tune_starts_from_an_hf_hub_name_and_train_pretrained_reads_its_weight_file(hub, tmp_path):
    from resnetkit.config import load_train_config
    from resnetkit.models.weights import resolve_weight_path
    from resnetkit.train.finetune import prepare_start

    reference = _timm("resnet18d")
    _publish(hub, "timm/resnet18d.test_in1k", reference, safe_serialization=True)
    config = prepare_start(load_train_config("finetune", pretrained="hf-hub:timm/resnet18d.test_in1k"), tmp_path)
    assert config.model.arch == "resnet18d" and config.data.mean == tuple(reference.pretrained_cfg["mean"])
    start, _ = load_model(config.finetune.pretrained)
    assert torch.equal(start.conv1[0].weight, reference.conv1[0].weight)
    assert resolve_weight_path("hf-hub:timm/resnet18d.test_in1k").name.endswith("model.safetensors")


@pytest.mark.parametrize("cfg, message", [
    ([1, 2], "pretrained_cfg is a list"),
    ({"input_size": "224"}, "input_size 224 is not a list of whole numbers"),
    ({"input_size": {"a": 1}}, "not a list of whole numbers"),
    ({"input_size": [3, 10 ** 400, 10 ** 400]}, "cannot be read as a preprocessing"),
    ({"crop_pct": 0}, "crop_pct 0"),
    ({"mean": [0.5]}, "mean="),
])
def test_a_crafted_config_is_refused_naming_the_repository(hub, cfg, message):
    _publish(hub, "timm/crafted", _timm("resnet18"), safe_serialization=True)
    config = hub / "timm/crafted/resolve/main/config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "pretrained_cfg": cfg}))
    with pytest.raises(WeightFileError, match=message) as refused:
        load_model("hf-hub:timm/crafted")
    assert "hf-hub:timm/crafted" in str(refused.value)


def test_the_endpoint_must_be_a_url_and_a_tag_is_refused(hub, monkeypatch):
    from resnetkit import create_model

    with pytest.raises(ValueError, match="pretrained=True or leave it out"):
        create_model("hf-hub:timm/resnet18d.test_in1k", pretrained="a1")
    monkeypatch.setenv("HF_ENDPOINT", "huggingface.co")
    with pytest.raises(ValueError, match="HF_ENDPOINT='huggingface.co' is not a URL"):
        load_model("hf-hub:timm/anything")


def test_arch_with_hf_hub_weights_brings_the_repositorys_preprocessing_and_must_match(hub):
    from resnetkit.infer import Predictor
    from resnetkit.models.sources import open_model

    reference = _timm("resnet18d")
    _publish(hub, "timm/resnet18d.test_in1k", reference, safe_serialization=True)
    predictor = Predictor.from_name("resnet18d", weights="hf-hub:timm/resnet18d.test_in1k")
    assert predictor.info.preprocess.interpolation == "bicubic" and len(predictor.info.class_names) == 1000
    _, info = open_model("resnet18d", weights="hf-hub:timm/resnet18d.test_in1k")
    assert info.preprocess == predictor.info.preprocess
    with pytest.raises(ValueError, match="holds resnet18d, not resnet18: give hf-hub:timm/resnet18d.test_in1k as"):
        Predictor.from_name("resnet18", weights="hf-hub:timm/resnet18d.test_in1k")
