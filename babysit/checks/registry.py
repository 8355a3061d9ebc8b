"""The checkup's checks, in the order they run: each one may read what the earlier ones
found (the training checks step aside after an error; the model audits judge standardized
inputs when the data audit flagged the raw ones)."""

from __future__ import annotations

from babysit.checks.architecture_audit import ArchitectureAudit
from babysit.checks.base import Check
from babysit.checks.data_audit import DataAudit
from babysit.checks.generalization import TrainingRunCheck
from babysit.checks.init_audit import InitAudit
from babysit.checks.initial_loss import InitialLossCheck
from babysit.checks.learnable import LearnableCheck
from babysit.checks.learning_rate import LearningRateCheck, LRRangeCheck
from babysit.checks.params_check import ParamsCheck
from babysit.checks.sanity import OverfitCheck, RegularizationCheck
from babysit.checks.target_audit import TargetAudit

__all__ = ["BOOKKEEPING", "CHECKUP", "RUN_REPORT_CODES", "check_of"]

CHECKUP: tuple[Check, ...] = (
    DataAudit(),
    ArchitectureAudit(),
    TargetAudit(),
    InitAudit(),
    InitialLossCheck(),
    OverfitCheck(),
    LearnableCheck(),
    RegularizationCheck(),
    LRRangeCheck(),
    LearningRateCheck(),
    ParamsCheck(),
    TrainingRunCheck(),
)

# The codes the checkup itself raises about its checks, shown in no row of the report.
BOOKKEEPING = ("CHECK_FAILED", "CHECK_SKIPPED")

# The codes that only the reading of a training run raises (babysit.checks.training_run, from
# a Monitor's history: `mon.report()`, `babysit report RUN_DIR`); docs/monitor.md has them.
RUN_REPORT_CODES = ("LOSS_EXPLODED", "LOSS_NOISY", "GRAD_ACCUMULATING", "EVAL_MODE_TRAINING")


def check_of(key: str | None) -> Check | None:
    """The check whose measurement key is `key` (None: none)."""
    return next((c for c in CHECKUP if c.key == key), None)
