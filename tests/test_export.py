"""Exported artifacts compute what the model computes, at any batch size, and carry their metadata."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from resnetkit import create_model, load_model
from resnetkit.cli import main
from resnetkit.export import (ParityError, Runner, artifact_runner, check_parity, export_int8, export_model,
                              read_onnx_info)

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

CLASSES = [f"class{i}" for i in range(10)]


@pytest.fixture
def model_file(resnet20_file):
    return resnet20_file


def test_onnx_runs_batch_1_and_7_in_onnxruntime_and_carries_class_names(model_file, tmp_path):
    result = export_model(model_file, fmt="onnx", output=tmp_path / "m.onnx")
    assert result.parity.batch_sizes == (1, 7) and result.parity.top1_agreement == 1.0
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch"  # symbolic, not a fixed 2
    model, _ = load_model(model_file)
    for batch in (1, 7):
        x = torch.randn(batch, 3, 32, 32)
        (got,) = session.run(None, {"input": x.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(got, model(x).numpy(), atol=1e-4, rtol=1e-4)
    assert read_onnx_info(result.path).class_names == CLASSES
    sidecar = json.loads(result.sidecar.read_text())
    assert sidecar["class_names"] == CLASSES and sidecar["preprocess"]["input_size"] == 32


@pytest.mark.parametrize("fmt", ["torchscript", "exported-program"])
def test_torch_artifacts_load_back_and_match_at_two_batch_sizes(model_file, tmp_path, fmt):
    result = export_model(model_file, fmt=fmt, output=tmp_path / f"m.{fmt}")
    assert result.parity.relative_diff < 1e-5
    # Loaded by torch itself, not through the exporter's runner: the file computes what the model computes.
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream; still loads
            loaded = torch.jit.load(str(result.path))
    else:
        loaded = torch.export.load(str(result.path)).module()
    model, _ = load_model(model_file)
    model.eval()
    for batch in (1, 7):
        x = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            expected, got = model(x), loaded(x)
        assert got.shape == (batch, 10)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    runner = artifact_runner(result.path, fmt)
    assert runner(torch.randn(3, 3, 32, 32)).shape == (3, 10)
    assert json.loads(result.sidecar.read_text())["extra"]["format"] == fmt


def test_parity_check_fails_loudly_on_wrong_numbers_and_fixed_batches():
    model = create_model("resnet20").eval()
    inputs = torch.randn(7, 3, 32, 32)

    def noisy(batch):
        with torch.no_grad():
            return model(torch.from_numpy(batch)).numpy() + 0.5

    with pytest.raises(ParityError, match="do not ship it"):
        check_parity(model, Runner("noisy", noisy, 0), inputs)

    def fixed_batch(batch):
        if batch.shape[0] != 7:
            raise RuntimeError("Got invalid dimensions for input: expected 7")
        return noisy(batch) - 0.5

    with pytest.raises(ParityError, match="batch of 1 failed"):
        check_parity(model, Runner("fixed", fixed_batch, 0), inputs)


def test_int8_export_is_smaller_and_agrees_with_fp32(model_file, tmp_path):
    calibration = torch.randn(32, 3, 32, 32)
    result = export_int8(model_file, calibration, output=tmp_path / "m.int8.onnx", min_top1_agreement=0.5)
    fp32 = export_model(model_file, fmt="onnx", output=tmp_path / "m.onnx")
    assert result.path.stat().st_size < fp32.path.stat().st_size / 2.5
    assert result.parity.batch_sizes == (1, 7)
    info = read_onnx_info(result.path)
    assert info.class_names == CLASSES and info.extra["quantization"] == "int8-static-qdq"
    import onnx

    ops = {n.op_type for n in onnx.load(str(result.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_openvino_runs_the_int8_model(model_file, tmp_path):
    pytest.importorskip("openvino")
    from resnetkit.export import openvino_runner

    calibration = torch.randn(32, 3, 32, 32)
    result = export_int8(model_file, calibration, output=tmp_path / "m.int8.onnx", min_top1_agreement=0.5)
    model, _ = load_model(model_file)
    openvino = openvino_runner(result.path, name="openvino-int8")
    report = check_parity(model, openvino, calibration, rtol=float("inf"), min_top1_agreement=0.5)
    assert report.top1_agreement >= 0.5 and report.batch_sizes == (1, 7)
    assert check_parity(model, openvino, calibration[:3], rtol=float("inf"), min_top1_agreement=0).batch_sizes == (
        1, 3)  # the batches it ran: three inputs make no batch of 7
    # The same int8 file in onnxruntime. The two runtimes' INT8 kernels differ (VNNI or not, saturation, bf16 for
    # the unquantised parts on some CPUs) and the errors add up over ~20 layers, so the bound is a quarter of the
    # logits' range (measured on this machine: 0.05 of 3.4), and top-1 agrees on most inputs (here 31 of 32).
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    for batch in (calibration[:1], calibration[:7], calibration):
        x = batch.numpy()
        (expected,) = session.run(None, {"input": x})
        got = openvino(x)
        assert got.shape == expected.shape == (len(x), 10)
        np.testing.assert_allclose(got, expected, rtol=0, atol=0.25 * float(expected.max() - expected.min()))
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.75  # over all 32 inputs


def test_cli_export_writes_artifact_and_prints_parity(model_file, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    assert main(["export", str(model_file), "--format", "onnx", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.exists() and "top-1 agreement 100.0%" in printed and "batches 1, 7" in printed


def test_cli_export_names_a_missing_file(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope.safetensors")]) == 2
    assert "nope.safetensors" in capsys.readouterr().err


def test_failed_parity_removes_the_artifact(model_file, tmp_path, monkeypatch):
    import resnetkit.export.exporter as exporter

    def broken_runner(path, fmt):
        real = artifact_runner(path, fmt)
        return Runner(fmt, lambda batch: real(batch) * 2.0, real.size_bytes)

    monkeypatch.setattr(exporter, "artifact_runner", broken_runner)
    with pytest.raises(ParityError, match="was removed"):
        export_model(model_file, fmt="onnx", output=tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists() and not (tmp_path / "bad.onnx.json").exists()


def test_cli_export_never_overwrites_a_file_of_another_kind(model_file, tmp_path, capsys):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8 a photo")
    assert main(["export", str(model_file), "--format", "onnx", "--output", str(photo)]) == 2
    err = capsys.readouterr().err
    assert "--output" in err and "onnx files end in .onnx" in err
    assert photo.read_bytes() == b"\xff\xd8 a photo"
    assert main(["export", str(model_file), "--format", "torchscript", "--output", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    checkpoint = tmp_path / "checkpoint.pt"  # what torch.save writes has TorchScript's last suffix
    torch.save({"epoch": 57}, checkpoint)
    before = checkpoint.read_bytes()
    assert main(["export", str(model_file), "--format", "torchscript", "--output", str(checkpoint)]) == 2
    assert "perhaps a training checkpoint" in capsys.readouterr().err and checkpoint.read_bytes() == before
    mine = tmp_path / "mine.pt"  # an earlier TorchScript export under a name of the user's: replaced, as a rerun expects
    for _ in range(2):
        assert main(["export", str(model_file), "--format", "torchscript", "--output", str(mine)]) == 0


def test_an_output_linking_to_the_model_is_refused_and_the_model_kept(model_file, tmp_path, capsys):
    import shutil

    model = tmp_path / "m.safetensors"
    shutil.copyfile(model_file, model)
    before = model.read_bytes()
    (tmp_path / "link.onnx").symlink_to(model)
    assert main(["export", str(model), "--format", "onnx", "--output", str(tmp_path / "link.onnx")]) == 2
    assert "is the input" in capsys.readouterr().err and model.read_bytes() == before
    assert main(["export", str(model), "--format", "onnx", "--output", str(tmp_path / "out.onnx"),
                 "--report", "torch,nope"]) == 2
    assert "unknown runtime(s) ['nope']" in capsys.readouterr().err and not (tmp_path / "out.onnx").exists()


def test_an_export_that_dies_while_writing_leaves_the_earlier_file_whole(model_file, tmp_path, monkeypatch):
    import resnetkit.export.formats as formats

    earlier = export_model(model_file, fmt="torchscript", output=tmp_path / "m.pt").path
    good = earlier.read_bytes()

    def dies_half_way(model, info, path):
        path.write_bytes(good[: len(good) // 2])
        raise KeyboardInterrupt  # as a kill would, part-way through the file

    monkeypatch.setattr(formats, "export_torchscript", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        formats.write_artifact(create_model("resnet20"), load_model(model_file)[1], tmp_path / "m.pt", "torchscript")
    assert earlier.read_bytes() == good and [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []
