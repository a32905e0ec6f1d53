"""steerlens info: a vector file's layers, norms, model and training, read without torch (safetensors or GGUF)."""

from __future__ import annotations

import subprocess
import sys

import torch
from helpers import subprocess_env

from steerlens import SteeringVector
from steerlens.cli import main


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_info_shows_layers_norms_model_and_training(pairs_file, tmp_path, capsys):
    from steerlens import __version__

    out = tmp_path / "vec.safetensors"
    assert run(["train", "--pairs", pairs_file, "--layers", "1,2", "--batch-size", "4", "--out", out], capsys)[0] == 0
    code, stdout, _ = run(["info", out], capsys)
    vec = SteeringVector.load(out)
    lines = stdout.splitlines()
    assert code == 0
    assert f"  layer   1  norm {vec.layer_activations[1].norm().item():.4f}" in lines
    assert f"  layer   2  norm {vec.layer_activations[2].norm().item():.4f}" in lines
    meta = vec.metadata
    assert "layer type:    resid_post" in lines and "layers:        1, 2" in lines
    assert (
        f"model:         steerlens-toy ({meta['n_layers']} layers, d_model {meta['d_model']}, hooked backend)" in lines
    )
    assert meta["architecture"] is None and "architecture:  unknown" in lines
    assert "trained:       on 16 pairs, aggregator mean_aggregator(), read at token -1, batch size 4" in lines
    assert f"steerlens:     {__version__}" in lines
    assert "None" not in stdout and "embedding" not in stdout and "[" not in stdout  # no raw fingerprint floats


def test_info_shows_other_metadata_compactly(tmp_path, capsys):
    vec = SteeringVector({3: torch.ones(4)}, metadata={"note": "happy", "probe": list(range(40))})
    vec.save(tmp_path / "v.safetensors")
    lines = run(["info", tmp_path / "v.safetensors"], capsys)[1].splitlines()
    assert "model:         unknown" in lines and "trained:       unknown" in lines
    assert lines[-3:] == ["other metadata:", "  note: happy", "  probe: [40 numbers]"]


def test_info_does_not_import_torch(tmp_path):
    vec = tmp_path / "v.safetensors"
    SteeringVector({1: torch.ones(8)}).save(vec)
    code = (
        "import sys; from steerlens.cli import main; assert main(['info', sys.argv[1]]) == 0; "
        "assert 'torch' not in sys.modules, 'info imported torch'"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(vec)], capture_output=True, text=True, env=subprocess_env(), timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "  layer   1  norm 2.8284" in proc.stdout


def test_info_reads_a_gguf_control_vector(tmp_path, capsys):
    from steerlens.interop import export_gguf

    vec = SteeringVector({1: torch.ones(8), 2: torch.full((8,), 2.0)}, metadata={"model_name": "tiny"})
    export_gguf(vec, tmp_path / "cv.gguf")
    assert main(["info", str(tmp_path / "cv.gguf")]) == 0
    out = capsys.readouterr().out
    assert "GGUF" in out and "control vector" in out and "safetensors" not in out
    assert "layer   2  norm 5.6569" in out  # |(2, ..., 2)| over 8 entries = 2 * sqrt(8)
    assert "layers:        1, 2" in out.splitlines() and "model:         unknown" in out
    assert "trained:       not recorded" in out and "steerlens:" not in out
