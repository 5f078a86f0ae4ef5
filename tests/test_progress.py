"""Stage reporting of one case (kidneyseg.progress)."""

from __future__ import annotations

import logging

import pytest

from kidneyseg.progress import STAGE_LOGGER, CaseProgress


def test_stage_lines_time_each_stage_and_say_stopped_on_error(caplog):
    caplog.set_level(logging.INFO, logger=STAGE_LOGGER)
    with pytest.raises(RuntimeError):
        with CaseProgress("c1", bar=True) as p:  # no terminal here: tqdm draws nothing
            p.stage("read", "x.nii.gz")
            p.stage("segment")
            raise RuntimeError("boom")
    msgs = [r.getMessage() for r in caplog.records if r.name == STAGE_LOGGER]
    assert msgs[:2] == ["c1: read (x.nii.gz)", "c1: segment"]
    assert msgs[2].startswith("c1: stopped in ") and "read " in msgs[2] and "segment " in msgs[2]
    assert set(p.seconds) == {"read", "segment"} and all(v >= 0 for v in p.seconds.values())
