"""The reconfiguration state machine. Pure Python: states, allowed transitions, step names.

```
pending ──► draining ──► applying ──► verifying ──► succeeded
   │            │            │            │
   │            ▼            ▼            ▼
   └───────► failed ◄──── (rollback) ──► rolled_back
```

- ``pending``: the intent is stored; a worker has not claimed it yet (the sweeper re-enqueues it
  if its message was lost).
- ``draining``: the claiming worker re-read the hardware and checks/stops workloads.
- ``applying``: amd-smi ``set`` (and the driver reload an NPS change needs) is running.
- ``verifying``: the state is read back; only a read-back that matches the target succeeds.
- ``succeeded``: verified at the target (also when the hardware already was at the target).
- ``rolled_back``: the change failed and the previous layout was restored and verified.
- ``failed``: the change failed and the previous layout could not be restored (or the request
  was refused before touching hardware); affected GPUs are marked unhealthy when hardware was
  touched.

A worker that resumes after a crash may go from any active state to ``draining`` again
(re-claim) and from there verify (``succeeded``) or roll back (``rolled_back``); it never re-runs
an apply that may have happened (at most one ``apply`` step per operation).
"""

from __future__ import annotations

PENDING = "pending"
DRAINING = "draining"
APPLYING = "applying"
VERIFYING = "verifying"
SUCCEEDED = "succeeded"
FAILED = "failed"
ROLLED_BACK = "rolled_back"

STATES = (PENDING, DRAINING, APPLYING, VERIFYING, SUCCEEDED, FAILED, ROLLED_BACK)
ACTIVE_STATES = (PENDING, DRAINING, APPLYING, VERIFYING)
TERMINAL_STATES = (SUCCEEDED, FAILED, ROLLED_BACK)

# from -> allowed destinations. Active states may also re-enter DRAINING: a new claim after a
# crash restarts the sequence from a fresh hardware read.
TRANSITIONS: dict[str, frozenset[str]] = {
    PENDING: frozenset({DRAINING, SUCCEEDED, FAILED}),
    DRAINING: frozenset({DRAINING, APPLYING, VERIFYING, SUCCEEDED, FAILED, ROLLED_BACK}),
    APPLYING: frozenset({DRAINING, VERIFYING, FAILED, ROLLED_BACK}),
    VERIFYING: frozenset({DRAINING, SUCCEEDED, FAILED, ROLLED_BACK}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
    ROLLED_BACK: frozenset(),
}


class IllegalTransition(ValueError):
    def __init__(self, current: str, target: str) -> None:
        self.current = current
        self.target = target
        allowed = ", ".join(sorted(TRANSITIONS.get(current, ()))) or "none (terminal)"
        super().__init__(f"cannot go from {current} to {target}; allowed from {current}: {allowed}")


def check_transition(current: str, target: str) -> None:
    """Raise IllegalTransition unless ``current`` -> ``target`` is allowed."""
    if target not in TRANSITIONS.get(current, frozenset()):
        raise IllegalTransition(current, target)


def is_terminal(state: str) -> bool:
    return state in TERMINAL_STATES


# Step actions recorded on an operation (one row each, in order).
STEP_CLAIMED = "claimed"
STEP_READ = "read"
STEP_DRAIN = "drain"
STEP_APPLY = "apply"  # at most one per operation
STEP_APPLIED = "applied"
STEP_VERIFIED = "verified"
STEP_ROLLBACK = "rollback"
STEP_ERROR = "error"
STEP_DONE = "done"
STEP_ENQUEUED = "enqueued"
