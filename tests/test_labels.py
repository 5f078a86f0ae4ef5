"""Label maps for viewers: the 3D Slicer colour table and ITK-SNAP label descriptions written
beside each mask, and the colours the DICOM SEG recommends, all from labels.DISPLAY_RGB."""

from __future__ import annotations

import shlex

from kidneyseg.labels import (DISPLAY_RGB, KITS, MR_KIDNEYS, display_rgb, hex_colour, itksnap_label_descriptions,
                              slicer_colour_table)


def _rows(text: str) -> list[list[str]]:
    return [shlex.split(line) for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_slicer_colour_table_lists_every_label_with_its_colour():
    rows = _rows(slicer_colour_table(KITS))
    assert rows[0] == ["0", "Background", "0", "0", "0", "0"]
    assert [(int(r[0]), r[1], tuple(map(int, r[2:5])), int(r[5])) for r in rows[1:]] == [
        (v, n, DISPLAY_RGB[n], 255) for v, n in sorted(KITS.items())]


def test_itksnap_descriptions_quote_names_and_use_alpha_0_to_1():
    rows = _rows(itksnap_label_descriptions(MR_KIDNEYS))
    assert rows[0][-1] == "Clear Label"
    assert {int(r[0]): (tuple(map(int, r[1:4])), r[4], r[-1]) for r in rows[1:]} == {
        1: (display_rgb("kidney_right"), "1", "kidney_right"), 2: (display_rgb("kidney_left"), "1", "kidney_left")}


def test_unknown_structures_get_the_fallback_and_hex_matches_rgb():
    assert display_rgb("not_an_organ") == (0, 255, 255)
    assert hex_colour("kidney_right") == "#%02x%02x%02x" % DISPLAY_RGB["kidney_right"]
