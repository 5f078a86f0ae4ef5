"""Every registered pipeline class fulfils kidneyseg.pipelines.base.Pipeline and does what its
PipelineSpec declares (TTA, CT check, secondary image, label map), so the runner can drive
any of them the same way and check_segment_options refuses exactly what a pipeline ignores."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from kidneyseg.labels import REGISTRY
from kidneyseg.pipelines import PIPELINES, get_pipeline
from kidneyseg.pipelines.base import CTCheckingPipeline, Pipeline, TTAPipeline


def _declares(cls, attr: str) -> bool:
    """A class attribute, property or dataclass field named ``attr``."""
    fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    return hasattr(cls, attr) or attr in fields


@pytest.mark.parametrize("name", list(PIPELINES))
def test_class_matches_its_spec(name):
    spec = PIPELINES[name]
    cls = spec.pipeline_class()
    assert spec.labels in REGISTRY.values()
    assert inspect.ismethod(cls.load), "load must be a classmethod"
    for attr in ("name", "keep_largest", "label_map", "segment"):
        assert _declares(cls, attr), f"{cls.__name__} lacks {attr}"
    assert hasattr(cls, "disable_tta") is spec.tta
    assert _declares(cls, "allow_ct") is spec.allow_ct
    takes_secondary = "secondary" in inspect.signature(cls.segment).parameters
    assert takes_secondary is spec.secondary
    assert spec.spatial_dims == (3 if spec.volumetric else 2)


@pytest.mark.parametrize("name", ["mr-auto", "mr-t2-unet", "mr-multiprotocol-unet", "unsupervised-cluster"])
def test_loaded_pipelines_satisfy_the_protocol(name):
    spec = PIPELINES[name]
    pipe = get_pipeline(name, device="cpu")
    assert isinstance(pipe, Pipeline) and pipe.name == name
    assert pipe.label_map == spec.labels
    assert isinstance(pipe, TTAPipeline) is spec.tta
    assert isinstance(pipe, CTCheckingPipeline) is spec.allow_ct
