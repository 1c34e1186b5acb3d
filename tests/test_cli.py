"""The CLI prints the registry and summaries with the exact numbers."""

from __future__ import annotations

import subprocess
import sys

import pytest

from resnetkit.cli import main


def test_models_table_lists_params_and_macs(capsys):
    assert main(["models", "resnet5*"]) == 0
    out = capsys.readouterr().out
    assert "resnet50" in out and "25,557,032" in out and "4.089G" in out
    assert main(["models", "resnet20"]) == 0
    out = capsys.readouterr().out
    assert "269,722" in out and "cifar" in out


def test_summary_resnet50_prints_stages_and_totals(capsys):
    assert main(["summary", "resnet50"]) == 0
    out = capsys.readouterr().out
    for part in ("stem", "layer1", "layer4", "head", "total"):
        assert part in out
    assert "1x2048x7x7" in out and "25,557,032" in out and "4,089,184,256" in out


def test_summary_v1_matches_the_paper(capsys):
    assert main(["summary", "resnet50", "--variant", "v1"]) == 0
    assert "3.858G" in capsys.readouterr().out


def test_unknown_model_is_a_clear_error(capsys):
    assert main(["summary", "resnet19"]) == 2
    assert "unknown model 'resnet19'" in capsys.readouterr().err
    assert main(["summary", "resnt50"]) == 2  # a typo gets the names it is close to, as predict's does
    assert "did you mean resnet50," in capsys.readouterr().err
    assert main(["summary", "resnet20_cifar10"]) == 0  # a catalog name: its architecture, at its input size
    assert "resnet20_cifar10 (variant v1, shortcut A) at 32x32" in capsys.readouterr().out
    assert main(["summary", "resnet20_cifar"]) == 2  # a mistyped catalog name: the catalog names it is close to
    assert "did you mean resnet20_cifar10," in capsys.readouterr().err


def test_console_script_entry_point_runs():
    import importlib.metadata
    import sysconfig
    from pathlib import Path

    import resnetkit.cli

    # The installed metadata declares the `resnetkit` console script, and it resolves to cli.main.
    entries = importlib.metadata.entry_points(group="console_scripts", name="resnetkit")
    if not entries:
        pytest.skip("resnetkit is not installed (pip install -e .): no console-script metadata")
    [entry] = entries
    assert entry.value == "resnetkit.cli:main"
    assert entry.load() is resnetkit.cli.main

    result = subprocess.run([sys.executable, "-m", "resnetkit.cli", "models", "plain2*"],
                            capture_output=True, text=True, check=True)
    assert "plain20" in result.stdout

    # The generated launcher itself, in this interpreter's scripts folder (not another install's on PATH).
    script = Path(sysconfig.get_path("scripts")) / "resnetkit"
    if not script.exists():
        pytest.skip(f"no `resnetkit` launcher in {script.parent}")
    result = subprocess.run([str(script), "models", "plain2*"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "plain20" in result.stdout


def _all_parsers():
    import argparse

    from resnetkit.cli import build_parser

    root = build_parser()
    commands = next(a for a in root._actions if isinstance(a, argparse._SubParsersAction)).choices
    return root, commands


def test_every_flag_of_every_command_has_help_with_its_default():
    import argparse

    _, commands = _all_parsers()
    assert {"models", "summary", "train", "demo", "reproduce", "eval", "predict", "serve", "export", "bench",
            "lr-find"} <= set(commands)
    undocumented = []
    for name, parser in commands.items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if not action.help or (action.option_strings and "default" not in action.help):
                undocumented.append(f"{name} {action.option_strings or action.dest}")
    assert undocumented == []
    # TrainConfig's flags take their help from the field, with the field's own default.
    train_help = commands["train"].format_help()
    assert "learning rate at --batch-size" in train_help and "(default: 0.1," in train_help
    assert "fractions of the run" in train_help and "(default: 0.5 0.75," in train_help


def test_a_command_line_without_settings_gives_the_configs_own_defaults():
    """Flags come from the config fields (help and default in one place): nothing given on the line is the config's
    default, and a flag in another unit (--max-inflight-mb) reaches its field converted (bytes)."""
    from resnetkit.cli import build_parser
    from resnetkit.cli.commands import _config_from_args
    from resnetkit.config import MIB, ServeOptions, StudyConfig

    parser = build_parser()
    assert _config_from_args(StudyConfig, parser.parse_args(["reproduce", "cifar10"])) == StudyConfig()
    assert _config_from_args(ServeOptions, parser.parse_args(["serve", "m.safetensors"])) == ServeOptions()
    assert parser.parse_args(["serve", "m", "--port", "65535"]).port == 65535  # the last TCP port is one
    study = _config_from_args(StudyConfig, parser.parse_args(
        ["reproduce", "cifar10", "--depths", "20", "56", "--only", "plain*", "--out", "s", "--amp", "none"]))
    assert (study.depths, study.only, study.out_dir, study.amp) == ((20, 56), ("plain*",), "s", "none")
    serve = _config_from_args(ServeOptions, parser.parse_args(["serve", "m", "--max-inflight-mb", "64.5", "--onnx",
                                                               "m.onnx", "--graceful-timeout", "5"]))
    assert (serve.max_inflight_bytes, serve.onnx_file, serve.graceful_timeout_s) == (64 * MIB + MIB // 2, "m.onnx", 5.0)


@pytest.mark.parametrize("flag, bads, says", [
    ("--max-upload-mb", ("nan", "-1", "0", "inf", "abc", "", "1e-9"), "is not a size in MiB above 0"),
    ("--port", ("-1", "0", "65536", "99999", "abc", "", "80.5"),
     "is not a TCP port: give a whole number from 1 to 65535"),  # refused before the model loads
])
def test_a_serve_size_or_port_that_is_not_one_is_refused_naming_the_flag(flag, bads, says, capsys):
    for bad in bads:
        with pytest.raises(SystemExit):
            main(["serve", "no-such-model.safetensors", flag, bad])
        err = capsys.readouterr().err
        assert f"argument {flag}: {bad!r} {says}" in err, err


def test_top_level_help_speaks_to_users(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "No logic of its own" not in out and "examples:" in out and "resnetkit models --pretrained" in out
    for command in ("models", "train", "predict", "eval", "export", "serve", "reproduce"):
        assert f"\n    {command}" in out


def test_errors_end_in_one_line_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    from torch.utils.flop_counter import FlopCounterMode

    assert main(["predict", str(tmp_path / "missing.safetensors"), "x.png"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.safetensors" in err and "Traceback" not in err

    def broken(self):
        raise RuntimeError("inside a library\nsecond line")

    monkeypatch.setattr(FlopCounterMode, "__enter__", broken)
    assert main(["summary", "resnet20"]) == 2
    err = capsys.readouterr().err
    assert err == ("resnetkit summary: error: RuntimeError: inside a library second line "
                   "(run with --debug for the traceback)\n")
    with pytest.raises(RuntimeError, match="inside a library"):
        main(["summary", "resnet20", "--debug"])
    with pytest.raises(RuntimeError, match="inside a library"):
        main(["--debug", "summary", "resnet20"])

    def exhausted(self):  # torch's CPU allocator, as `train --image-size 2048` met it
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 2147483648 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(FlopCounterMode, "__enter__", exhausted)
    assert main(["summary", "resnet20"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("resnetkit summary: error: out of memory (RuntimeError: ") and err.count("\n") == 1
    assert err.endswith("use a smaller --batch-size, a smaller --image-size / --input-size, or a machine with more "
                        "memory\n")


def test_train_without_internet_prints_one_line_of_advice(tmp_path, capsys, monkeypatch):
    import urllib.error

    import torchvision.datasets.utils

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torchvision.datasets.utils, "download_url", offline)
    monkeypatch.setenv("RESNETKIT_CACHE", str(tmp_path / "cache"))
    assert main(["train", "--recipe", "cifar10-fast", "--data", "cifar10", "--out-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("resnetkit train: error: could not download")
    assert "cifar-10-python.tar.gz" in err and "Traceback" not in err


def test_fast_counts_equal_the_whole_networks_counts():
    import torch

    from resnetkit import create_model
    from resnetkit.models import summarize
    from resnetkit.models.catalog import counts

    # One of every kind of stage: basic/bottleneck, post/pre-activation, plain, wide, grouped, SE;
    # and the layouts with builders of their own (Keras Applications' ResNetV2, Keras' CIFAR-10 example).
    for name in ("resnet110", "plain110", "resnet50", "resnet164", "wide_resnet28_10", "resnext50_32x4d",
                 "seresnet56", "keras_resnet50v2", "keras_cifar_resnet56v1", "keras_cifar_resnet56v2"):
        with torch.device("meta"):
            model = create_model(name)
        whole = summarize(model, input_size=model.spec.preprocess.input_size)
        assert counts(name) == (whole.params, whole.macs), name


def test_the_shipped_counts_cover_every_registered_network_and_are_right():
    """`resnetkit models` on a fresh install reads the counts the package ships instead of counting."""
    from resnetkit.models import list_models
    from resnetkit.models.catalog import SHIPPED_COUNTS, _read_counts, counts

    shipped = _read_counts(SHIPPED_COUNTS)
    before = dict(shipped)
    for name in list_models():
        counts(name, cache=shipped)
    missing = sorted(set(shipped) - set(before))
    assert not missing, "models/model-counts.json is out of date: run python -c \"from resnetkit.models.catalog " \
                        "import write_shipped_counts; write_shipped_counts()\""
    for name in ("resnet20", "resnet1202", "resnet50", "resnext101_64x4d", "keras_cifar_resnet164v2"):
        assert counts(name, cache=before) == counts(name), name  # shipped == counted now


def test_models_table_reuses_its_counts_from_the_cache_and_survives_a_damaged_one(tmp_path, monkeypatch, capsys):
    from resnetkit.models import catalog

    monkeypatch.setenv("RESNETKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(catalog, "SHIPPED_COUNTS", tmp_path / "none.json")  # the user's cache alone
    first = catalog.models_table("resnet1*")
    assert (tmp_path / catalog.COUNTS_FILE).exists()

    def never(*args):
        raise AssertionError("counted again despite the cache")

    with monkeypatch.context() as patched:
        patched.setattr(catalog, "_shortened_counts", never)
        assert catalog.models_table("resnet1*") == first
        (tmp_path / catalog.COUNTS_FILE).write_text("{not json")
        with pytest.raises(AssertionError, match="counted again"):
            catalog.models_table("resnet1*")
    assert catalog.models_table("resnet1*") == first
    assert "1,727,962" in first and "19,421,274" in first  # resnet110 and resnet1202, as the paper counts them
