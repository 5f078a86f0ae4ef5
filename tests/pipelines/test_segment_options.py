"""Every pipeline x every ``segment`` option: honoured, or refused with one line and exit 2
before anything is read or loaded (issue 23: no option silently does nothing)."""

from __future__ import annotations

import pytest

from kidneyseg.cli import main
from kidneyseg.pipelines import PIPELINES

# option -> (extra argv, the PipelineInfo field that says whether it is honoured, honoured when the field is ...)
OPTIONS = {
    "--no-tta": (["--no-tta"], "tta", True),
    "--keep-all-components": (["--keep-all-components"], "keep_largest", True),
    "--secondary": (["--secondary", "{image}"], "secondary", True),
    "--allow-ct": (["--allow-ct"], "allow_ct", True),
    "--pixel-spacing-mm": (["--pixel-spacing-mm", "0.3"], "volumetric", False),
    "--report": (["--report"], "volumetric", True),
    "--resume": (["--resume"], "volumetric", True),
    "--engine ray": (["--engine", "ray"], "volumetric", True),
    "--series": (["--series", "largest"], "volumetric", True),
    "--output-type": (["--output-type", "both"], "volumetric", True),
    "--save-probabilities": (["--save-probabilities"], "probabilities", True),
}


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """An input that does not exist: a refusal must come before any input is read, and an
    honoured option then fails on the missing file (fast: no model load, no Ray start)."""
    return tmp_path_factory.mktemp("opts") / "missing.nii.gz"


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("pipeline", list(PIPELINES))
def test_option_is_honoured_or_refused(pipeline, option, image, tmp_path, capsys):
    extra, field, honoured_when = OPTIONS[option]
    argv = ["segment", str(image), "-o", str(tmp_path / "out"), "--pipeline", pipeline, "--quiet",
            "--model", str(tmp_path / "no_model")] + [a.format(image=image) for a in extra]
    code = main(argv)
    err = capsys.readouterr().err
    refused = f"{option}: pipeline {pipeline}" in err
    if getattr(PIPELINES[pipeline], field) == honoured_when:
        assert code == 2 and not refused and "missing.nii.gz" in err, err
    else:
        assert code == 2 and refused and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "out").exists()  # refused before anything was written


def test_declared_capabilities_match_the_pipeline_classes():
    """The registry's declarations are what the classes do: --no-tta needs a disable_tta, --allow-ct an
    allow_ct flag; configure_pipeline applies both."""
    from kidneyseg.pipelines.c2f_cascade import C2FCascadePipeline
    from kidneyseg.pipelines.em_unet3d import EMUNetPipeline
    from kidneyseg.pipelines.kits_unet3d import KitsUNetPipeline
    from kidneyseg.pipelines.mr_auto import MRAutoPipeline
    from kidneyseg.pipelines.mr_t2 import MRKidneyPipeline
    from kidneyseg.pipelines.unsupervised import UnsupervisedKidneyPipeline
    from kidneyseg.pipelines.us_ensemble import USEnsemblePipeline

    classes = {"mr-auto": MRAutoPipeline, "mr-t2-unet": MRKidneyPipeline, "mr-multiprotocol-unet": MRKidneyPipeline,
               "unsupervised-cluster": UnsupervisedKidneyPipeline, "us-ensemble": USEnsemblePipeline,
               "em-unet3d": EMUNetPipeline, "kits-unet3d": KitsUNetPipeline, "c2f-cascade": C2FCascadePipeline}
    assert set(classes) == set(PIPELINES)
    for name, cls in classes.items():
        info = PIPELINES[name]
        assert hasattr(cls, "disable_tta") == info.tta, name
        settable = "allow_ct" in cls.__init__.__code__.co_varnames or isinstance(getattr(cls, "allow_ct", None), property)
        assert settable == info.allow_ct, name


def test_kits_no_tta_turns_mirroring_off():
    from kidneyseg.pipelines import configure_pipeline
    from kidneyseg.pipelines.kits_unet3d import KitsUNetPipeline
    from kidneyseg.specs.kits import KitsConfig

    pipe = KitsUNetPipeline.__new__(KitsUNetPipeline)
    pipe.config = KitsConfig(mirror_tta=True)
    configure_pipeline(pipe, keep_largest=True, tta=False)
    assert pipe.config.mirror_tta is False


@pytest.mark.parametrize("pipeline", list(PIPELINES))
def test_preset_is_honoured_or_refused(pipeline, image, tmp_path, capsys):
    """--preset paper: honoured by the pipelines whose spec declares it, else one line, exit 2."""
    argv = ["segment", str(image), "-o", str(tmp_path / "out"), "--pipeline", pipeline, "--quiet", "--preset", "paper"]
    code = main(argv)
    err = capsys.readouterr().err
    refused = f"--preset paper: pipeline {pipeline} has no such preset" in err
    assert code == 2
    if "paper" in PIPELINES[pipeline].presets:
        assert not refused and "missing.nii.gz" in err, err
    else:
        assert refused and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "out").exists()
