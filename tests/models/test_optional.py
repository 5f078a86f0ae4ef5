"""Optional dependencies (extras): a method whose extra is missing fails with one line that
names the ``pip install 'kidneyseg[...]'`` to run, exit 2, and writes nothing."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from ..conftest import cli
from kidneyseg.optional import EXTRAS, MissingDependencyError, require


def _block(monkeypatch, top: str) -> None:
    """Make ``import top`` (and its submodules) fail as if the package were not installed."""
    for name in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, top, None)  # import then raises ImportError


@pytest.mark.parametrize("module", sorted(EXTRAS))
def test_require_names_the_extra(monkeypatch, module):
    _block(monkeypatch, module)
    with pytest.raises(MissingDependencyError) as info:
        require(module, "something")
    message = str(info.value)
    assert f"pip install 'kidneyseg[{EXTRAS[module][1]}]'" in message and "\n" not in message


def test_require_returns_an_installed_module():
    assert require("dipy", "x").__name__ == "dipy"


def test_dti_without_dipy_exits_2_with_the_install_line(tmp_path, monkeypatch):
    import nibabel as nib

    dwi = tmp_path / "dwi.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4, 3), np.float32), np.eye(4)), str(dwi))
    (tmp_path / "dwi.bval").write_text("0 600 600\n")
    (tmp_path / "dwi.bvec").write_text("0 1 0\n0 0 1\n0 0 0\n")
    _block(monkeypatch, "dipy")
    out = tmp_path / "maps"
    r = cli("dti", dwi, "--bval", tmp_path / "dwi.bval", "--bvec", tmp_path / "dwi.bvec", "-o", out)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "pip install 'kidneyseg[dti]'" in r.stderr
    assert not out.exists()


def test_us_ensemble_without_smp_exits_2_with_the_install_line(monkeypatch):
    from kidneyseg.models.us_ensemble import build_member

    _block(monkeypatch, "segmentation_models_pytorch")
    with pytest.raises(MissingDependencyError, match=r"kidneyseg\[us\]"):
        build_member("deeplabv3plus_resnet18")
