"""`resnetkit serve` on the command line and its options: checked values, a missing dependency or model file named,
every flag reaching ServeOptions."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("prometheus_client")

from resnetkit.serve import MissingDependencyError, ServeOptions, create_app  # noqa: E402

from test_serve import model_file, predictor  # noqa: E402,F401 (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one torch thread for these tiny tensors


def test_options_are_checked():
    with pytest.raises(ValueError, match="runtime 'tensorrt'"):
        ServeOptions(runtime="tensorrt")
    with pytest.raises(ValueError, match="max_batch=0"):
        ServeOptions(max_batch=0)
    with pytest.raises(TypeError, match="unknown serve option"):
        ServeOptions().with_overrides(max_batchsize=4)
    with pytest.raises(ValueError, match="max_queue=8 is below max_files=64.*--max-queue"):
        ServeOptions(max_queue=8)  # a request of 64 images could never be queued: 503 forever
    with pytest.raises(ValueError, match="--max-inflight-mb"):
        ServeOptions(max_inflight_bytes=1024)


def test_missing_fastapi_gives_a_clear_error(predictor, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "fastapi" else real_find_spec(name, *a))
    with pytest.raises(MissingDependencyError, match=r"needs fastapi: pip install 'resnetkit\[serve\]'"):
        create_app(predictor)


def test_serve_command_reports_missing_dependency(monkeypatch, capsys, tmp_path):
    import importlib.util

    from resnetkit.cli import main

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "uvicorn" else real_find_spec(name, *a))
    assert main(["serve", str(tmp_path / "model.safetensors")]) == 2
    assert "needs uvicorn" in capsys.readouterr().err


def test_serve_command_with_a_missing_model_file_exits_2(capsys, tmp_path):
    from resnetkit.cli import main

    assert main(["serve", str(tmp_path / "nothing.safetensors")]) == 2
    assert "nothing.safetensors: neither a model file" in capsys.readouterr().err


def test_a_port_in_use_is_one_error_line_before_anything_starts(capsys, model_file):
    """uvicorn bound the port after the app had begun warming the model in a thread, then exited the process: it
    died of SIGABRT inside torch. The port is now bound first and its refusal named."""
    import socket

    from resnetkit.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(model_file), "--port", str(port), "--runtime", "torch"]) == 2
    assert f"--port {port}: cannot listen there" in capsys.readouterr().err
    assert main(["serve", str(model_file), "--host", "no such host.invalid", "--runtime", "torch"]) == 2
    assert "--host 'no such host.invalid': not an address to listen on" in capsys.readouterr().err


def test_serve_flags_reach_the_options(monkeypatch, model_file):
    import resnetkit.serve as serve_module
    from resnetkit.cli import main

    seen: dict = {}
    monkeypatch.setattr(serve_module, "serve", lambda model, **kwargs: seen.update(kwargs, model=model))
    monkeypatch.setenv("RESNETKIT_API_KEY", "from-env")
    assert main(["serve", str(model_file), "--no-batching", "--max-upload-mb", "1.5", "--runtime", "torch"]) == 0
    options = seen["options"]  # the command passes one typed ServeOptions
    assert seen["model"] == str(model_file) and options.runtime == "torch" and seen["host"] == "127.0.0.1"
    assert (options.max_batch, options.max_wait_ms) == (1, 0.0) and options.max_upload_bytes == 1_572_864
    assert options.api_key == "from-env" and isinstance(options, ServeOptions)
