"""2D ultrasound: frame reading, scan sector, letterbox, the seed 003 ensemble, training on
phantoms, the ``us-ensemble`` pipeline through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from kidneyseg.datasets.us_phantom import make_phantoms
from kidneyseg.errors import InputError
from kidneyseg.metrics.overlap import dice
from kidneyseg.preprocess.ultrasound import Letterbox, read_us_frame, scan_sector, speckle_augment


def _png(path, array):
    PILImage.fromarray(array).save(path)
    return path


def test_scan_sector_on_phantoms_ignores_burnt_in_text():
    for p in make_phantoms(6, 11, (128, 160), text_p=1.0):
        found = scan_sector(p.image)
        assert dice(found, p.sector) > 0.98
        assert (p.sector & ~found).mean() < 0.002  # nothing of the field of view is lost
        assert not found[2:6, 3:30].any()  # the text block in the top-left corner is outside


def test_speckle_augment_keeps_range_and_outside_of_sector():
    p = make_phantoms(1, 3, (96, 128))[0]
    out = speckle_augment(p.image, np.random.default_rng(0), p.sector, p=1.0)
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
    assert (out[~p.sector] == 0).all() and not np.allclose(out, p.image)


@pytest.mark.parametrize("hw", [(100, 150), (150, 100), (64, 64), (333, 517)])
def test_letterbox_maps_back_to_the_input_grid(hw):
    lb = Letterbox(hw, (64, 96))
    rng = np.random.default_rng(0)
    mask = np.zeros(hw, np.uint8)
    mask[hw[0] // 4: 3 * hw[0] // 4, hw[1] // 3: 2 * hw[1] // 3] = 1
    canvas = lb.forward(mask, order=0)
    assert canvas.shape == (64, 96) and canvas.dtype == np.uint8
    back = lb.back(canvas, order=0)
    assert back.shape == hw and dice(back > 0, mask > 0) > 0.95
    img = rng.random(hw).astype(np.float32)
    assert lb.back(lb.forward(img), order=1).shape == hw


def test_read_colour_frame_removes_coloured_calipers(tmp_path):
    p = make_phantoms(1, 5, (128, 160))[0]
    grey = (p.image * 255).astype(np.uint8)
    rgb = np.stack([grey] * 3, axis=-1)
    rgb[60:63, 40:90] = (255, 255, 0)  # a yellow caliper line across the kidney
    frame = read_us_frame(_png(tmp_path / "colour.png", rgb), pixel_spacing_mm=0.25)
    assert frame.array.shape == (128, 160) and frame.array.dtype == np.float32
    assert frame.overlay is not None and frame.overlay[60:63, 40:90].all() and frame.overlay.sum() == 150
    assert frame.array[61, 40:90].mean() < 0.95  # the line is gone, replaced by the neighbourhood
    assert frame.pixel_spacing_mm == (0.25, 0.25)


def test_read_16_bit_and_bad_frames(tmp_path):
    a16 = (np.random.default_rng(0).random((64, 80)) * 65535).astype(np.uint16)
    f = read_us_frame(_png(tmp_path / "deep.png", a16))
    assert f.bit_depth == 16 and np.allclose(f.array, a16 / 65535.0, atol=1e-6)
    low = (np.random.default_rng(1).random((64, 80)) * 4000).astype(np.uint16)  # 12-bit data in 16-bit words
    assert read_us_frame(_png(tmp_path / "twelve.png", low)).array.max() == pytest.approx(1.0)
    with pytest.raises(InputError, match="constant"):
        read_us_frame(_png(tmp_path / "flat.png", np.full((64, 64), 7, np.uint8)))
    with pytest.raises(InputError, match="too small"):
        read_us_frame(_png(tmp_path / "tiny.png", np.eye(16, dtype=np.uint8) * 200))
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(InputError, match="text.png: not a readable image"):
        read_us_frame(tmp_path / "text.png")
    with pytest.raises(InputError, match="pixel-spacing-mm"):
        read_us_frame(tmp_path / "deep.png", pixel_spacing_mm=-1)


def test_dicom_frame_spacing_from_ultrasound_regions(tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundImageStorage, generate_uid

    img = (make_phantoms(1, 9, (96, 128))[0].image * 255).astype(np.uint8)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = UltrasoundImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.Rows, ds.Columns = img.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    region = Dataset()
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3  # cm
    region.PhysicalDeltaX, region.PhysicalDeltaY = 0.03, 0.04
    ds.SequenceOfUltrasoundRegions = [region]
    ds.PixelData = img.tobytes()
    path = tmp_path / "frame.dcm"
    ds.save_as(path, enforce_file_format=True)
    frame = read_us_frame(path)
    assert frame.pixel_spacing_mm == pytest.approx((0.4, 0.3))
    assert np.allclose(frame.array, img / 255.0)
    assert read_us_frame(path, pixel_spacing_mm=0.5).pixel_spacing_mm == (0.5, 0.5)  # the flag wins


def test_triple_concatenated_shapes_and_initial_fusion():
    from kidneyseg.models.us_ensemble import SEED_003_MEMBERS, TripleConcatenated

    torch.manual_seed(0)
    model = TripleConcatenated(SEED_003_MEMBERS).eval()
    assert [type(model.members[m]).__name__ for m in SEED_003_MEMBERS] == ["DeepLabV3Plus", "DeepLabV3Plus", "Linknet"]
    assert model.fusion.in_channels == 3 and model.fusion.out_channels == 1
    x = torch.rand(2, 1, 64, 96)
    with torch.inference_mode():
        logits = model.member_logits(x)
        fused = model(x)
    assert [tuple(t.shape) for t in logits] == [(2, 1, 64, 96)] * 3 and fused.shape == (2, 1, 64, 96)
    assert torch.allclose(fused, sum(logits) / 3, atol=1e-5)  # fusion starts as the members' mean
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.rand(1, 1, 60, 96))
    n152 = sum(p.numel() for p in model.members["deeplabv3plus_resnet152"].parameters())
    n18 = sum(p.numel() for p in model.members["deeplabv3plus_resnet18"].parameters())
    assert n152 > 4 * n18  # the deep member really is ResNet-152


def test_local_encoder_weights_are_loaded_for_grey_input(tmp_path):
    import torchvision

    from kidneyseg.models.us_ensemble import build_member

    ref = torchvision.models.resnet18(weights=None)  # stands for a user's ImageNet file
    torch.save(ref.state_dict(), tmp_path / "resnet18.pth")
    net = build_member("linknet_resnet18", encoder_weights=tmp_path / "resnet18.pth")
    assert torch.allclose(net.encoder.conv1.weight, ref.conv1.weight.sum(dim=1, keepdim=True))
    assert torch.equal(net.encoder.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / "resnet34.pth")
    with pytest.raises(InputError, match="does not fit the encoder"):
        build_member("linknet_resnet18", encoder_weights=tmp_path / "resnet34.pth")
    with pytest.raises(InputError, match="no such file"):
        build_member("linknet_resnet18", encoder_weights=tmp_path / "missing.pth")


# A short CPU training on phantoms, shared by the tests below (about a minute).
SIZE = (64, 64)


@pytest.fixture(scope="module")
def phantom_model(tmp_path_factory):
    from kidneyseg.training.us import USSample, USTrainConfig, train_us_ensemble

    train = [USSample(p.image, p.capsule, p.sector) for p in make_phantoms(48, 1, SIZE)]
    val = [USSample(p.image, p.capsule, p.sector) for p in make_phantoms(20, 2, SIZE)]
    cfg = USTrainConfig(members=("deeplabv3plus_resnet18", "linknet_resnet18"), image_size=SIZE, epochs=12,
                        fusion_epochs=2, device="cpu", seed=0)
    out = train_us_ensemble(cfg, train, tmp_path_factory.mktemp("us_model") / "model", validation=val, progress=False)
    return out


def test_short_training_on_phantoms_segments_held_out_phantoms(phantom_model):
    summary = json.loads((phantom_model / "training_summary.json").read_text())
    val = summary["validation_dice"]
    assert set(val) == {"fused", "deeplabv3plus_resnet18", "linknet_resnet18"}
    assert val["fused"] >= 0.85, val
    assert val["fused"] >= min(val["deeplabv3plus_resnet18"], val["linknet_resnet18"])
    assert summary["epochs_done"] == {"member:deeplabv3plus_resnet18": 12, "member:linknet_resnet18": 12, "fusion": 2}
    assert not (phantom_model / "checkpoint.pt").exists()


def test_api_segment_frame_of_another_size(phantom_model):
    """A frame larger than the canvas, with an aspect ratio of its own, comes back on its grid."""
    import kidneyseg

    p = make_phantoms(1, 21, (96, 80))[0]
    res = kidneyseg.segment(p.image, pipeline="us-ensemble", model=phantom_model, device="cpu", pixel_spacing_mm=0.4)
    assert res.mask.shape == (96, 80) and res.mask.dtype == np.uint8 and set(np.unique(res.mask)) <= {0, 1}
    assert dice(res.mask > 0, p.capsule) > 0.75
    assert res.area_mm2 == pytest.approx(res.area_px * 0.16)
    assert not (res.mask.astype(bool) & ~p.sector).any()


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "kidneyseg.cli", *map(str, args)], capture_output=True,
                          text=True, encoding="utf-8", timeout=timeout)


def test_cli_segment_ultrasound_folder(phantom_model, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    truth = {}
    for i, p in enumerate(make_phantoms(3, 31, SIZE)):
        grey = (p.image * 255).astype(np.uint8)
        if i == 1:  # a colour export
            grey = np.stack([grey] * 3, axis=-1)
        _png(frames / f"us_{i}.png", grey)
        truth[f"us_{i}"] = p.capsule
    (frames / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "out"
    r = _cli("segment", frames, "-o", out, "--pipeline", "us-ensemble", "--model", phantom_model,
             "--pixel-spacing-mm", "0.3", "--device", "cpu", "--quiet")
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "broken.png" in r.stderr and "not a readable image" in r.stderr
    rows = json.loads((out / "areas.json").read_text())
    assert [row["case"] for row in rows] == ["us_0", "us_1", "us_2"]
    for row in rows:
        seg = np.asarray(PILImage.open(out / f"{row['case']}_seg.png"))
        assert seg.shape == SIZE and seg.dtype == np.uint8
        assert dice(seg > 0, truth[row["case"]]) > 0.75
        assert row["kidney_area_px"] == int(seg.sum())
        assert row["kidney_area_mm2"] == pytest.approx(seg.sum() * 0.09, abs=0.01)
        assert json.loads((out / f"{row['case']}_labels.json").read_text()) == {"1": "kidney"}
        PILImage.open(out / f"{row['case']}_overlay.png").load()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert not (out / "broken_seg.png").exists()


def test_cli_ultrasound_without_model_or_with_a_3d_model(tmp_path):
    _png(tmp_path / "f.png", (make_phantoms(1, 4, SIZE)[0].image * 255).astype(np.uint8))
    r = _cli("segment", tmp_path / "f.png", "-o", tmp_path / "out", "--pipeline", "us-ensemble")
    assert r.returncode == 2 and "no model is shipped for ultrasound" in r.stderr and r.stderr.count("\n") == 1
    from kidneyseg.models.store import default_model_dir

    r = _cli("segment", tmp_path / "f.png", "-o", tmp_path / "out", "--pipeline", "us-ensemble", "--model", default_model_dir())
    assert r.returncode == 2 and "not us-ensemble" in r.stderr
    assert not (tmp_path / "out").exists()


def test_training_resumes_after_a_kill(tmp_path):
    """A run killed after its first epoch's checkpoint ends with the same weights as a run
    that was never interrupted."""
    script = (
        "import sys, torch\n"
        "from kidneyseg.datasets.us_phantom import make_phantoms\n"
        "from kidneyseg.training.us import USSample, USTrainConfig, train_us_ensemble\n"
        "torch.set_num_threads(1)\n"
        "s = [USSample(p.image, p.capsule, p.sector) for p in make_phantoms(16, 1, (64, 64))]\n"
        "cfg = USTrainConfig(members=('linknet_resnet18',), image_size=(64, 64), epochs=4, device='cpu', batch_size=4)\n"
        "train_us_ensemble(cfg, s, sys.argv[1], progress=False)\n"
    )
    (tmp_path / "train.py").write_text(script)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run([sys.executable, tmp_path / "train.py", whole], check=True, timeout=300)
    proc = subprocess.Popen([sys.executable, tmp_path / "train.py", killed])
    t0 = time.monotonic()
    while not (killed / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() - t0 < 300:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    if (killed / "model.pt").exists():
        pytest.skip("the run finished before it could be killed")
    subprocess.run([sys.executable, tmp_path / "train.py", killed], check=True, timeout=300)
    a = torch.load(whole / "model.pt", weights_only=True)
    b = torch.load(killed / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_end_to_end_mode_trains_members_and_fusion_together(tmp_path):
    from kidneyseg.pipelines.us_ensemble import USEnsemblePipeline
    from kidneyseg.training.us import USSample, USTrainConfig, train_us_ensemble

    s = [USSample(p.image, p.capsule, p.sector) for p in make_phantoms(8, 1, (64, 64))]
    cfg = USTrainConfig(members=("deeplabv3plus_resnet18", "linknet_resnet18"), mode="end-to-end", image_size=(64, 64),
                        epochs=1, device="cpu", batch_size=4)
    out = train_us_ensemble(cfg, s, tmp_path / "m", progress=False)
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["epochs_done"] == {"end-to-end": 1}
    fused = USEnsemblePipeline.load(out, device="cpu").model.fusion.weight.detach()
    assert not torch.allclose(fused[0, :, 1, 1], torch.tensor([0.5, 0.5]))  # the fusion layer was trained too
