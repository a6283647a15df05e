"""Every PromQL expression of the committed dashboards and rule files, ready to send to a
Prometheus (Grafana's template variables replaced by concrete values)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

# Grafana variables -> what a test sends: every node/GPU/model, short ranges.
SUBSTITUTIONS = {
    "node": ".*", "gpu": ".*", "model": ".*",
    "__rate_interval": "1m", "__range": "5m", "__interval": "15s",
}
LABEL_VALUES = re.compile(r"^label_values\((?:(?P<expr>.+),\s*)?(?P<label>\w+)\)$")


@dataclass(frozen=True)
class Expression:
    source: str  # "file: panel/rule"
    expr: str
    must_return_data: bool


def substitute(expr: str) -> str:
    def repl(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in SUBSTITUTIONS:
            raise KeyError(f"unknown Grafana variable ${name} in {expr!r}")
        return SUBSTITUTIONS[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, expr)


def _panels(panels: list[dict]):  # type: ignore[no-untyped-def]
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard_expressions(path: Path) -> list[Expression]:
    board = json.loads(path.read_text())
    out = []
    for var in board.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = LABEL_VALUES.match(query.strip())
        assert m, f"{path.name}: variable {var['name']} is not label_values(...): {query}"
        out.append(Expression(f"{path.name}: variable {var['name']}", substitute(m.group("expr") or "up"), True))
    for panel in _panels(board["panels"]):
        for target in panel.get("targets", []):
            out.append(Expression(f"{path.name}: {panel['title']} [{target['refId']}]", substitute(target["expr"]), True))
    return out


def rule_expressions(path: Path) -> list[Expression]:
    out = []
    for group in yaml.safe_load(path.read_text())["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            out.append(Expression(f"{path.name}: {group['name']}/{name}", rule["expr"], False))
    return out


def metric_names(expr: str) -> set[str]:
    """The aim_* metric names an expression reads (recording rules' aim:* names excluded)."""
    return {re.sub(r"_(bucket|sum|count)$", "", name) if name.startswith("aim_model_request_duration") or name.startswith("aim_operation_duration") else name
            for name in re.findall(r"\baim_[a-z0-9_]+", expr)}
