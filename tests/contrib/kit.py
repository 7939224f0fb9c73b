"""The monitoring kit in contrib/, read back: every PromQL expression the alert rules
and the Grafana dashboard hold, and the metric names each one selects.

The rules file is read without a YAML library (the project has none): each `expr:`
is one line, as contrib/prometheus/icall-alerts.yml writes them; the count is checked
against the `- alert:` entries so an expression written otherwise is not skipped.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"
RULES = CONTRIB / "prometheus" / "icall-alerts.yml"
RULE_TESTS = CONTRIB / "prometheus" / "icall-alerts.test.yml"
DASHBOARD = CONTRIB / "grafana" / "icall-dashboard.json"

# Series Prometheus writes itself for each target; icall does not export them.
PROMETHEUS_OWN = frozenset({"up"})
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
                       "group_left", "group_right", "inf", "nan"})
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def alert_expressions() -> dict[str, str]:
    """alert name -> its expression."""
    text = RULES.read_text()
    names = re.findall(r"^\s*- alert:\s*(\S+)\s*$", text, re.MULTILINE)
    exprs = re.findall(r"^\s*expr:\s*(.+?)\s*$", text, re.MULTILINE)
    assert len(names) == len(exprs), f"{RULES}: {len(names)} alerts but {len(exprs)} one-line exprs"
    assert all(expr not in ("|", ">", "|-", ">-") for expr in exprs), f"{RULES}: write each expr on one line"
    return dict(zip(names, exprs, strict=True))


def dashboard_expressions() -> dict[str, str]:
    """'panel title / refId' (or 'variable name') -> its expression, Grafana's own
    variables left in."""
    dashboard = json.loads(DASHBOARD.read_text())
    found = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found[f"{panel['title']} / {target['refId']}"] = target["expr"]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if query:
            found[f"variable {variable['name']}"] = _label_values_selector(query)
    return found


def _label_values_selector(query: str) -> str:
    """`label_values(metric{...}, label)` -> `metric{...}` (a selector promtool parses)."""
    match = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", query)
    return match.group(1) if match else query


def as_promql(expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced, for promtool."""
    return expr.replace("$__rate_interval", "5m").replace("$instance", ".*")


def metric_names(expr: str) -> set[str]:
    """The metric names `expr` selects: strings, label matchers, ranges and grouping
    clauses removed, then every name not called as a function nor a keyword."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', "", expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _NAME.finditer(text):
        name = match.group(0)
        before = text[match.start() - 1] if match.start() else " "
        if before.isdigit() or before == "." or name in _KEYWORDS:
            continue  # the tail of a number (1e3, 0.99) or an operator word
        if re.match(r"\s*\(", text[match.end():]):
            continue  # a function
        names.add(name)
    return names


def all_metric_names() -> dict[str, set[str]]:
    """metric name -> where the kit names it."""
    where: dict[str, set[str]] = {}
    for source, exprs in (("alert", alert_expressions()), ("dashboard", dashboard_expressions())):
        for name, expr in exprs.items():
            for metric in metric_names(expr):
                where.setdefault(metric, set()).add(f"{source} {name}")
    return where
