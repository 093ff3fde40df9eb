"""The size of the fault tests: bounded for `make test`, larger with `EXPORTS_SOAK=1` (README, "Faults")."""

import os

SOAK = os.environ.get("EXPORTS_SOAK") == "1"


def scaled(quick: int, soak: int) -> int:
    return soak if SOAK else quick
