"""Label registries: label value -> structure name. Torch-free.

Written as JSON beside every output mask (``<case>_labels.json``) so a mask is never read
without its meaning.
"""

from __future__ import annotations

MR_KIDNEYS: dict[int, str] = {1: "kidney_right", 2: "kidney_left"}
"""Label map of the MRI kidney models: 1 right kidney, 2 left kidney (patient's sides)."""

KITS: dict[int, str] = {1: "kidney", 2: "tumor", 3: "cyst"}
"""KiTS19/21/23 label map for contrast CT."""

KIDNEY_TUMOUR: dict[int, str] = {1: "kidney", 2: "tumor"}
"""Label map of the CT cascade (``c2f-cascade``, seed 004): kidney and tumour, no cyst class."""

US_KIDNEY: dict[int, str] = {1: "kidney"}
"""Label map of 2D ultrasound masks (``us-ensemble``): the kidney capsule's inside."""

CHAOS_MR: dict[int, str] = {1: "liver", 2: "kidney_right", 3: "kidney_left", 4: "spleen"}
"""Label values of the CHAOS MR ground truth (as stored in ``../shared/data/chaos_t2``)."""

DISPLAY_RGB: dict[str, tuple[int, int, int]] = {
    "kidney_right": (255, 59, 48), "kidney_left": (52, 199, 89), "kidney": (255, 204, 0),
    "tumor": (175, 82, 222), "cyst": (10, 132, 255), "liver": (221, 130, 101), "spleen": (157, 108, 162),
}
"""Display colour (8-bit sRGB) of each structure: the overlays and report, the 3D Slicer and
ITK-SNAP colour tables written beside each mask, and the DICOM SEG's
RecommendedDisplayCIELabValue (converted by highdicom)."""

FALLBACK_RGB: tuple[int, int, int] = (0, 255, 255)
"""Display colour of a structure not in :data:`DISPLAY_RGB`."""


def display_rgb(name: str) -> tuple[int, int, int]:
    """The display colour of structure ``name`` (:data:`DISPLAY_RGB`, else :data:`FALLBACK_RGB`)."""
    return DISPLAY_RGB.get(name, FALLBACK_RGB)


def hex_colour(name: str) -> str:
    """``display_rgb(name)`` as ``"#rrggbb"`` (matplotlib, HTML)."""
    return "#%02x%02x%02x" % display_rgb(name)


def slicer_colour_table(label_map: dict[int, str]) -> str:
    """A 3D Slicer colour table (``.ctbl``: ``index name R G B A`` per line, 0-255; Slicer's
    "Color table file" format, spaces in names replaced by underscores) for a label map.
    In Slicer: Add Data, the mask with "LabelMap" checked and this table as its colour node;
    the segments then carry these names and colours."""
    lines = ["# Color table file (kidneyseg)", f"# {len(label_map) + 1} values", "0 Background 0 0 0 0"]
    for value, name in sorted(label_map.items()):
        r, g, b = display_rgb(name)
        lines.append(f"{int(value)} {name.replace(' ', '_')} {r} {g} {b} 255")
    return "\n".join(lines) + "\n"


def itksnap_label_descriptions(label_map: dict[int, str]) -> str:
    """An ITK-SNAP label description file (Segmentation > Import Label Descriptions): per
    label ``IDX R G B A VIS MSH "name"``, alpha 0-1."""
    lines = ["################################################", "# ITK-SnAP Label Description File (kidneyseg)",
             "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL", "################################################",
             '    0     0    0    0     0  0  0    "Clear Label"']
    for value, name in sorted(label_map.items()):
        r, g, b = display_rgb(name)
        lines.append(f'{int(value):5d} {r:5d} {g:4d} {b:4d}     1  1  1    "{name}"')
    return "\n".join(lines) + "\n"


REGISTRY: dict[str, dict[int, str]] = {"mr_kidneys": MR_KIDNEYS, "kits": KITS, "kidney_tumour": KIDNEY_TUMOUR,
                                       "us_kidney": US_KIDNEY, "chaos_mr": CHAOS_MR}


def remap(label_map_from: dict[int, str], label_map_to: dict[int, str]) -> dict[int, int]:
    """Value mapping between two label maps by structure name.

    Args:
        label_map_from: source map, value -> name.
        label_map_to: destination map, value -> name.

    Returns:
        ``{source_value: destination_value}`` for every name present in both maps;
        source values whose name is absent from ``label_map_to`` are not in the result
        (callers map them to background).
    """
    by_name = {name: value for value, name in label_map_to.items()}
    return {v: by_name[n] for v, n in label_map_from.items() if n in by_name}
