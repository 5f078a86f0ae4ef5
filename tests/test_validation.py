"""Cross-validation folds grouped by subject (seed 000 leaves out an animal with all of its
time points): a subject's scans are never split between training and held-out cases."""

from __future__ import annotations

import pytest

from kidneyseg.errors import InputError
from kidneyseg.validation import read_subjects, subject_folds

CASES = ["m1_t1", "m1_t2", "m2_t1", "m2_t2", "m3_t1", "m3_t2"]


def test_loso_holds_out_every_scan_of_one_subject():
    subjects = read_subjects(CASES, pattern=r"^(.+)_t[0-9]+$")
    folds = subject_folds(subjects, "loso", seed=0)
    assert folds == [["m1_t1", "m1_t2"], ["m2_t1", "m2_t2"], ["m3_t1", "m3_t2"]]


def test_k_folds_deal_subjects_not_scans(tmp_path):
    (tmp_path / "subjects.csv").write_text("case,subject\n" + "".join(f"{c},{c[:2]}\n" for c in CASES))
    subjects = read_subjects(CASES, subjects=tmp_path / "subjects.csv")
    for seed in range(5):
        folds = subject_folds(subjects, 2, seed)
        assert sorted(c for f in folds for c in f) == sorted(CASES)
        for fold in folds:
            assert all(f"{c[:2]}_t1" in fold and f"{c[:2]}_t2" in fold for c in fold)


def test_without_a_rule_each_case_is_its_own_subject_and_errors_name_the_problem(tmp_path):
    assert subject_folds(read_subjects(CASES), "loso", 0) == [[c] for c in sorted(CASES)]
    with pytest.raises(InputError, match="does not match case 'm1_t1'"):
        read_subjects(CASES, pattern=r"^(x)_")
    (tmp_path / "s.csv").write_text("case,subject\nm1_t1,m1\n")
    with pytest.raises(InputError, match="no subject for case"):
        read_subjects(CASES, subjects=tmp_path / "s.csv")
    with pytest.raises(InputError, match="3 subjects"):
        subject_folds(read_subjects(CASES, pattern=r"^(m\d)"), 4, 0)
