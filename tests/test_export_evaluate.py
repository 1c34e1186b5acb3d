"""Accuracy reports read a labelled folder with the model's own preprocessing; benchmarks print a table."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from resnetkit import create_model, load_model
from resnetkit.cli import main
from resnetkit.config import CIFAR_PREPROCESS
from resnetkit.export import compare_variants, load_image_folder, preprocess_image, top1_accuracy

pytest.importorskip("onnxruntime")

CLASSES = [f"class{i}" for i in range(10)]


@pytest.fixture
def model_file(resnet20_file):
    return resnet20_file


@pytest.fixture
def folder_labelled_by_the_model(tmp_path, model_file):
    """root/<class>/<png>, each image filed under the class the model predicts: its top-1 is 100% by design."""
    from PIL import Image

    model, info = load_model(model_file)
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for i in range(24):
        scratch = tmp_path / f"scratch{i}.png"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(scratch)
        with torch.no_grad():
            label = int(model(preprocess_image(scratch, info.preprocess)[None]).argmax())
        (root / CLASSES[label]).mkdir(parents=True, exist_ok=True)
        scratch.rename(root / CLASSES[label] / f"{i}.png")
    return root


def test_folder_loads_with_the_model_class_order(folder_labelled_by_the_model, model_file):
    _, info = load_model(model_file)
    data = load_image_folder(folder_labelled_by_the_model, info.preprocess, class_names=CLASSES)
    assert data.images.shape == (24, 3, 32, 32) and data.class_names == CLASSES
    model, _ = load_model(model_file)
    assert top1_accuracy(model, data.images, data.labels) == 1.0
    assert len(load_image_folder(folder_labelled_by_the_model, info.preprocess, limit=5)) == 5


def test_a_tar_or_a_labels_csv_of_the_same_images_gives_the_same_set(folder_labelled_by_the_model, model_file,
                                                                     tmp_path):
    """`export --images` takes what train and eval take: an uncompressed tar of the folder, or a CSV listing it."""
    import tarfile

    _, info = load_model(model_file)
    folder = load_image_folder(folder_labelled_by_the_model, info.preprocess, class_names=CLASSES)
    files = sorted(folder_labelled_by_the_model.rglob("*.png"))
    with tarfile.open(tmp_path / "images.tar", "w") as archive:
        for file in files:
            archive.add(file, arcname=file.relative_to(folder_labelled_by_the_model).as_posix())
    (tmp_path / "images.csv").write_text("image,label\n" + "".join(
        f"{file.relative_to(tmp_path).as_posix()},{file.parent.name}\n" for file in files))
    for other in (tmp_path / "images.tar", tmp_path / "images.csv"):
        data = load_image_folder(other, info.preprocess, class_names=CLASSES)
        assert torch.equal(data.labels, folder.labels) and torch.equal(data.images, folder.images)
    with tarfile.open(tmp_path / "images.tar.gz", "w:gz") as archive:
        archive.add(files[0], arcname=files[0].relative_to(folder_labelled_by_the_model).as_posix())
    with pytest.raises(ValueError, match="decompress"):
        load_image_folder(tmp_path / "images.tar.gz", info.preprocess)


def test_folder_with_unknown_class_is_refused(folder_labelled_by_the_model):
    (folder_labelled_by_the_model / "zebra").mkdir()
    with pytest.raises(ValueError, match="zebra"):
        load_image_folder(folder_labelled_by_the_model, CIFAR_PREPROCESS, class_names=CLASSES)


def test_variant_report_gives_size_speed_and_top1_change(model_file, folder_labelled_by_the_model):
    report = compare_variants(model_file, folder_labelled_by_the_model,
                              variants=("torch", "torch-bf16", "onnx", "onnx-int8"))
    rows = {r.name: r for r in report.rows}
    assert rows["torch"].top1 == 1.0 and rows["onnx"].top1 == 1.0 and rows["onnx"].top1_change == 0.0
    assert rows["onnx-int8"].size_bytes < rows["onnx"].size_bytes / 2.5
    assert rows["torch-bf16"].size_bytes < 0.51 * rows["torch"].size_bytes  # int64 BN counters stay
    assert all(r.latency_ms > 0 for r in report.rows)
    assert "onnx-int8" in report.table()


def test_variant_report_accepts_tensors():
    model = create_model("resnet20").eval()
    images = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        labels = model(images).argmax(1)
    report = compare_variants(model, (images, labels), variants=("torch", "onnx"))
    assert [r.top1 for r in report.rows] == [1.0, 1.0]


def test_cli_bench_prints_a_table_per_runtime_and_batch(capsys):
    code = main(["bench", "resnet20", "--batch", "1,3", "--runtime", "torch,onnx,onnx-int8-default",
                 "--rounds", "2", "--no-memory"])
    assert code == 0
    table = capsys.readouterr().out
    assert table.count("| resnet20 |") == 6 and "p50 ms" in table and "speed-up vs onnx-int8-default" in table
    from resnetkit.export.bench import BenchRow, bench_table

    alone = bench_table([BenchRow("m", "torch", 1, 2.0, 3.0, 1.5, None)])  # the baseline not run: no column of "-"
    assert "speed-up" not in alone and alone.splitlines()[-1] == "| m | torch | 1 | 2.00 | 3.00 | 1.50 | 500.0 | - |"


def test_the_help_lists_every_runtime_bench_knows():
    from resnetkit.config import BENCH_RUNTIMES
    from resnetkit.export.registry import RUNTIMES

    assert BENCH_RUNTIMES == tuple(RUNTIMES)  # the CLI's help shows BENCH_RUNTIMES without importing export


@pytest.mark.slow
def test_bench_measures_peak_memory_in_a_child_process():
    from resnetkit.export.bench import benchmark

    rows = benchmark("resnet20", runtimes=["torch", "onnx"], batches=[8], rounds=2, memory=True)
    assert all(r.peak_mb is not None and r.peak_mb > 0 for r in rows)


def _killed_child(spec, shape, queue) -> None:
    """A memory child the OOM killer takes: no Python exception, nothing on the queue."""
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def test_a_memory_child_that_dies_is_warned_about_not_waited_on(monkeypatch):
    """The bench waited 10 minutes on the queue of a killed child, then lost every row with `Empty`."""
    import time

    from resnetkit.export import bench
    from resnetkit.export.registry import RuntimeSpec

    monkeypatch.setattr(bench, "_memory_child", _killed_child)
    started = time.monotonic()
    with pytest.warns(UserWarning, match=r"torch at batch 8: the memory measurement's process exited with code -9 "
                                         r"\(killed: out of memory\?\); no memory figure"):
        assert bench.peak_memory_mb(RuntimeSpec("torch", "unused.safetensors", 1), (8, 3, 32, 32)) is None
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("batch, shown", [("0", "batch=0"), ("-1", "batch=-1"), ("1000000000", "batch=1000000000"),
                                          ("abc", "--batch 'abc'")])
def test_bench_refuses_batch_sizes_before_building_anything(batch, shown, capsys):
    assert main(["bench", "resnet20", "--runtime", "torch", "--batch", batch]) == 2
    err = capsys.readouterr().err
    assert shown in err and "Traceback" not in err


def test_int8_calibrates_on_any_folder_of_images_and_only_a_report_needs_labels(tmp_path, capsys):
    """`export --int8 --images photos/` takes a plain folder of photos, or class folders the model does not name
    (calibration needs images, not labels); `--report` still needs folders named with the model's classes."""
    from PIL import Image

    from resnetkit.export.data import load_calibration_images

    flat, unknown = tmp_path / "photos", tmp_path / "albums"
    rng = np.random.default_rng(0)  # noise: the shipped network's top-1 is clear on it (flat colours are near ties)
    for i in range(16):
        for folder in (flat, unknown / ("holiday" if i % 2 else "garden")):
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (flat / "notes.txt").write_text("not an image")  # passed over, as predict passes it over
    (flat / ".ipynb_checkpoints").mkdir()  # a hidden folder is not a class folder
    os.mkfifo(flat / "pipe.png")  # listed, as predict lists it, and refused unread (reading it would wait forever)
    assert load_calibration_images(flat, CIFAR_PREPROCESS).shape == (16, 3, 32, 32)
    assert load_calibration_images(unknown, CIFAR_PREPROCESS, limit=4).shape == (4, 3, 32, 32)
    out = tmp_path / "m.int8.onnx"
    assert main(["export", "resnet20_cifar10", "--int8", "--images", str(flat), "--output", str(out)]) == 0
    assert out.exists() and "parity" in capsys.readouterr().out
    assert main(["export", "resnet20_cifar10", "--images", str(unknown), "--report", "torch", "--output",
                 str(tmp_path / "r.onnx")]) == 2
    assert "class(es) ['garden', 'holiday'] are not among the model's 10 class names" in capsys.readouterr().err
    # Photos beside an empty sub-folder, and beside one of more photos: all of them calibrate; with a limit every
    # folder gives some. The sidecar says what the file is.
    (flat / "raw").mkdir()
    assert load_calibration_images(flat, CIFAR_PREPROCESS).shape == (16, 3, 32, 32)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(flat / "raw" / f"r{i}.png")
    assert load_calibration_images(flat, CIFAR_PREPROCESS).shape == (19, 3, 32, 32)
    import json

    extra = json.loads((tmp_path / "m.int8.onnx.json").read_text())["extra"]
    assert {k: extra[k] for k in ("format", "quantization", "calibration_images")} == {
        "format": "onnx-int8", "quantization": "int8-static-qdq", "calibration_images": 16}
    assert not list(tmp_path.glob("*.fp32.onnx*"))


def test_a_report_quantizes_as_the_written_file_and_passes_hidden_folders_over(tmp_path, monkeypatch, capsys):
    """`export --int8 --report ...,onnx-int8`: the report's INT8 rows are calibrated on the images the written file
    was (not on the first 64 of them only); a hidden folder beside the class folders is not a class."""
    from PIL import Image

    import resnetkit.export.evaluate as variants

    rng = np.random.default_rng(0)
    for i in range(70):
        folder = tmp_path / "labelled" / ("cat" if i % 2 else "dog")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (tmp_path / "labelled" / ".ipynb_checkpoints").mkdir()
    seen = {}

    def compare(model, labelled, *, calibration=None, **kwargs):
        seen["calibration"], seen["labelled"] = calibration, labelled
        raise SystemExit(0)

    monkeypatch.setattr(variants, "compare_variants", compare)
    with pytest.raises(SystemExit):
        main(["export", "resnet20_cifar10", "--int8", "--images", str(tmp_path / "labelled"), "--report",
              "torch,onnx-int8", "--output", str(tmp_path / "m.int8.onnx")])
    assert seen["calibration"] is not None and len(seen["calibration"]) == 70 == len(seen["labelled"])
    sidecar = (tmp_path / "m.int8.onnx.json").read_text()
    assert '"calibration_images": 70' in sidecar
