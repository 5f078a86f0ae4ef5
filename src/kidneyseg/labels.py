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
