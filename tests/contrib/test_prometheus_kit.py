"""contrib/: the alert rules pass `promtool check rules`, every alert has a unit test
and they pass `promtool test rules`, and every dashboard expression is PromQL that
promtool parses. Skipped (saying why) where promtool is not installed; .ci/run
installs it (Debian's `prometheus` package)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from tests.contrib.kit import (
    RULE_TESTS,
    RULES,
    alert_expressions,
    as_promql,
    dashboard_expressions,
    metric_names,
)

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus; .ci/run does)")
TIMEOUT_S = 120


def promtool(*argv: str, cwd=None) -> subprocess.CompletedProcess:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *argv], capture_output=True, text=True, cwd=cwd, timeout=TIMEOUT_S)


@needs_promtool
def test_the_alert_rules_pass_promtool_check():
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_expressions())} rules found" in done.stdout


@needs_promtool
def test_every_alert_has_a_unit_test_and_the_unit_tests_pass():
    tested = set(re.findall(r"alertname:\s*(\S+)", RULE_TESTS.read_text()))
    assert set(alert_expressions()) <= tested, f"alerts without a test: {set(alert_expressions()) - tested}"
    done = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_every_dashboard_expression_is_promql_promtool_parses(tmp_path):
    # As recording rules, the one file promtool checks whose expressions are free.
    rules = ["groups:", "  - name: icall_dashboard", "    rules:"]
    for n, expr in enumerate(dashboard_expressions().values()):
        # A JSON string is a YAML string whatever quotes the expression holds.
        rules += [f"      - record: dashboard_expression_{n}", f"        expr: {json.dumps(as_promql(expr))}"]
    path = tmp_path / "dashboard-as-rules.yml"
    path.write_text("\n".join(rules) + "\n")
    done = promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


def test_metric_names_are_read_from_an_expression_without_functions_labels_or_keywords():
    expr = ('histogram_quantile(0.99, sum by (le, outcome) (rate(icall_crm_lookup_seconds_bucket'
            '{job="icall", instance=~"$instance"}[$__rate_interval]))) > 1e3 and on (instance) '
            'icall_crm_breaker_open == bool 1 or absent(up{job="icall"})')
    assert metric_names(expr) == {"icall_crm_lookup_seconds_bucket", "icall_crm_breaker_open", "up"}
