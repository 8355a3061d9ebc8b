"""Checks: decisions. Each check is one object (babysit.checks.base.Check) that turns
measurements into Findings; babysit.checks.registry lists the checkup's, in order."""
