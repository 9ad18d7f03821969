"""Config field metadata replaces hand-kept name lists: every field says where it belongs, and
the pair cache key it derives is the one the committed results were cached under."""

import dataclasses
from pathlib import Path

import pytest

from opd_lib.lab.config import STAGES, Config, check_resumable, flag_fields, method_knobs
from opd_lib.lab.pair import cache_key
from opd_lib.lab.presets import preset

ROOT = Path(__file__).resolve().parents[1]


def test_every_field_declares_its_stage():
    for f in dataclasses.fields(Config):
        assert f.metadata.get("stage") in (*STAGES, "run"), f.name


def test_the_committed_pair_cache_keys_are_reproduced():
    """``results/lab/full/cache/<stage>-<hash>.pt``: the stage fields hash to the same names, for
    the usual pair and for every other starting student of the experiments."""
    from opd_lib.lab.experiments import STUDENTS, student_config

    full = preset("full")
    cache = ROOT / "results/lab/full/cache"
    for stage in ("teacher-clean", "teacher", "student"):
        path = cache / f"{stage}-{cache_key(full, stage)}.pt"
        assert path.is_file(), path.name
    for name in STUDENTS:
        path = (
            cache / f"student-{cache_key(student_config(full, name, cache.parent), 'student')}.pt"
        )
        assert path.is_file(), (name, path.name)


def test_each_stage_key_follows_its_fields():
    base = Config(progress=False)

    def moved(stage, **kw):
        return cache_key(dataclasses.replace(base, **kw), stage) != cache_key(base, stage)

    assert moved("student", init_lr=1e-2) and moved("teacher-clean", init_lr=1e-2)  # shared
    assert moved("student", student_noise=0.2) and not moved("teacher", student_noise=0.2)
    assert moved("teacher", teacher_steps=7) and not moved("student", teacher_steps=7)
    assert moved("student", teacher_steps=7, student_from_teacher=True, student_layers=2,
                 student_hidden=64)  # fmt: skip
    assert not moved("student", lr=0.5) and not moved("teacher", method="sft")
    with pytest.raises(ValueError, match="stage"):
        cache_key(base, "shared")


def test_resumable_fields_and_refusal():
    c = Config(progress=False)
    saved = dataclasses.replace(c, steps=99, progress=True).to_dict()
    check_resumable(c, saved)  # bookkeeping may differ
    with pytest.raises(ValueError, match=r"\['lr'\]"):
        check_resumable(c, dataclasses.replace(c, lr=0.5).to_dict())


def test_flags_and_method_knobs_come_from_the_fields():
    flags = flag_fields()
    assert (
        flags["lam"] is float and flags["skip_preflight"] is bool and "teacher_steps" not in flags
    )
    assert method_knobs("opd") == {"opd_estimator": ("full", "sampled")}
    assert set(method_knobs("gkd")) == {"source", "lam", "lam_schedule", "beta", "data_perturb"}
    with pytest.raises(ValueError, match="unknown method"):
        method_knobs("dpo")
