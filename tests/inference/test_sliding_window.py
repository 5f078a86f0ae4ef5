"""kidneyseg.inference.sliding_window: the one sliding-window entry of every 3D path."""

from __future__ import annotations

import torch

from kidneyseg.inference.sliding_window import mirror_flips, sliding_window_logits


def test_mirror_flips_are_the_eight_mirrorings_identity_first():
    flips = mirror_flips(3)
    assert flips[0] == () and len(flips) == 8 and len(set(flips)) == 8
    assert set(flips[1:4]) == {(2,), (3,), (4,)} and flips[-1] == (2, 3, 4)


def test_stitched_logits_match_the_whole_volume_and_mirroring_undoes_its_flips():
    """A 1x1x1 convolution sees no context, so windows stitched with any weighting must equal one
    pass over the whole volume; an asymmetric 3x3x3 kernel differs under flips, and the
    mirrored average must still come back in the input's orientation (not flipped)."""
    torch.manual_seed(0)
    x = torch.randn(1, 1, 20, 18, 12)
    point = torch.nn.Conv3d(1, 2, 1).eval()
    out = sliding_window_logits(point, x, (8, 8, 8), torch.device("cpu"))
    with torch.inference_mode():
        whole = point(x)
    assert out.shape == (1, 2, 20, 18, 12) and out.device.type == "cpu"
    torch.testing.assert_close(out, whole, rtol=1e-5, atol=1e-5)
    shift = torch.nn.Conv3d(1, 1, 3, padding=1, bias=False).eval()
    with torch.no_grad():
        shift.weight.zero_()
        shift.weight[0, 0, 2, 1, 1] = 1.0  # output(i) = input(i + 1) along R
    plain = sliding_window_logits(shift, x, (20, 18, 12), torch.device("cpu"))
    mirrored = sliding_window_logits(shift, x, (20, 18, 12), torch.device("cpu"), mirror=True)
    torch.testing.assert_close(plain[0, 0, 5:15, 4:14, 3:9], x[0, 0, 6:16, 4:14, 3:9])
    # flipped along R the kernel reads input(i - 1): the average of the 8 is the mean of both shifts
    expected = 0.5 * (x[0, 0, 6:16, 4:14, 3:9] + x[0, 0, 4:14, 4:14, 3:9])
    torch.testing.assert_close(mirrored[0, 0, 5:15, 4:14, 3:9], expected, rtol=1e-5, atol=1e-5)
