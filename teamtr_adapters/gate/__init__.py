"""The swap gate. `gate.swap` holds the gate (`GateConfig`, `evaluate`, `swap`), `gate.stats` its score
decision (pure numbers, stated error rates). Candidates and compatibility, rollback and adapter diff live
in `registry/` (`candidates`, `rollback`, `diff`), the D_tok measurement in `train.kl`; they are re-exported
here for the Python API:

    from teamtr_adapters.gate import GateConfig, swap, rollback_role, rollback_team
"""
from ..registry.candidates import Candidate, check_candidate, resolve_candidate
from ..registry.rollback import rollback_role, rollback_team
from .stats import Decision, Design, decide_scores
from .swap import GateConfig, evaluate, swap

__all__ = ["GateConfig", "evaluate", "swap", "Design", "Decision", "decide_scores", "Candidate", "check_candidate",
           "resolve_candidate", "rollback_role", "rollback_team"]
