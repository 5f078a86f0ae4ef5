"""Shared fixtures. Tests that need ../shared/data skip with a reason when it is absent."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
CHAOS = SHARED_DATA / "chaos_t2"
UKAT = SHARED_DATA / "ukat_kidney_masks"
KITS19 = SHARED_DATA / "kits_masks" / "kits19"

# traced networks (kidneyseg.models.compiled) go to a folder of this test process, not ~/.cache
os.environ["KIDNEYSEG_CACHE_DIR"] = tempfile.mkdtemp(prefix="kidneyseg-test-cache-")


def _share_cores_between_workers() -> None:
    """Under pytest-xdist, give each worker its share of the cores (torch's intra-op threads and
    ITK's threads in this process, OMP_NUM_THREADS for the processes it starts) instead of every
    worker taking them all. Tests that are about thread counts set their own."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers < 2:
        return
    share = max(1, (os.cpu_count() or 1) // workers)
    os.environ.setdefault("OMP_NUM_THREADS", str(share))
    from kidneyseg.inference.cpu import set_cpu_threads

    set_cpu_threads(share)


_share_cores_between_workers()

# Longest files first (longest-processing-time-first scheduling). With `--dist loadfile` each
# worker takes the next file in collection order when it is free, so a long file collected
# late runs alone at the end while the other worker idles. Seconds per file on 2 cores,
# 2026-12-03 (a slow hour): unsupervised_real 275, ultrasound 150, recipes 120, robustness 90, unsupervised 90.
SLOW_FILES_FIRST = ("pipelines/test_unsupervised_real.py", "pipelines/test_ultrasound.py", "cli/test_recipes.py",
                    "cli/test_robustness.py", "pipelines/test_unsupervised.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0].removeprefix("tests/"), len(rank)))  # stable


needs_chaos = pytest.mark.skipif(not CHAOS.is_dir(), reason="../shared/data/chaos_t2 not present")
needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data not present")


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def ellipsoid(shape, spacing, centre_mm, radii_mm) -> np.ndarray:
    """Boolean ellipsoid on a grid with the given spacing (voxel centres at index*spacing)."""
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    r = sum(((g - c) / a) ** 2 for g, c, a in zip(grids, centre_mm, radii_mm))
    return r <= 1.0


def save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


@pytest.fixture
def two_kidney_phantom():
    """(image, labels, affine): an RAS volume at (1.5, 1.5, 6) mm with two ellipsoidal
    'kidneys'; label 1 at larger world x (patient's right), label 2 at smaller x."""
    spacing = (1.5, 1.5, 6.0)
    shape = (96, 64, 20)
    right = ellipsoid(shape, spacing, (100, 48, 60), (18, 12, 40))
    left = ellipsoid(shape, spacing, (40, 48, 60), (18, 12, 40))
    labels = np.zeros(shape, np.uint8)
    labels[right] = 1
    labels[left] = 2
    affine = np.diag(list(spacing) + [1.0])
    affine[:3, 3] = (-72.0, -48.0, -60.0)
    rng = np.random.default_rng(0)
    image = (100 + 50 * (labels > 0) + rng.normal(0, 5, shape)).astype(np.float32)
    return image, labels, affine


def write_dicom_series(nifti_path: Path, folder: Path, modality: str = "MR", series_uid: str | None = None,
                       extra_tags: dict | None = None, prefix: str = "slice", first_instance: int = 1) -> Path:
    """Write a NIfTI volume as a DICOM series (one file per slice, SimpleITK), with the
    attributes a DICOM SEG needs of its source (SOP class, frame of reference, patient,
    study): real anatomy for DICOM tests. ``extra_tags`` (``"gggg|eeee"`` -> value), ``prefix``
    (file names) and ``first_instance`` (InstanceNumber and SOPInstanceUID suffix) let several
    volumes share one series (echoes, magnitude and phase)."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    itk = sitk.ReadImage(str(nifti_path), sitk.sitkInt16)  # ITK turns the NIfTI RAS affine into LPS
    series_uid = series_uid or "1.2.826.0.1.3680043.2.1125.1.%d" % (abs(hash(str(nifti_path))) % 10**8)
    sop_class = {"MR": "1.2.840.10008.5.1.4.1.1.4", "CT": "1.2.840.10008.5.1.4.1.1.2"}[modality]
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = np.array(itk.GetDirection()).reshape(3, 3)
    for k in range(itk.GetDepth()):
        sl = itk[:, :, k]
        tags = {"0008|0060": modality, "0008|0016": sop_class, "0020|000e": series_uid, "0020|000d": series_uid + ".0",
                "0020|0052": series_uid + ".9", "0008|0018": f"{series_uid}.{k + first_instance}",
                "0020|0013": str(k + first_instance),
                "0010|0010": "Test^Kidney", "0010|0020": "KS0001", "0008|0020": "20261124", "0008|0030": "120000",
                "0008|0050": "1", "0020|0010": "1", "0020|0011": "1", "0010|0030": "", "0010|0040": "O",
                "0008|0090": "", "0028|0030": "\\".join(f"{v:.6f}" for v in itk.GetSpacing()[1::-1]),
                "0018|0050": f"{itk.GetSpacing()[2]:.6f}",
                "0020|0032": "\\".join(f"{v:.6f}" for v in itk.TransformIndexToPhysicalPoint((0, 0, k))),
                "0020|0037": "\\".join(f"{v:.6f}" for v in direction[:, :2].T.ravel())}
        for tag, value in {**tags, **(extra_tags or {})}.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{prefix}_{k:03d}.dcm"))
        writer.Execute(sl)
    return folder


@pytest.fixture
def nnunet_dataset(tmp_path, two_kidney_phantom):
    """A 4-case nnU-Net raw dataset (imagesTr/, labelsTr/, dataset.json) of noisy copies of
    the two-kidney phantom."""
    image, labels, affine = two_kidney_phantom
    root = tmp_path / "Dataset001_Kidney"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(3)
    for i in range(4):
        save_nifti(image + rng.normal(0, 2, image.shape).astype(np.float32), affine, root / "imagesTr" / f"k_{i:03d}_0000.nii.gz")
        save_nifti(labels, affine, root / "labelsTr" / f"k_{i:03d}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T2"}, "labels": {"background": 0, "kidney_right": 1, "kidney_left": 2},
        "numTraining": 4, "file_ending": ".nii.gz"}))
    return root


@dataclass
class CliRun:
    """What a ``kidneyseg`` command gave: like ``subprocess.CompletedProcess`` (``returncode``,
    ``stdout``, ``stderr``) for a command run in-process."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def cli(*args, cwd: Path | None = None) -> CliRun:
    """Run ``kidneyseg ARGS`` in-process (``kidneyseg.cli.main``), capturing stdout and stderr.

    The exit status is what the console script would return (argparse errors: 2). Tests that
    need a real process (signals, kills, resource limits, concurrent writers, the console
    entry point itself) use ``subprocess`` instead; everything else uses this, so the suite
    does not import torch once per command. Not thread-safe (it swaps ``sys.stdout``/``stderr``).
    """
    import contextlib
    import io
    import logging
    import os

    from kidneyseg.cli import main

    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    before = os.getcwd()
    from kidneyseg.inference.cpu import cpu_threads, set_cpu_threads

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    threads = cpu_threads()  # torch's and SimpleITK's: --threads N must not outlive the command
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            root.handlers = []  # so main()'s logging.basicConfig writes to this command's stderr, as in a process
            try:
                code = main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    finally:
        root.handlers = handlers
        root.setLevel(level)
        set_cpu_threads(*threads)
        os.chdir(before)
    return CliRun(argv, int(code), out.getvalue(), err.getvalue())
