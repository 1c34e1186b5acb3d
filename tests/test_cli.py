"""The CLI prints the registry and summaries with the exact numbers."""

from __future__ import annotations

import subprocess
import sys

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


def test_console_script_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "resnetkit.cli", "models", "plain2*"],
                            capture_output=True, text=True, check=True)
    assert "plain20" in result.stdout
