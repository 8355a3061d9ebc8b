"""The check registry: a check is one object, the checkup runs the registry over one
Context, each finding names its check, and a failing or skipped check is bookkeeping."""

import pytest
import torch

import babysit as bs
from babysit.checks.base import Check, Context
from babysit.checks.findings import CODES, Finding
from babysit.checks.registry import BOOKKEEPING, CHECKUP, RUN_REPORT_CODES, check_of
from babysit.checks.task import task_for
from babysit.doctor import Budget, _Progress, _run


def _context(**kw):
    torch.manual_seed(0)
    x, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    return Context(
        bs.nn.mlp(4, [8], 3),
        task_for(None),
        x,
        y,
        x,
        y,
        torch.arange(40),
        (x, y),
        None,
        Budget(),
        **kw,
    )


class Raises(Check):
    name, key, title = "toy", "toy", "toy check"
    codes = {"REG_NO_EFFECT": "warning"}

    def run(self, context):
        return [Finding("REG_NO_EFFECT", "warning", "m", "f")], {"measured": 1}


class Gate(Check):
    name, key, gate = "gate", "gate", True
    codes = {"LABELS_INVALID": "error"}

    def run(self, context):
        return [Finding("LABELS_INVALID", "error", "bad labels", "fix")], None


class NotGate(Check):
    name, key = "not a gate", "not_gate"
    codes = {"NAN_LOSS": "error"}

    def run(self, context):
        return [Finding("NAN_LOSS", "error", "nan", "fix")], None


class Blocked(Check):
    name, key = "blocked", "blocked"

    def skip(self, context):
        return context.blocked()

    def run(self, context):
        return [], {"ran": True}


class Crashes(Check):
    name, key = "crashes", "crashes"

    def run(self, context):
        raise RuntimeError("boom\nmore")


def test_a_check_declaring_an_unknown_code_is_refused_when_defined():
    with pytest.raises(TypeError, match="NOT_A_CODE"):

        class Bad(Check):
            name, key = "bad", "bad"
            codes = {"NOT_A_CODE": "error"}


def test_a_check_with_a_row_but_no_reads_or_no_run_is_refused():
    with pytest.raises(TypeError, match="define reads"):

        class NoReads(Check):
            name, key, needs = "no reads", "no_reads", "value"

            def run(self, context):
                return [], {}

    class NoRun(Check):
        name, key = "no run", "no_run"

    with pytest.raises(TypeError, match="abstract"):
        NoRun()


def test_the_registry_has_unique_names_and_keys_and_only_known_codes():
    assert len({c.name for c in CHECKUP}) == len({c.key for c in CHECKUP}) == len(CHECKUP)
    declared = {code for c in CHECKUP for code in c.codes}
    assert declared <= set(CODES) and not declared & set(BOOKKEEPING)
    assert set(CODES) == declared | set(BOOKKEEPING) | set(RUN_REPORT_CODES)
    assert all(check_of(c.row_key) is not None and check_of(c.row_key).title for c in CHECKUP)


def test_a_new_check_is_one_object_whose_findings_and_measurement_land_in_the_context():
    context = _context()
    timings = _run((Raises(),), context, _Progress(False))
    assert [(f.code, f.check) for f in context.findings] == [("REG_NO_EFFECT", "toy")]
    assert context.measurements == {"toy": {"measured": 1}} and list(timings) == ["toy"]


def test_only_an_error_of_a_gating_check_makes_the_later_checks_step_aside():
    context = _context()
    _run((NotGate(), Blocked()), context, _Progress(False))
    assert context.measurements == {"blocked": {"ran": True}}  # a NAN_LOSS does not block
    context = _context()
    _run((Gate(), Blocked(), Crashes()), context, _Progress(False))
    codes = [f.code for f in context.findings]
    assert codes == ["LABELS_INVALID", "CHECK_FAILED", "CHECK_SKIPPED"]
    failed, skipped = context.findings[1], context.findings[2]
    assert (
        failed.check == "crashes" and failed.message == "crashes could not run: RuntimeError: boom"
    )
    assert skipped.check is None and skipped.evidence == {
        "steps": ["blocked"],
        "reason": "LABELS_INVALID must be fixed first",
    }


def test_a_later_check_amends_an_earlier_finding_in_place():
    context = _context()
    _run((Raises(),), context, _Progress(False))
    first = context.findings[0]
    context.amend(first, severity="info", message="m, and more")
    assert [(f.severity, f.message, f.check) for f in context.findings] == [
        ("info", "m, and more", "toy")
    ]
