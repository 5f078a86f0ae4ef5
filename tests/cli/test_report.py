"""report.html from `segment --report` and `evaluate --report`, rendered in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image as PILImage

from kidneyseg.api import example_dir

from ..conftest import cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _screenshot(html, png):
    """Render a page with Debian's Chromium, headless, no network (flags as the machine notes)."""
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={png.parent / 'chromium-profile'}", "--window-size=1280,1600",
                    f"--screenshot={png}", html.as_uri()], capture_output=True, timeout=120, check=True)
    return np.asarray(PILImage.open(png).convert("L"))


def test_segment_report_is_self_contained(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for n in ("p1", "p2"):
        shutil.copy(example_dir() / "image_39.nii.gz", data / f"{n}.nii.gz")
    out = tmp_path / "out"
    r = cli("segment", data, "-o", out, "--report", "--no-overlay", "--quiet", "--threads", "2")
    assert r.returncode == 0, r.stderr
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "<th>kidney_right_ml</th>" in page and "<td>p1</td>" in page and "<td>p2</td>" in page
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 3  # two cases in three planes + the cohort plot
    assert not re.search(r'(src|href)="(http|file|/)', page)  # nothing outside the page
    if CHROMIUM is None:
        pytest.skip("chromium not installed: the HTML was checked, its rendering was not")
    shot = _screenshot(out / "report.html", tmp_path / "shot.png")
    assert shot.shape == (1600, 1280)
    assert (shot < 250).mean() > 0.1  # not a blank page: the pictures rendered
    assert (shot[:400] < 100).sum() > 500  # the heading and the table text near the top


def test_evaluate_report_embeds_the_plots(tmp_path):
    from ..conftest import save_nifti

    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir()
    ref.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        m = np.zeros((20, 20, 10), np.uint8)
        m[5:15, 5:15, 2:8] = 1
        p = m.copy()
        p[5 + i: 15, 5:15, 2:8] = 1
        p[:5 + i] = 0 if i else p[:5 + i]
        save_nifti(m, np.eye(4), ref / f"c{i}.nii.gz")
        save_nifti((p * (rng.random(p.shape) > 0.05)).astype(np.uint8), np.eye(4), pred / f"c{i}.nii.gz")
    out = tmp_path / "eval"
    r = cli("evaluate", pred, ref, "-o", out, "--report", "--quiet")
    assert r.returncode == 0, r.stderr
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') == len(list(out.glob("plot_*.png"))) > 5
    assert "<th>metric</th>" in page and "<td>dice</td>" in page
