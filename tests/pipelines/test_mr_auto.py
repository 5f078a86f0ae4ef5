"""Pipeline mr-auto: the T2 model for confident axial scans, the multiprotocol model for the rest;
the route is recorded per case and in the provenance."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from kidneyseg.errors import InputError
from kidneyseg.io import Image, read_image
from kidneyseg.pipelines import get_pipeline, model_folders
from kidneyseg.pipelines.mr_auto import MRAutoPipeline, acquisition_route
from kidneyseg.pipelines.result import Result
from kidneyseg.provenance import run_record

from ..conftest import UKAT


def _image(spacing, stored=(0, 1, 2)) -> Image:
    """A random volume with voxel sides ``spacing`` (mm, along world x, y, z); ``stored``: the
    world axis of each array axis (a DICOM coronal series stores x, z, y, with x and z flipped)."""
    affine = np.eye(4)
    affine[:3, :3] = 0
    for j, w in enumerate(stored):
        affine[w, j] = spacing[w] * (1 if stored == (0, 1, 2) or w == 1 else -1)
    shape = tuple((20, 22, 18)[w] for w in stored)
    return Image(np.random.default_rng(0).random(shape).astype(np.float32), affine, source=Path("scan.nii.gz"))


@pytest.mark.parametrize("spacing,route", [
    ((1.2, 1.2, 6.0), None),  # an axial slab: 18 slices, 108 mm
    ((1.2, 1.2, 9.0), "axial acquisition covering 162 mm"),  # past PLANES_COVERAGE_MM (150 mm)
    ((1.5, 5.5, 1.5), "coronal acquisition"),
    ((5.0, 1.0, 1.0), "sagittal acquisition"),
    ((3.0, 3.0, 3.0), "near-isotropic voxels"),
])
def test_route_from_the_acquisition_geometry(spacing, route):
    assert acquisition_route(_image(spacing)) == route
    assert acquisition_route(_image(spacing, stored=(0, 2, 1))) == route


class _Fake:
    """Records what it was asked to segment; its result carries ``uncertain`` as the QC value."""

    def __init__(self, folder: str, uncertain: float, threshold: float = 1.0, empty: bool = False):
        self.bundle = SimpleNamespace(folder=Path("/models") / folder)
        self.uncertain, self.threshold, self.empty = uncertain, threshold, empty
        self.calls, self.keep_largest, self.allow_ct, self.tta = 0, True, False, True

    def disable_tta(self):
        self.tta = False

    def segment(self, image):
        self.calls += 1
        qc = {"uncertain_fraction": self.uncertain, "low_confidence": self.uncertain > self.threshold,
              "empty": self.empty}
        return Result(case=image.name, mask=image.with_array(np.zeros(image.shape, np.uint8)), label_map={},
                      volumes_ml={}, qc=qc)


def _auto(t2_uncertain: float, t2_empty: bool = False):
    t2, multi, loads = _Fake("mr_t2_kidney", t2_uncertain, empty=t2_empty), _Fake("mr_multiprotocol_kidney", 0.3), []
    return MRAutoPipeline(t2, lambda: loads.append(1) or multi), t2, multi, loads


def test_confident_axial_scan_stays_with_the_t2_model_and_never_loads_the_other():
    pipe, t2, multi, loads = _auto(0.2)
    result = pipe.segment(_image((1.2, 1.2, 6.0)))
    assert (t2.calls, multi.calls, loads) == (1, 0, [])
    assert result.qc["model"] == "mr_t2_kidney" and result.qc["route"].startswith("axial")


def test_axial_whole_abdomen_scan_goes_straight_to_the_multiprotocol_model():
    pipe, t2, multi, loads = _auto(0.2)
    result = pipe.segment(_image((1.2, 1.2, 9.0)))
    assert t2.calls == 0 and multi.calls == 1 and loads == [1]
    assert result.qc["model"] == "mr_multiprotocol_kidney" and result.qc["route"] == "axial acquisition covering 162 mm"
    assert "t2_uncertain_fraction" not in result.qc


def test_the_shipped_multiprotocol_model_averages_planes_where_mr_auto_sends_whole_abdomen_scans():
    from kidneyseg.inference.settings import read_inference_config
    from kidneyseg.models.store import default_model_dir

    assert read_inference_config(default_model_dir("mr_multiprotocol_kidney")).planes == "coverage"


def test_low_confidence_axial_scan_goes_to_the_multiprotocol_model():
    pipe, t2, multi, loads = _auto(4.5)
    result = pipe.segment(_image((1.2, 1.2, 6.0)))
    assert (t2.calls, multi.calls, loads) == (1, 1, [1])
    assert result.qc["model"] == "mr_multiprotocol_kidney"
    assert result.qc["route"] == "T2 model low_confidence (uncertain_fraction 4.5)"
    assert result.qc["t2_uncertain_fraction"] == 4.5 and result.qc["uncertain_fraction"] == 0.3
    pipe.segment(_image((1.2, 1.2, 6.0)))
    assert loads == [1]  # loaded once


def test_axial_scan_where_the_t2_model_finds_no_kidney_goes_to_the_multiprotocol_model():
    """A confident "no kidney" (no uncertain voxels, so not low_confidence) is a failure too:
    the T2 model on an intensity-inverted case 39 gives exactly that."""
    pipe, t2, multi, _ = _auto(0.0, t2_empty=True)
    result = pipe.segment(_image((1.2, 1.2, 6.0)))
    assert (t2.calls, multi.calls) == (1, 1)
    assert result.qc["route"] == "T2 model found no kidney" and result.qc["t2_uncertain_fraction"] == 0.0


def test_coronal_scan_skips_the_t2_model_and_options_reach_the_model_loaded_later():
    pipe, t2, multi, _ = _auto(0.2)
    pipe.keep_largest, pipe.allow_ct = False, True
    pipe.disable_tta()
    result = pipe.segment(_image((1.5, 5.5, 1.5)))
    assert (t2.calls, multi.calls) == (0, 1)
    assert result.qc["route"] == "coronal acquisition"
    assert (multi.keep_largest, multi.allow_ct, multi.tta) == (False, True, False)
    assert (t2.keep_largest, t2.allow_ct, t2.tta) == (False, True, False)


def test_a_model_folder_is_refused_with_the_pipelines_that_take_one():
    with pytest.raises(InputError, match="--pipeline mr-t2-unet"):
        get_pipeline("mr-auto", model="/some/folder", device="cpu")


def test_provenance_records_both_shipped_models():
    run = run_record("mr-auto", model_folders("mr-auto"), {})
    assert set(run["model"]["folder"]) == {"mr-t2-unet", "mr-multiprotocol-unet"}
    assert "mr-t2-unet/model.pt" in run["model"]["sha256"]
    assert "mr-multiprotocol-unet/model.pt" in run["model"]["sha256"]


def test_fast_gives_both_shipped_models_their_one_pass_qc_thresholds():
    """``--fast`` runs one pass; each shipped folder carries a low_confidence threshold derived on
    one-pass predictions (benchmarks/README.md, "The QC threshold of --fast" and "The T2 model's QC
    threshold under --fast"), used in its place. The T2 model's decides mr-auto's axial routing."""
    from kidneyseg.pipelines import configure_pipeline

    pipe = get_pipeline("mr-auto", device="cpu")
    models = (pipe.t2, pipe.multiprotocol)
    shipped = [m.bundle.inference for m in models]
    for s in shipped:
        assert s.tta.passes > 1 and s.low_confidence_threshold_no_tta is not None
        assert s.low_confidence_threshold_no_tta != s.low_confidence_threshold
    configure_pipeline(pipe, tta=False)
    for m, s in zip(models, shipped):
        fast = m.bundle.inference
        assert fast.tta.passes == 1 and fast.kidney_threshold == s.kidney_threshold
        assert fast.low_confidence_threshold == s.low_confidence_threshold_no_tta


def test_real_coronal_scan_gets_the_multiprotocol_models_mask():
    """A coronal gradient-echo ukat scan through the shipped models: the mask is the
    multiprotocol pipeline's, bit for bit."""
    path = next((UKAT / "siemens_02").glob("*_e1.nii.gz"))
    image = read_image(path, dtype=np.float32)
    auto = get_pipeline("mr-auto", device="cpu").segment(image)
    direct = get_pipeline("mr-multiprotocol-unet", device="cpu").segment(image)
    assert auto.qc["model"] == "mr_multiprotocol_kidney" and auto.qc["route"] == "coronal acquisition"
    np.testing.assert_array_equal(np.asarray(auto.mask.array), np.asarray(direct.mask.array))
    assert auto.volumes_ml == direct.volumes_ml


def test_overlay_and_report_caption_names_the_model_and_why():
    from kidneyseg.runner import qc_caption

    qc = {"low_confidence": True, "model": "mr_multiprotocol_kidney", "route": "coronal acquisition"}
    assert qc_caption(qc) == "  [CHECK: low_confidence]  (mr_multiprotocol_kidney: coronal acquisition)"
    assert qc_caption({"low_confidence": False}) == ""
