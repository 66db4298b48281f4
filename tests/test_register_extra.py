"""Registration without its extra: one line that says what to install, and no output."""

from __future__ import annotations

import sys

import numpy as np

from causalfuse.cli import main as cli_main
from causalfuse.io import write_image


def test_register_without_simpleitk_says_which_extra_to_install(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    for name in ("ir", "vi"):
        write_image(tmp_path / f"{name}.png", (rng.random((40, 48)) * 255).astype(np.uint8))
    monkeypatch.setitem(sys.modules, "SimpleITK", None)  # import fails as if not installed
    out = tmp_path / "out.png"
    code = cli_main(["register", "--ir", str(tmp_path / "ir.png"), "--vi", str(tmp_path / "vi.png"), "-o", str(out)])
    assert code == 2
    assert 'pip install "causalfuse[register]"' in capsys.readouterr().err
    assert not out.exists() and not out.with_suffix(".json").exists()
