"""Fault injection.

A fault is a JSON object::

    {"match": "set -C",      # subcommand words: "set -C", "set -M", "reset -r", "metric",
                             #   "list", "partition -a", ... or "any"; long options match their
                             #   short form (--compute-partition == -C)
     "kind": "fail",         # fail | hang | busy | partial | slow_reload | garbage | silent_noop
     "exit": 1,              # fail: exit status (default 1)
     "message": "...",       # fail: text printed to stderr (default "Injected failure")
     "gpus": 1,              # partial: how many physical GPUs change before the failure
     "seconds": 5,           # slow_reload: how long the amdgpu reload takes
     "times": 2}             # uses left; omitted = forever; removed when it reaches 0

Sources: the state file's ``"faults"`` list, and env ``AMD_SMI_EMULATOR_FAULT`` (one object or
a list; applies to every invocation, its ``times`` counted in the state's ``env_fault_uses``).

Kinds: fail = print message to stderr and exit with ``exit`` before doing anything;
hang = never return (the caller's timeout must kill it); busy = every GPU counts as having
processes (BUSY / restart errors); partial = a set changes only the first ``gpus`` GPUs, then
fails; slow_reload = the NPS reload (6.3/6.4 ``set -M``, 7.x ``reset -r``, ``emulator
reload-driver``) takes ``seconds`` while amd-smi sees no devices; garbage = stdout truncated
mid-document; silent_noop = prints success but changes nothing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

KINDS = ("fail", "hang", "busy", "partial", "slow_reload", "garbage", "silent_noop")
ENV_FAULT = "AMD_SMI_EMULATOR_FAULT"

_LONG_TO_SHORT = {
    "--compute-partition": "-C", "--memory-partition": "-M", "--reload-driver": "-r",
    "--enum": "-e", "--asic": "-a", "--vram": "-v", "--partition": "-p", "--usage": "-u",
    "--mem-usage": "-m", "--power": "-p", "--temperature": "-t", "--ecc": "-e",
    "--current": "-c", "--memory": "-m", "--accelerator": "-a", "--gpu": "-g",
}


def validate(fault: dict) -> None:
    if not isinstance(fault, dict) or "match" not in fault or fault.get("kind") not in KINDS:
        raise ValueError(f"bad fault {fault!r}: needs 'match' and 'kind' in {KINDS}")


def normalise(argv: list[str]) -> tuple[str, set[str]]:
    """(subcommand, tokens) of an amd-smi command line: options in short form, and values
    upper-cased (so ``"set -M NPS1"`` matches only a change to NPS1)."""
    words = [a for a in argv if a]
    sub = words[0] if words and not words[0].startswith("-") else "default"
    tokens: set[str] = set()
    for word in words[1:] if sub != "default" else words:
        low = word.lower()
        if low.startswith("--"):
            tokens.add(_LONG_TO_SHORT.get(low.split("=")[0], low))
        elif word.startswith("-") and len(word) > 1 and word[1:].isalpha():
            tokens.update(f"-{ch}" for ch in word[1:])
        elif not word.startswith("-"):
            tokens.add(word.upper())
    return sub, tokens


def matches(pattern: str, argv: list[str]) -> bool:
    words = pattern.split()
    if not words or words[0] == "any":
        return True
    sub, tokens = normalise(argv)
    if words[0] != sub:
        return False
    return all((_LONG_TO_SHORT.get(w, w) if w.startswith("-") else w.upper()) in tokens for w in words[1:])


def env_faults() -> list[dict]:
    raw = os.environ.get(ENV_FAULT, "").strip()
    if not raw:
        return []
    value = json.loads(raw)
    faults = value if isinstance(value, list) else [value]
    for fault in faults:
        validate(fault)
    return faults


@dataclass
class Active:
    """The faults that apply to this invocation."""

    fail: dict | None = None
    hang: bool = False
    busy: bool = False
    partial: int | None = None
    reload_seconds: float = 0.0
    garbage: bool = False
    silent_noop: bool = False
    kinds: list[str] = field(default_factory=list)


def take(data: dict, argv: list[str]) -> tuple[Active, bool]:
    """Pick the faults matching ``argv`` and use them up. Returns (active, state_changed)."""
    active = Active()
    changed = False
    chosen: list[dict] = []
    kept = []
    for fault in data.get("faults", []):
        if matches(fault.get("match", "any"), argv):
            chosen.append(fault)
            if "times" in fault and fault["times"] is not None:
                fault = dict(fault, times=int(fault["times"]) - 1)
                changed = True
                if fault["times"] <= 0:
                    continue
        kept.append(fault)
    data["faults"] = kept
    uses = data.setdefault("env_fault_uses", {})
    for fault in env_faults():
        if not matches(fault.get("match", "any"), argv):
            continue
        if fault.get("times") is not None:
            key = json.dumps(fault, sort_keys=True)
            if uses.get(key, 0) >= int(fault["times"]):
                continue
            uses[key] = uses.get(key, 0) + 1
            changed = True
        chosen.append(fault)
    for fault in chosen:
        kind = fault["kind"]
        active.kinds.append(kind)
        if kind == "fail" and active.fail is None:
            active.fail = fault
        elif kind == "hang":
            active.hang = True
        elif kind == "busy":
            active.busy = True
        elif kind == "partial":
            active.partial = int(fault.get("gpus", 1))
        elif kind == "slow_reload":
            active.reload_seconds = max(active.reload_seconds, float(fault.get("seconds", 5)))
        elif kind == "garbage":
            active.garbage = True
        elif kind == "silent_noop":
            active.silent_noop = True
    return active, changed
