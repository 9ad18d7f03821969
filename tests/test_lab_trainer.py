"""The lab trainer: each method lowers its objective; accumulation == one big batch; bad input."""

import copy
import math
import random

import pytest
import torch

from opd_lib.lab.data import encode
from opd_lib.lab.pair import train_supervised
from opd_lib.lab.tasks import RunningSum
from opd_lib.lab.trainer import Config, Trainer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pair(char_pair):
    return char_pair


def make(pair, **kw):
    base = dict(
        min_len=2, max_len=3, eval_lengths=(2, 3), eval_size=4, batch_size=4,
        micro_batch_size=4, progress=False, lr=1e-2, steps=5,
    )  # fmt: skip
    base.update(kw)
    fresh = type(pair)(copy.deepcopy(pair.teacher), copy.deepcopy(pair.student), pair.tokenizer)
    return Trainer(Config(**base), fresh)


def objective(tr, roll):
    n = int(roll.mask.sum())
    with torch.no_grad():
        return tr.loss_sum(roll)[0].item() / n


def update_on(tr, roll):
    """One optimizer step on a fixed rollout (what train_step does after its rollout)."""
    n = int(roll.mask.sum())
    (tr.loss_sum(roll)[0] / n).backward()
    tr.opt.step()
    tr.opt.zero_grad()


CASES = [
    dict(method="sft"),
    dict(method="sft", source="teacher"),
    dict(method="kd"),
    dict(method="gkd", lam=0.5, beta=0.5),
    dict(method="opd"),
    dict(method="rl", group_size=4),
    dict(method="opsd", opsd_teacher="frozen"),
    dict(method="opsd", opsd_teacher="ema", clip="token", clip_value=0.5),
    dict(method="opsd", opsd_teacher="live", clip="pointwise", clip_value=0.05),
]


@pytest.mark.parametrize("kw", CASES, ids=lambda kw: "-".join(str(v) for v in kw.values()))
def test_each_method_lowers_its_objective(pair, kw):
    tr = make(pair, **kw)
    if tr.self_teacher is not None:
        # a fresh student barely reacts to the hint; a different self-teacher makes a real target
        tr.self_teacher.load_state_dict(tr.teacher.state_dict())
    examples = [tr.task.sample(random.Random(i)) for i in range(4)]
    roll = tr.rollout(examples)
    if kw["method"] == "rl" and not roll.advantages.abs().sum():
        # an untrained student earns no reward: give the surrogate something to push on
        roll.advantages = torch.tensor([1.0, -1.0] * (roll.mask.shape[0] // 2))
    before = objective(tr, roll)
    for _ in range(4):
        update_on(tr, roll)
    after = objective(tr, roll)
    assert after < before - 1e-2 * abs(before), (before, after)


def test_sampled_token_opd_lowers_the_exact_reverse_kl(pair):
    """The sampled-token estimator trains on fresh samples; the full-vocabulary reverse KL on a
    fixed set of student samples (the quantity it estimates) goes down."""
    tr = make(pair, method="opd", opd_estimator="sampled", batch_size=16, micro_batch_size=16)
    # a teacher with opinions (a few SFT steps), so the divergence is far above the noise
    train_supervised(tr.teacher, pair.tokenizer, lambda rng, _: tr.task.sample(rng), steps=15,
                     batch_size=16, lr=1e-2, seed=0)  # fmt: skip
    tr.teacher.requires_grad_(False)
    probe = make(pair, method="opd")
    probe.student, probe.teacher = tr.student, tr.teacher
    fixed = probe.rollout([tr.task.sample(random.Random(100 + i)) for i in range(8)])
    before = objective(probe, fixed)
    for _ in range(6):
        rec = tr.train_step()
    assert objective(probe, fixed) < 0.9 * before
    # the k1 estimate of the reverse KL is logged: finite, and close to the exact value on fresh
    # samples of the same policy (a sampled estimate, so only roughly)
    assert math.isfinite(rec["divergence"])
    exact = objective(
        probe, probe.rollout([tr.task.sample(random.Random(200 + i)) for i in range(16)])
    )
    assert abs(rec["divergence"] - exact) < 0.5 * exact + 0.05


@pytest.mark.parametrize(
    "kw",
    [
        dict(method="sft"),
        dict(method="opd"),
        dict(method="rl", group_size=2),
        dict(method="opsd", opsd_teacher="ema"),
        dict(method="gkd", lam=1.0, beta=0.3),
    ],
    ids=lambda kw: kw["method"],
)
def test_gradient_accumulation_equals_one_large_batch(pair, kw):
    # lr 1e-3: AdamW's first step is lr * g / (|g| + eps), which turns float32 rounding in a
    # near-zero gradient into a difference of up to ~lr in that weight
    big = make(pair, batch_size=4, micro_batch_size=4, lr=1e-3, **kw)
    small = make(pair, batch_size=4, micro_batch_size=1, lr=1e-3, **kw)
    rec_big, rec_small = big.train_step(), small.train_step()
    assert rec_big["tokens"] == rec_small["tokens"]
    assert rec_big["loss"] == pytest.approx(rec_small["loss"], abs=1e-6)
    for (name, a), b in zip(
        big.student.named_parameters(), small.student.parameters(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6, rtol=0), name


def test_per_micro_batch_mean_would_be_wrong(pair):
    """The bug the trainer avoids: averaging each micro-batch separately weights tokens of short
    micro-batches more. Reference traces of different lengths make the two normalisations differ."""
    tr = make(pair, method="sft")
    examples = [tr.task.from_digits([1, 2]), tr.task.from_digits([1, 2, 3])]
    roll = tr.rollout(examples)
    counts = roll.mask.sum(1)
    assert counts[0] != counts[1]
    sums = [tr.loss_sum(roll.rows(slice(i, i + 1)))[0].item() for i in range(2)]
    right = sum(sums) / counts.sum().item()
    wrong = sum(s / c for s, c in zip(sums, counts.tolist(), strict=True)) / 2
    assert abs(right - wrong) > 1e-3
    assert objective(tr, roll) == pytest.approx(right, rel=1e-5)


def test_encode_masks_the_perturbed_prefix(pair):
    tr = make(pair, method="sft")
    ex = tr.task.perturbed(tr.task.from_digits([1, 2, 3, 4]), random.Random(0))
    b = encode(pair.tokenizer, [ex])
    n_prefix = len(ex.prefix)
    assert not b.mask[0, :n_prefix].any()
    assert b.mask[0, n_prefix:].sum() == len(ex.target) + 1  # target + EOS
    assert b.completion_ids[0, len(ex.completion)] == pair.tokenizer.eos_token_id


def test_train_step_record_and_flops(pair):
    tr = make(pair, method="gkd", lam_schedule="industrial", steps=10)
    rec = tr.train_step()
    for key in ("loss", "tokens", "entropy", "flops", "tokens_per_s", "lam", "divergence"):
        assert key in rec, key
    assert rec["lam"] == 0.0 and rec["source"] == "data"  # industrial schedule warms up off-policy
    assert rec["flops"] > 0
    ev = tr.evaluate()
    assert {"acc", "acc_len2", "acc_len3", "acc_retention", "rkl_to_teacher"} <= set(ev)
    assert 0.0 <= ev["acc"] <= 1.0


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(method="dpo"), "unknown method"),
        (dict(method="gkd", lam=1.5), "lam must be in"),
        (dict(beta=-0.1), "beta must be in"),
        (dict(batch_size=6, micro_batch_size=4), "multiple of micro_batch_size"),
        (dict(method="rl", group_size=1), "group_size"),
        (dict(clip="sometimes"), "clip must be one of"),
        (dict(opsd_teacher="oracle"), "opsd_teacher"),
        (dict(min_len=5, max_len=3), "min_len"),
        (dict(lr=0.0), "lr must be"),
        (dict(steps=0), "steps must be"),
        (dict(task="gsm8k"), "tiny models"),
    ],
)
def test_bad_config_raises_clear_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        Config(**kw)
    with pytest.raises(ValueError, match="unknown config keys"):
        Config.from_dict({"not_a_field": 1})


def test_init_schedule_settings_key_the_cached_pair_and_are_validated():
    """The teacher's curriculum and lr schedule change what ``prepare_pair`` caches."""
    from opd_lib.lab.pair import cache_key

    base = Config(progress=False)
    for kw in (dict(init_curriculum=0.3), dict(init_cosine=True), dict(init_warmup=100)):
        for role in ("teacher-clean", "teacher", "student"):
            assert cache_key(Config(progress=False, **kw), role) != cache_key(base, role)
    # a student-only setting leaves the cached teacher alone, and the other way round
    student_only = Config(progress=False, student_init_hint_frac=0.5)
    assert cache_key(student_only, "teacher") == cache_key(base, "teacher")
    assert cache_key(student_only, "student") != cache_key(base, "student")
    teacher_only = Config(progress=False, teacher_recovery_steps=7)
    assert cache_key(teacher_only, "student") == cache_key(base, "student")
    assert cache_key(teacher_only, "teacher") != cache_key(base, "teacher")
    with pytest.raises(ValueError, match="init_curriculum"):
        Config(init_curriculum=1.5)


def test_cosine_schedule_trains(pair, monkeypatch):
    """``train_supervised`` with warm-up + cosine decay: one finite loss per step, and the
    learning rates it steps with rise linearly over the warm-up, then fall along the cosine to a
    tenth of ``lr`` (``lr * min(1, (s+1)/warmup) * (0.1 + 0.45 (1 + cos(pi s / steps)))``)."""
    model = copy.deepcopy(pair.student)
    task = Trainer(Config(min_len=2, max_len=3, progress=False), pair).task
    sample = lambda rng, _: task.sample(rng)  # noqa: E731
    seen = []
    step = torch.optim.AdamW.step

    def record(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", record)
    losses = train_supervised(model, pair.tokenizer, sample, steps=4, batch_size=4, lr=1e-2,
                              seed=0, warmup=2, cosine=True)  # fmt: skip
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    expected = [
        1e-2 * min(1.0, (s + 1) / 2) * (0.1 + 0.45 * (1 + math.cos(math.pi * s / 4)))
        for s in range(4)
    ]
    assert seen == pytest.approx(expected, rel=1e-12)


def test_length_curriculum_grows_then_covers_the_range():
    """``growing_lengths``: short chains first, the longest reaching ``max_len`` by ``grow``,
    then the task's whole range."""
    from opd_lib.lab.pair import growing_lengths

    task = RunningSum(2, 8, style="tagged")
    sample = growing_lengths(task, grow=0.5)
    rng = random.Random(0)
    early = {sample(rng, 0.0).length for _ in range(200)}
    middle = {sample(rng, 0.3).length for _ in range(400)}
    late = {sample(rng, 0.9).length for _ in range(400)}
    assert early == {2, 3}
    assert max(middle) == 5 and min(middle) == 2
    assert late == set(range(2, 9))
    assert {growing_lengths(task, 0.0)(rng, 0.0).length for _ in range(400)} == set(range(2, 9))


def test_final_student_can_become_the_teacher(pair, tmp_path):
    """A finished run saves ``student.pt``; ``teacher_from_run`` makes it the teacher of a pair
    (bit-identical logits), and a missing run is a clear error."""
    from opd_lib.lab.pair import teacher_from_run

    tr = make(pair, method="sft", steps=1)
    tr.out = tmp_path
    tr.logger = None
    tr.run()
    swapped = teacher_from_run(pair, tmp_path)
    ids = torch.tensor([[5, 6, 7, 8]])
    assert torch.equal(swapped.teacher(ids).logits, tr.student(ids).logits)
    assert swapped.student is pair.student and swapped.teacher is not pair.teacher
    with pytest.raises(FileNotFoundError, match="student.pt"):
        teacher_from_run(pair, tmp_path / "nowhere")


def test_opsd_evaluates_the_hinted_self_teacher(pair):
    """OPSD runs also report the accuracy with the hint in the prompt; other methods do not."""
    opsd = make(pair, method="opsd", eval_size=2).evaluate()
    assert 0.0 <= opsd["acc_hinted"] <= 1.0
    assert "acc_hinted" not in make(pair, method="opd", eval_size=2).evaluate()


def test_student_from_teacher_needs_equal_sizes_and_starts_from_the_finished_teacher(tmp_path):
    """``student_from_teacher``: a size mismatch is a clear error; with no warm-up steps the
    student is exactly the finished (recovering) teacher, a change to the recovery stage reaches
    both, and the clean stage is reused from the cache."""
    from opd_lib.lab.pair import prepare_pair

    kw = dict(min_len=2, max_len=3, eval_lengths=(2,), progress=False, teacher_layers=1,
              teacher_hidden=32, student_layers=1, student_hidden=16,
              student_from_teacher=True)  # fmt: skip
    with pytest.raises(ValueError, match="equal"):
        prepare_pair(Config(**kw))
    kw.update(student_hidden=32, teacher_steps=3, teacher_recovery_steps=1, student_init_steps=0)
    pair = prepare_pair(Config(**kw), tmp_path)
    teacher, student = pair.teacher.state_dict(), pair.student.state_dict()
    assert teacher.keys() == student.keys()
    for name in teacher:
        assert torch.equal(teacher[name], student[name]), name
    longer = prepare_pair(Config(**{**kw, "teacher_recovery_steps": 2}), tmp_path)
    assert not torch.equal(longer.teacher.lm_head.weight, pair.teacher.lm_head.weight)
    assert torch.equal(longer.student.lm_head.weight, longer.teacher.lm_head.weight)
    assert len(list(tmp_path.glob("teacher-clean-*.pt"))) == 1  # stage 1 reused from the cache
    assert len(list(tmp_path.glob("student-*.pt"))) == 2  # the student depends on stage 2


def test_sloppy_traces_carry_their_mistakes_forward():
    task = RunningSum(2, 8, style="tagged")
    rng = random.Random(0)
    ex = task.sample(rng, 8)
    assert task.sloppy(ex, rng, 0.0).completion == ex.completion
    wrong_answers = 0
    for _ in range(200):
        s = task.sloppy(ex, rng, 0.3)
        v = task.verify(ex, s.completion)
        steps = s.completion.split("#")[0].split(",")
        # each step starts from the value the previous one wrote (no recovery)
        assert all(
            a.split("=")[1] == b.split("+")[0] for a, b in zip(steps, steps[1:], strict=False)
        )
        wrong_answers += not v.correct
        if v.n_bad_steps:
            assert not v.trace_ok
    assert 0.75 < wrong_answers / 200 < 0.98  # 1 - 0.7^7 ~ 0.92 minus lucky wraps
    with pytest.raises(ValueError, match="rate"):
        task.sloppy(ex, rng, 1.5)
