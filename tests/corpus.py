"""A corpus of bad (and odd but valid) inputs, generated into a folder at test time.

Each :class:`Kind` makes an image for ``segment`` and ``info`` and a mask for ``evaluate``
(scored against the clean reference mask), and states the exit status each command must
give: 0 (a correct result) or 2 (one clear line), never 1 (an internal error). Built from
a crop of the bundled CHAOS example (case 39, CC BY-SA 4.0) so valid inputs are real
anatomy. Nothing here is committed as a binary.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np

from kidneyseg.api import example_dir

CROP = (slice(28, 228), slice(40, 220), slice(None))


@dataclass
class Base:
    image: np.ndarray  # float32, cropped example
    mask: np.ndarray  # uint8 labels 1 right, 2 left
    affine: np.ndarray
    folder: Path

    def save(self, array, name, affine=None, header=None) -> Path:
        path = self.folder / name
        aff = self.affine if affine is None else affine
        try:
            img = nib.Nifti1Image(array, aff, header)
        except nib.spatialimages.HeaderDataError:  # a singular affine cannot be a qform: sform only
            img = nib.Nifti1Image(array, None, header)
            img.set_sform(aff, code=1)
            img.set_qform(None, code=0)
        nib.save(img, str(path))
        return path


@dataclass
class Kind:
    name: str
    info: int | None
    segment: int | None
    evaluate: int | None
    make: Callable[[Base], tuple[Path, Path | None]]
    output: str = "normal"  # normal | is_file | read_only | fsize_limit
    message: str = ""  # a fragment the error line must contain


def load_base(folder: Path) -> Base:
    ex = example_dir()
    img = nib.load(str(ex / "image_39.nii.gz"))
    mask = nib.load(str(ex / "label_39_kidneys.nii.gz"))
    affine = img.affine.copy()
    affine[:3, 3] = img.affine[:3, :3] @ np.array([CROP[0].start, CROP[1].start, 0]) + img.affine[:3, 3]
    image = np.asarray(img.dataobj, dtype=np.float32)[CROP]
    labels = np.asarray(mask.dataobj).astype(np.uint8)[CROP]
    folder.mkdir(parents=True, exist_ok=True)
    base = Base(np.ascontiguousarray(image), np.ascontiguousarray(labels), affine, folder)
    base.save(base.mask, "reference_mask.nii.gz")
    return base


def _pair(base: Base, name: str, image: np.ndarray | None, mask: np.ndarray | None, affine=None, header=None):
    ip = base.save(image, f"{name}.nii.gz", affine, header) if image is not None else None
    mp = base.save(mask, f"{name}_mask.nii.gz", affine, header) if mask is not None else None
    return ip, mp


def _raw(base: Base, name: str, data: bytes) -> tuple[Path, Path]:
    p = base.folder / name
    p.write_bytes(data)
    return p, p


def _truncated(base):
    good = base.save(base.image, "whole.nii.gz").read_bytes()
    return _raw(base, "truncated.nii.gz", good[: len(good) // 2])


def _truncated_nii(base):
    p = base.folder / "whole.nii"
    nib.save(nib.Nifti1Image(base.image, base.affine), str(p))
    data = p.read_bytes()
    p.unlink()
    return _raw(base, "truncated.nii", data[: len(data) // 3])


def _claims(base, name: str, shape, gz: bool):
    """A valid NIfTI header claiming ``shape`` float32 voxels, followed by a few bytes of data
    (issue 24: memory must follow the file, not the header)."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(np.float32)
    hdr.set_zooms((1.0, 1.0, 1.0))
    hdr.set_sform(np.eye(4), code=1)
    hdr.set_qform(np.eye(4), code=1)
    hdr["vox_offset"] = 352
    data = hdr.binaryblock + b"\0" * (352 - len(hdr.binaryblock)) + b"\0" * 1000
    return _raw(base, name, gzip.compress(data) if gz else data)


def _handedness(base):
    """qform and sform of opposite handedness (the qform's x axis flipped, the sform as the
    reference's): a warning naming the conflict, the sform used, the result as for the clean file."""
    flipped = base.affine.copy()
    flipped[:, 0] *= -1
    paths = []
    for array, name in ((base.image, "handedness.nii.gz"), (base.mask, "handedness_mask.nii.gz")):
        img = nib.Nifti1Image(array, None)
        img.set_sform(base.affine, code=2)
        img.set_qform(flipped, code=1)
        p = base.folder / name
        nib.save(img, str(p))
        paths.append(p)
    return paths[0], paths[1]


def _header_bytes(base, name: str, offset: int, fmt: str, value) -> tuple[Path, Path]:
    """The example written as an uncompressed .nii with one header field overwritten in place."""
    import struct

    p = base.folder / "plain_for_header_edit.nii"
    nib.save(nib.Nifti1Image(base.image, base.affine), str(p))
    data = bytearray(p.read_bytes())
    p.unlink()
    data[offset:offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    return _raw(base, name, bytes(data))


def _no_xform_pixdim(base, name: str, pixdim: tuple[float, float, float]) -> tuple[Path, Path]:
    """A .nii with neither qform nor sform (codes 0) whose pixdim is then overwritten."""
    import struct

    p = base.folder / "plain_no_xform.nii"
    nib.save(nib.Nifti1Image(base.image, None), str(p))
    data = bytearray(p.read_bytes())
    p.unlink()
    data[80:92] = struct.pack("<3f", *pixdim)  # pixdim[1:4]
    return _raw(base, name, bytes(data))


def _dicom_sr(base):
    """A DICOM structured report beside an image series: given as input, it used to be read as
    the folder's image series."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder, _ = _dicom(base, "dicom_with_sr", lambda *a: None)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID = "SR", generate_uid(), generate_uid()
    sr = folder / "report.dcm"
    ds.save_as(sr, enforce_file_format=True)
    return sr, sr


def _wrong_extension(base):
    data = base.save(base.image, "as_gz.nii.gz").read_bytes()
    return _raw(base, "scan.txt", data)


def _image_4d(base):
    vol = np.stack([base.image] * 3, axis=-1)
    return _pair(base, "image_4d", vol, np.stack([base.mask] * 3, axis=-1))


def _with(base, name, fn_image, fn_mask=None):
    im = fn_image(base.image.copy())
    mk = (fn_mask or (lambda m: m))(base.mask.copy())
    return _pair(base, name, im, mk)


def _nan(a):
    a = a.astype(np.float32)
    a[5:9, 5:9, 3] = np.nan
    return a


def _inf(a):
    a = a.astype(np.float32)
    a[5:9, 5:9, 3] = np.inf
    return a


def _spacing(base, name, diag, shape=None):
    aff = np.diag(list(diag) + [1.0])
    aff[:3, 3] = base.affine[:3, 3]
    im, mk = base.image, base.mask
    if shape is not None:
        im, mk = im[shape], mk[shape]
    return _pair(base, name, im, mk, affine=aff)


def _singular(base):
    aff = base.affine.copy()
    aff[:3, 1] = aff[:3, 0]  # two axes along the same world direction
    return _pair(base, "singular", base.image, base.mask, affine=aff)


def _oblique(base):
    c, s = np.cos(np.deg2rad(20)), np.sin(np.deg2rad(20))
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    aff = base.affine.copy()
    aff[:3, :3] = rot @ aff[:3, :3]
    return _pair(base, "oblique", base.image, base.mask, affine=aff)


def _psl(base):
    """The same anatomy stored in P-S-L axis order (one of the 48 orientations)."""
    ornt = nib.orientations.ornt_transform(nib.orientations.io_orientation(base.affine),
                                           nib.orientations.axcodes2ornt(("P", "S", "L")))
    img = nib.Nifti1Image(base.image, base.affine).as_reoriented(ornt)
    msk = nib.Nifti1Image(base.mask, base.affine).as_reoriented(ornt)
    return _pair(base, "orientation_psl", np.asarray(img.dataobj), np.asarray(msk.dataobj), affine=img.affine)


def _rgb(base):
    rgb = np.zeros(base.image.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    scaled = (255 * base.image / base.image.max()).astype(np.uint8)
    rgb["R"], rgb["G"], rgb["B"] = scaled, scaled, scaled
    return _pair(base, "rgb", rgb, rgb)


def _large(base):
    """1024 x 1024 x 600 uint8, all zero, written lazily (a sparse file: header then a hole)."""
    p = base.folder / "large_1024x1024x600.nii"
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((1024, 1024, 600))
    hdr.set_data_dtype(np.uint8)
    hdr.set_zooms((0.7, 0.7, 1.0))
    hdr.set_sform(np.diag([0.7, 0.7, 1.0, 1.0]), code=1)
    hdr.set_qform(np.diag([0.7, 0.7, 1.0, 1.0]), code=1)
    hdr["vox_offset"] = 352
    with open(p, "wb") as f:
        f.write(hdr.binaryblock)
        f.write(b"\0" * (352 - len(hdr.binaryblock)))
        f.truncate(352 + 1024 * 1024 * 600)
    return p, p


def _dicom(base, name, mutate):
    import SimpleITK as sitk

    folder = base.folder / name
    folder.mkdir()
    vol = np.clip(base.image, 0, None).astype(np.int16)
    img = sitk.GetImageFromArray(vol.transpose(2, 1, 0))
    img.SetSpacing((1.25, 1.25, 7.7))
    series = "1.2.826.0.1.3680043.2.1125.1.%d" % abs(hash(name) % 10**8)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    files = []
    for z in range(vol.shape[2]):
        sl = img[:, :, z]
        pos = img.TransformIndexToPhysicalPoint((0, 0, z))
        for key, val in (("0020|000e", series), ("0020|0032", "\\".join(f"{v:.4f}" for v in pos)),
                         ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0020|0013", str(z + 1)), ("0008|0060", "MR"),
                         ("0028|0030", "1.25\\1.25"), ("0018|0050", "7.7"),
                         ("0008|0018", f"{series}.{z + 1}"), ("0020|000d", "1.2.826.0.1.3680043.2.1125.9")):
            sl.SetMetaData(key, val)
        f = folder / f"slice_{z:03d}.dcm"
        writer.SetFileName(str(f))
        writer.Execute(sl)
        files.append(f)
    mutate(folder, files, sitk)
    return folder, folder


def _drop_slice(folder, files, sitk):
    files[len(files) // 2].unlink()


def _strip_geometry(folder, files, sitk, which=None, tags=("ImagePositionPatient", "ImageOrientationPatient")):
    import pydicom

    for f in files if which is None else [files[which]]:
        ds = pydicom.dcmread(f)
        for tag in tags:
            if tag in ds:
                delattr(ds, tag)
        ds.save_as(f)


def _one_position_missing_and_a_slice_gone(folder, files, sitk):
    _strip_geometry(folder, files, sitk, which=3, tags=("ImagePositionPatient",))
    files[len(files) // 2].unlink()


def _one_pixel_spacing(folder, files, sitk):
    import pydicom

    ds = pydicom.dcmread(files[7])
    ds.PixelSpacing = [2.5, 2.5]
    ds.save_as(files[7])


def _second_series(folder, files, sitk):
    for f in files[:5]:
        img = sitk.ReadImage(str(f))
        img.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.2.77")
        img.SetMetaData("0008|0018", img.GetMetaData("0008|0018") + ".9")
        w = sitk.ImageFileWriter()
        w.KeepOriginalImageUIDOn()
        w.SetFileName(str(folder / f"other_{f.name}"))
        w.Execute(img)


def _mixed_sizes(folder, files, sitk):
    f = files[3]
    img = sitk.ReadImage(str(f))
    small = img[: img.GetSize()[0] // 2, :, :]
    for k in img.GetMetaDataKeys():
        if k not in ("0028|0010", "0028|0011"):
            small.SetMetaData(k, img.GetMetaData(k))
    w = sitk.ImageFileWriter()
    w.KeepOriginalImageUIDOn()
    w.SetFileName(str(f))
    w.Execute(small)


def _named(base, name):
    return _pair(base, name, base.image, base.mask)


def _broken_symlink(base):
    p = base.folder / "dangling.nii.gz"
    os.symlink(base.folder / "does_not_exist.nii.gz", p)
    return p, p


def _empty_dir(base):
    d = base.folder / "empty_folder"
    d.mkdir()
    return d, d


def _slope_nan(base):
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.int16)
    im = base.save(np.clip(base.image, 0, None).astype(np.int16), "slope_nan.nii.gz", header=hdr)
    img = nib.load(str(im))
    raw = bytearray(gzip.decompress(im.read_bytes()))
    hdr2 = img.header.copy()
    hdr2["scl_slope"] = np.nan
    raw[: len(hdr2.binaryblock)] = hdr2.binaryblock
    im.write_bytes(gzip.compress(bytes(raw)))
    return im, base.save(base.mask, "slope_nan_mask.nii.gz")


def _mixed_folder(base):
    d = base.folder / "mixed_folder"
    d.mkdir()
    nib.save(nib.Nifti1Image(base.image, base.affine), str(d / "good.nii.gz"))
    (d / "bad.nii.gz").write_text("not an image\n")
    return d, None


def kinds() -> list[Kind]:
    """Every corpus entry with the exit status of info, segment and evaluate (None: not run)."""
    return [
        Kind("truncated_nii_gz", 2, 2, 2, _truncated, message="truncated"),
        Kind("truncated_nii", 2, 2, 2, _truncated_nii, message="truncated"),
        Kind("header_claims_1200_cubed_nii", 2, 2, 2, lambda base: _claims(base, "claims.nii", (1200,) * 3, False),
             message="the header claims"),
        Kind("header_claims_1200_cubed_nii_gz", 2, 2, 2,
             lambda base: _claims(base, "claims.nii.gz", (1200,) * 3, True), message="header claims"),
        Kind("header_claims_30000_cubed_nii_gz", 2, 2, 2,
             lambda base: _claims(base, "claims_huge.nii.gz", (30000,) * 3, True), message="header claims"),
        Kind("text_as_nii_gz", 2, 2, 2, lambda base: _raw(base, "text.nii.gz", b"just some text\n"), message="NIfTI"),
        Kind("wrong_extension", 2, 2, 2, _wrong_extension, message="unsupported file type"),
        Kind("zero_bytes", 2, 2, 2, lambda base: _raw(base, "zero_bytes.nii.gz", b""), message="0 bytes"),
        Kind("image_2d", 0, 2, 2, lambda base: _pair(base, "image_2d", base.image[:, :, 15], base.mask[:, :, 15]),
             message="expected a 3D"),
        Kind("image_4d", 0, 2, 2, _image_4d, message="4D"),
        Kind("nan_voxels", 0, 2, 2, lambda base: _with(base, "nan", _nan, _nan), message="NaN"),
        Kind("inf_voxels", 0, 2, 2, lambda base: _with(base, "inf", _inf, _inf), message="NaN or Inf"),
        Kind("all_zero", 0, 2, 0, lambda base: _with(base, "all_zero", np.zeros_like, np.zeros_like), message="constant"),
        Kind("constant", 0, 2, 0, lambda base: _with(base, "const", lambda a: np.full_like(a, 7), lambda m: np.full_like(m, 7)),
             message="constant"),
        Kind("int8", 0, 0, 0, lambda base: _with(base, "int8", lambda a: (a / a.max() * 127).astype(np.int8),
                                                 lambda m: m.astype(np.int8))),
        Kind("uint16", 0, 0, 0, lambda base: _with(base, "uint16", lambda a: a.astype(np.uint16), lambda m: m.astype(np.uint16))),
        Kind("float64", 0, 0, 0, lambda base: _with(base, "float64", lambda a: a.astype(np.float64), lambda m: m.astype(np.float64))),
        Kind("complex", 2, 2, 2, lambda base: _with(base, "complex", lambda a: a.astype(np.complex64), lambda m: m.astype(np.complex64)),
             message="complex64"),
        Kind("binary_image", 0, 0, 0, lambda base: _with(base, "binary", lambda a: (a > np.percentile(a, 90)).astype(np.uint8),
                                                         lambda m: (m > 0).astype(np.uint8))),
        Kind("extreme_values", 0, 0, 2, lambda base: _with(base, "extreme", lambda a: a * 1e30, lambda m: m * 0.5)),
        Kind("rgb", 2, 2, 2, _rgb, message="unsupported voxel type"),
        Kind("intensity_image_as_mask", None, None, 2,
             lambda base: _with(base, "intensity_mask", lambda a: a, lambda m: base.image.astype(np.int32))),
        Kind("float_label_above_2_31", None, None, 2,
             lambda base: _with(base, "float_big_label", lambda a: a, lambda m: m.astype(np.float32) * 3e9)),
        Kind("huge_spacing", 0, 2, 2, lambda base: _spacing(base, "huge_spacing", (100.0, 100.0, 7.7)), message="implausible"),
        Kind("zero_spacing", 0, 2, 2, lambda base: _spacing(base, "zero_spacing", (1.25, 0.0, 7.7)), message="singular"),
        Kind("singular_affine", 0, 2, 2, _singular, message="singular"),
        Kind("oblique_affine", 0, 0, 2, _oblique, message="affines differ"),
        Kind("orientation_psl", 0, 0, 2, _psl),
        Kind("qform_sform_handedness", 0, 0, 0, _handedness),
        Kind("dim0_zero", 2, 2, 2, lambda base: _header_bytes(base, "dim0_zero.nii", 40, "<h", 0), message="dimensions"),
        Kind("negative_dim", 2, 2, 2, lambda base: _header_bytes(base, "negative_dim.nii", 42, "<h", -200),
             message="dimensions"),
        Kind("nan_in_sform", 2, 2, 2, lambda base: _header_bytes(base, "nan_sform.nii", 280, "<f", float("nan")),
             message="NaN or Inf"),
        Kind("one_slice", 0, 0, 2, lambda base: _pair(base, "one_slice", base.image[:, :, 15:16], base.mask[:, :, 15:16])),
        Kind("tiny_8x8x8", 0, 2, 2, lambda base: _pair(base, "tiny", base.image[96:104, 90:98, 10:18], base.mask[96:104, 90:98, 10:18]),
             message="too small"),
        Kind("large_1024x1024x600", 0, 2, 2, _large, message="constant"),
        Kind("dicom_missing_slice", 2, 2, 2, lambda base: _dicom(base, "dicom_missing", _drop_slice), message="missing slice"),
        Kind("dicom_no_position_orientation", 2, 2, 2, lambda base: _dicom(base, "dicom_nopos", _strip_geometry),
             message="has no ImagePositionPatient or ImageOrientationPatient"),
        Kind("dicom_one_position_missing_and_a_missing_slice", 2, 2, 2,
             lambda base: _dicom(base, "dicom_pos_gap", _one_position_missing_and_a_slice_gone),
             message="has no ImagePositionPatient"),
        Kind("dicom_mixed_pixel_spacing", 2, 2, 2, lambda base: _dicom(base, "dicom_mixed_spacing", _one_pixel_spacing),
             message="mixed PixelSpacing"),
        Kind("dicom_structured_report_file", 2, 2, 2, _dicom_sr, message="without an image to segment"),
        Kind("negative_pixdim_without_qform_sform", 2, 2, 2,
             lambda base: _no_xform_pixdim(base, "negative_pixdim.nii", (-1.25, 1.25, 7.7)),
             message="negative voxel spacing"),
        Kind("dicom_two_series", 2, 2, 2, lambda base: _dicom(base, "dicom_two", _second_series), message="2 DICOM series"),
        Kind("dicom_mixed_sizes", 2, 2, 2, lambda base: _dicom(base, "dicom_mixed", _mixed_sizes)),
        Kind("path_with_spaces", 0, 0, 0, lambda base: _named(base, "my scan with spaces")),
        Kind("non_ascii_path", 0, 0, 0, lambda base: _named(base, "niño_größe_腎臓")),
        Kind("broken_symlink", 2, 2, 2, _broken_symlink, message="no such file"),
        Kind("empty_folder", 2, 2, 2, _empty_dir, message="no DICOM"),
        Kind("scl_slope_nan", 0, 0, 0, _slope_nan),
        Kind("folder_good_and_bad", None, 2, None, _mixed_folder, message="bad.nii.gz"),
        Kind("output_is_a_file", None, 2, 2, lambda base: _named(base, "out_file_case"), output="is_file",
             message="not a folder"),
        Kind("read_only_output", None, 2, 2, lambda base: _named(base, "read_only_case"), output="read_only",
             message="not writable"),
        Kind("disk_full", None, 2, 2, lambda base: _named(base, "disk_full_case"), output="fsize_limit",
             message="cannot write"),
    ]
