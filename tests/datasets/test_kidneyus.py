"""The Open Kidney Ultrasound reader on the real published annotation files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image as PILImage

from kidneyseg.datasets.kidneyus import REGION_LABELS, KidneyUSDataset, patient_id, read_via_csv, staple
from kidneyseg.errors import InputError

from ..conftest import SHARED_DATA, cli

LABELS = SHARED_DATA / "kidneyus_labels"
needs_kidneyus = pytest.mark.skipif(not LABELS.is_dir(), reason="../shared/data/kidneyus_labels not present")


@pytest.fixture(scope="module")
def dataset():
    return KidneyUSDataset.load(LABELS)


@needs_kidneyus
def test_counts_and_attributes(dataset):
    assert len(dataset.cases) == 534
    assert dataset.missing_images == sorted(dataset.cases)  # no image folder given: every image is missing
    anns1 = [c.annotations[1] for c in dataset.cases.values()]
    anns2 = [c.annotations[2] for c in dataset.cases.values()]
    assert len(anns1) == len(anns2) == 534
    assert {a.view for a in anns1} == {"Longitudinal", "Transverse", "Other"}
    # 7 images of sonographer 1 and 13 of sonographer 2 carry contradicting file attributes
    # on different rows (e.g. both views); the first row's are kept and the others reported
    conflicts = [p for p in dataset.problems if not p.skipped]
    assert len({(p.path.name, p.reason.split(":")[0]) for p in conflicts}) == 20
    assert not [p for p in dataset.problems if p.skipped]
    assert {p.path.name for p in conflicts if p.reason.startswith("20_IM-0861-0005_anon.png")} == {
        "reviewed_labels_1.csv", "reviewed_labels_2.csv"}
    assert sum(a.view == "Longitudinal" for a in anns1) == 371
    assert {a.quality for a in anns1} == {"Good", "Fair", "Poor", "Unsatisfactory"}
    # 1698 CSV rows of sonographer 1: 47 images with nothing drawn, 1651 shapes (1650 polygons + 1 rect)
    assert sum(len(a.shapes) for a in anns1) == 1651
    assert sum(not a.shapes for a in anns1) == 47
    assert sum(s.anatomy == "capsule" for a in anns1 for s in a.shapes) == 487
    assert all(len(c.capsule_paths) == 2 and len(c.regions_paths) == 2 for c in dataset.cases.values())
    first = dataset.cases["1_IM-0001-0059_anon.png"]
    assert first.annotations[1].view == "Transverse"
    assert first.shape_hw() == (480, 640) == np.asarray(PILImage.open(LABELS / "reviewed_masks_2/regions" / first.name)).shape
    assert [s.anatomy for s in first.annotations[1].shapes] == ["capsule", "central_echo_complex", "medulla", "cortex"]


@needs_kidneyus
def test_polygons_rasterise_to_the_published_masks(dataset):
    """The CSV polygons, filled, match the published capsule PNGs (Dice >= 0.98 on every one of
    the first 60 images with a capsule), and the region PNG values are 1 central echo complex,
    2 medulla, 3 cortex."""
    checked = 0
    for name in list(dataset.cases)[:60]:
        case = dataset.cases[name]
        hw = case.shape_hw()
        drawn = case.annotations[1].mask("capsule", hw)
        published = case.capsule("sonographer1")
        if not drawn.any():
            assert not published.any()
            continue
        d = 2 * (drawn & published).sum() / (drawn.sum() + published.sum())
        assert d >= 0.98, (name, d)
        regions = case.regions(1)
        for value, anatomy in REGION_LABELS.items():
            m = case.annotations[1].mask(anatomy, hw)
            if m.sum() > 200:
                assert np.bincount(regions[m], minlength=4).argmax() == value, (name, anatomy)
        checked += 1
    assert checked >= 50


@needs_kidneyus
def test_references_intersection_union_staple(dataset):
    case = dataset.cases["1_IM-0001-0059_anon.png"]
    a, b = case.capsule("sonographer1"), case.capsule("sonographer2")
    inter, union, st = case.capsule("intersection"), case.capsule("union"), case.capsule("staple")
    assert inter.sum() < min(a.sum(), b.sum()) <= max(a.sum(), b.sum()) < union.sum()
    assert (inter <= st).all() and (st <= union).all()  # STAPLE keeps agreement, decides the disagreement
    with pytest.raises(InputError, match="unknown 'majority'"):
        case.capsule("majority")
    assert not staple([np.zeros((4, 4), bool), np.zeros((4, 4), bool)]).any()


@needs_kidneyus
def test_split_is_seeded_and_by_patient(dataset):
    s0, s0b, s1 = dataset.split(0), dataset.split(0), dataset.split(1)
    assert s0 == s0b and s0 != s1
    assert sum(len(v) for v in s0.values()) == 534
    sizes = [len(s0[k]) for k in ("train", "validation", "test")]
    assert abs(sizes[0] - 534 * 295 / 514) <= 3 and abs(sizes[2] - 534 * 159 / 514) <= 3
    owner = {}
    for part, names in s0.items():
        for n in names:
            assert owner.setdefault(patient_id(n), part) == part, f"patient {patient_id(n)} in two sets"
    assert patient_id("130_IM-0650-0033_anon.png") == "130"


@needs_kidneyus
def test_images_are_matched_and_missing_ones_reported(dataset, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    names = list(dataset.cases)[:3]
    for n in names:
        h, w = dataset.cases[n].shape_hw()
        PILImage.fromarray(np.full((h, w), 40, np.uint8)).save(images / n)
    PILImage.fromarray(np.zeros((8, 8), np.uint8)).save(images / "not_annotated.png")
    ds = KidneyUSDataset.load(LABELS, images)
    assert [n for n in ds.cases if ds.cases[n].image_path is not None] == names
    assert len(ds.missing_images) == 531 and ds.unannotated_images == ["not_annotated.png"]


def _csv(tmp_path, rows: list[str]):
    p = tmp_path / "reviewed_labels_1.csv"
    header = "filename,file_size,file_attributes,region_count,region_id,region_shape_attributes,region_attributes"
    p.write_text("\n".join([header, *rows]) + "\n")
    return p


GOOD = ('a.png,1,"{""Quality"":""Fair"",""View"":""Transverse"",""Comments"":""""}",1,0,'
        '"{""name"":""polygon"",""all_points_x"":[1,9,9],""all_points_y"":[1,1,9]}","{""Anatomy"":""Capsule""}"')


@pytest.mark.parametrize("bad, reason", [
    ('b.png,1,"{}",1,0,"{""name"":""polygon"",""all_points_x"":[1,9,9],""all_points_y"":[1,1]}","{""Anatomy"":""Capsule""}"',
     "3 x but 2 y"),
    ('b.png,1,"{}",1,0,"{""name"":""polygon"",""all_points_x"":[1,9],""all_points_y"":[1,1]}","{""Anatomy"":""Capsule""}"',
     "2 vertices"),
    ('b.png,1,"{}",1,0,"{""name"":""polygon"",""all_points_x"":[1,9,9}","{""Anatomy"":""Capsule""}"', "Expecting"),
    ('b.png,1,"{}",1,0,"{""name"":""circle"",""cx"":1}","{""Anatomy"":""Capsule""}"', "unsupported VIA shape 'circle'"),
    ('b.png,1,"{}",1,0,"{""name"":""polygon"",""all_points_x"":[1,9,9],""all_points_y"":[1,1,9]}","{""Anatomy"":""Liver""}"',
     "unknown Anatomy 'Liver'"),
])
def test_malformed_polygon_row_names_file_and_row(tmp_path, bad, reason):
    p = _csv(tmp_path, [GOOD, bad])
    with pytest.raises(InputError) as err:
        read_via_csv(p)
    msg = str(err.value)
    assert str(p) in msg and "row 3" in msg and reason in msg and "\n" not in msg
    anns, problems = read_via_csv(p, errors="skip")  # or skipped and reported
    assert list(anns) == ["a.png"] and len(problems) == 1 and problems[0].row == 3 and problems[0].skipped


def test_not_a_label_folder(tmp_path):
    with pytest.raises(InputError, match="no reviewed_labels_1.csv"):
        KidneyUSDataset.load(tmp_path)
    _csv(tmp_path, [GOOD])
    shutil.copy(tmp_path / "reviewed_labels_1.csv", tmp_path / "x.csv")
    ds = KidneyUSDataset.load(tmp_path)
    assert list(ds.cases) == ["a.png"] and ds.cases["a.png"].annotations[1].mask("capsule", (12, 12)).sum() > 20


@needs_kidneyus
def test_evaluate_png_masks_with_summed_confusion(dataset, tmp_path):
    """`kidneyseg evaluate` on 2D PNG masks (sonographer 2 scored against sonographer 1):
    seed 003's per-image metrics and the confusion matrix summed over the images."""
    import csv

    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir()
    ref.mkdir()
    names = [n for n in dataset.cases if dataset.cases[n].capsule("sonographer1").any()][:4]
    total = 0
    for n in names:
        shutil.copy(dataset.cases[n].capsule_paths[2], pred / n.replace(".png", "_seg.png"))  # kidneyseg's output name
        shutil.copy(dataset.cases[n].capsule_paths[1], ref / n)
        total += int(np.prod(dataset.cases[n].shape_hw()))
    out = tmp_path / "eval"
    r = cli("evaluate", pred, ref, "-o", out, "--regions", "foreground", "--no-plots", "--quiet")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(out / "metrics.csv", encoding="utf-8")))
    assert [row["case"] for row in rows] == [n[:-4] for n in names]
    (conf,) = list(csv.DictReader(open(out / "confusion.csv", encoding="utf-8")))
    tp, fp, fn, tn = (int(conf[k]) for k in ("tp", "fp", "fn", "tn"))
    assert tp + fp + fn + tn == total and int(conf["cases"]) == 4
    assert tp == sum(int(row["tp"]) for row in rows)
    for row, n in zip(rows, names):
        a, b = dataset.cases[n].capsule("sonographer2"), dataset.cases[n].capsule("sonographer1")
        assert int(row["tp"]) == int((a & b).sum()) and int(row["fn"]) == int((~a & b).sum())
        assert float(row["f1"]) == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()))
    doc = json.loads((out / "metrics.json").read_text())
    assert "in pixels" in doc["settings"]["png_units"] and doc["confusion"][0]["tp"] == tp


@needs_kidneyus
def test_cli_train_us_ensemble_on_the_open_kidney_layout(dataset, tmp_path):
    """`kidneyseg train --pipeline us-ensemble` reads the published annotations and a user's
    image folder (here: synthetic frames drawn from the real capsule masks, the real images
    being released only after registration), trains on the train split only and writes a
    model folder that `segment` loads."""

    from kidneyseg.pipelines.us_ensemble import USEnsemblePipeline

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    split = dataset.split(0)
    use = split["train"][:6] + split["validation"][:2] + split["test"][:2]
    for n in use:
        cap = dataset.cases[n].capsule("staple")
        img = np.where(cap, 90, 160) * rng.rayleigh(1.0, cap.shape) / 1.25
        PILImage.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(images / n)
    (tmp_path / "cfg.json").write_text(json.dumps({"members": ["linknet_resnet18"], "fusion_epochs": 0, "batch_size": 4}))
    out = tmp_path / "model"
    r = cli("train", "--pipeline", "us-ensemble", "--dataset", LABELS, "--images", images, "-o", out, "--config",
            tmp_path / "cfg.json", "--epochs", "1", "--patch-size", "64", "64", "--reference", "staple",
            "--device", "cpu", "--quiet")
    assert r.returncode == 0, r.stderr
    saved = json.loads((out / "split.json").read_text())
    assert saved["reference"] == "staple" and saved["test"] == split["test"]
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["train_images"] == 6  # the test and validation images were not trained on
    assert set(summary["validation_dice"]) == {"fused", "linknet_resnet18"}
    pipe = USEnsemblePipeline.load(out, device="cpu")
    assert pipe.config.image_size == (64, 64) and pipe.config.members == ("linknet_resnet18",)
    r = cli("train", "--pipeline", "us-ensemble", "--dataset", LABELS, "--images", tmp_path / "cfg.json", "-o",
            tmp_path / "m2")
    assert r.returncode == 2 and "no such folder" in r.stderr
