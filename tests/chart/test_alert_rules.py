"""The rendered alerts and dashboard queries as Prometheus reads them.

Every alert expression and dashboard query is parsed by a PromQL parser
(promql-parser, the Rust parser's Python binding); every alert has a `for`,
a severity and a runbook section. With promtool (tests/chart/run.sh unpacks
Debian's), `promtool check rules` validates the rules and their templates, and
`promtool test rules` feeds made-up series through them and checks which alerts
fire when.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import promql_parser
import pytest
import yaml

from test_chart import CHART, FULL, MINIMAL, NAMESPACE, FULLNAME, ROOT, merged, objects, one, render

MONITORED = merged(
    MINIMAL,
    {"prometheusRule": {"enabled": True, "runbookBaseUrl": "https://runbooks.example.com/pps"}},
)


def alerts(vals: dict) -> list[dict]:
    rule = one(objects(render(vals)), "PrometheusRule")
    return [r for g in rule["spec"]["groups"] for r in g["rules"]]


@pytest.mark.parametrize("which", ["monitored", "full"])
def test_every_alert_parses_and_says_how_long_what_and_where_to_look(which):
    vals = {"monitored": MONITORED, "full": FULL}[which]
    guide = (ROOT / "docs" / "operations.md").read_text()
    for alert in alerts(vals):
        name = alert["alert"]
        promql_parser.parse(alert["expr"])
        assert re.fullmatch(r"([0-9]+(ms|s|m|h|d|w|y))+", alert["for"]), name
        assert alert["labels"]["severity"] in {"warning", "critical"}, name
        assert alert["annotations"]["summary"], name
        assert alert["annotations"]["description"], name
        assert alert["annotations"]["runbook_url"].endswith("#" + name.lower()), name
        assert f"### {name}" in guide, name


def test_dashboard_queries_parse():
    dashboard = json.loads((CHART / "dashboards" / "pos-profile-sync.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "5m")
            expr = expr.replace("$namespace", "retail").replace("$job", FULLNAME)
            promql_parser.parse(expr)


def test_dashboard_counts_events_and_shows_the_bulk_route():
    dashboard = json.loads((CHART / "dashboards" / "pos-profile-sync.json").read_text())
    panels = {p["title"]: p for p in dashboard["panels"] if p["type"] != "row"}
    accepted = " ".join(t["expr"] for t in panels["Accepted / s"]["targets"])
    assert "pps_events_accepted_total" in accepted
    assert "pps_target_requests_total" not in accepted
    for title, metric in [
        ("Bulk batches by status", "pps_bulk_batches_total"),
        ("Bulk rows", "pps_bulk_rows_total"),
        ("Bulk calls", "pps_bulk_calls_total"),
        ("Route and backlog", "pps_route"),
        ("Oldest unfinished event age", "pps_oldest_unfinished_age_seconds"),
    ]:
        assert metric in " ".join(t["expr"] for t in panels[title]["targets"]), title
    quota = " ".join(t["expr"] for t in panels["Daily quota used"]["targets"])
    assert "increase(pps_target_requests_total" in quota and "[24h]" in quota


def test_the_metrics_rules_and_panels_use_are_registered_by_the_service():
    """Names in rules and panels against src/ops/metrics.rs: a renamed metric
    would leave an alert that can never fire."""
    source = (ROOT / "src" / "ops" / "metrics.rs").read_text()
    registered = set(re.findall(r'r\.register\(\s*"(pps_[a-z_]+)"', source))
    counters = set(re.findall(r"pub (\w+): (?:Family<\w+, )?Counter", source))
    field_of = dict(re.findall(r'"(pps_[a-z_]+)",\s*"[^"]*",\s*metrics\.(\w+)\.clone\(\)', source))
    exported = set()
    for name in registered:
        is_counter = field_of.get(name) in counters
        exported.add(f"{name}_total" if is_counter and not name.endswith("_total") else name)
    used = set()
    dashboard = json.loads((CHART / "dashboards" / "pos-profile-sync.json").read_text())
    exprs = [a["expr"] for a in alerts(FULL)] + [
        t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])
    ]
    for expr in exprs:
        used |= {m.removesuffix("_bucket") for m in re.findall(r"\bpps_[a-z_]+", expr)}
    assert used <= exported, used - exported


# ---------------------------------------------------------------- promtool


def promtool() -> str:
    path = os.environ.get("PROMTOOL")
    if not path:
        pytest.skip("no promtool: tests/chart/run.sh unpacks Debian's; set PROMTOOL to use another")
    return path


def rules_file(tmp_path, vals: dict, annotations: bool = True):
    rule = one(objects(render(vals)), "PrometheusRule")
    spec = rule["spec"]
    if not annotations:
        for group in spec["groups"]:
            for r in group["rules"]:
                r.pop("annotations", None)
    path = tmp_path / ("rules.yaml" if annotations else "rules-bare.yaml")
    path.write_text(yaml.safe_dump(spec))
    return path


def test_promtool_accepts_the_rules_and_their_templates(tmp_path):
    for vals in (MONITORED, FULL):
        path = rules_file(tmp_path, vals)
        result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


SEL = f'job="{FULLNAME}",namespace="{NAMESPACE}"'


def series(name: str, labels: str, values: str) -> dict:
    return {"series": f"{name}{{{SEL}{',' if labels else ''}{labels}}}", "values": values}


def expect(alertname: str, at: str, *fired: dict) -> dict:
    return {
        "eval_time": at,
        "alertname": alertname,
        "exp_alerts": [{"exp_labels": {"severity": severity, **labels}} for severity, labels in fired],
    }


def run_promtool_tests(tmp_path, vals: dict, tests: list[dict]):
    rules = rules_file(tmp_path, vals, annotations=False)
    spec = {"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": tests}
    path = tmp_path / "tests.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_partition_stuck_behind_one_event_pages_and_a_moving_one_does_not(tmp_path):
    stuck = {"namespace": NAMESPACE, "topic": "pos.purchases", "partition": "3"}
    run_promtool_tests(
        tmp_path,
        MONITORED,
        [
            {
                "interval": "1m",
                "input_series": [
                    # Partition 3 waits for one event: its age grows a minute a minute.
                    series("pps_oldest_unfinished_age_seconds", 'topic="pos.purchases",partition="3",pod="a"', "0+60x40"),
                    # Partition 4 keeps finishing events: its age stays small.
                    series("pps_oldest_unfinished_age_seconds", 'topic="pos.purchases",partition="4",pod="a"', "2+0x40"),
                ],
                "alert_rule_test": [
                    expect("PosProfileSyncPartitionStuck", "14m"),
                    # Above 900 s from minute 16, for 5 minutes: firing at 21.
                    expect("PosProfileSyncPartitionStuck", "19m"),
                    expect("PosProfileSyncPartitionStuck", "25m", ("critical", stuck)),
                ],
            }
        ],
    )


def test_one_bad_event_does_not_page_but_a_broken_producer_does(tmp_path):
    ns = {"namespace": NAMESPACE}
    run_promtool_tests(
        tmp_path,
        MONITORED,
        [
            {
                "interval": "1m",
                "input_series": [
                    # 100 events a second consumed.
                    series("pps_events_consumed_total", 'outcome="update",error_class=""', "0+6000x60"),
                    # One invalid_json dead letter in the whole hour.
                    series("pps_dead_letters_total", 'error_class="invalid_json"', "0x10 1+0x50"),
                    # From minute 20, 2 % of the events break the schema.
                    series("pps_dead_letters_total", 'error_class="schema_violation"', "0x20 120+120x40"),
                ],
                "alert_rule_test": [
                    expect("PosProfileSyncDeadLetters", "15m"),
                    expect("PosProfileSyncDeadLetters", "30m"),
                    expect(
                        "PosProfileSyncDeadLetters",
                        "50m",
                        ("warning", {**ns, "error_class": "schema_violation"}),
                    ),
                ],
            }
        ],
    )


def test_the_daily_quota_alerts_count_the_whole_group_and_see_exhaustion_coming(tmp_path):
    ns = {"namespace": NAMESPACE}
    steps_a_day = 24 * 12  # at a 5-minute interval
    run_promtool_tests(
        tmp_path,
        MONITORED,  # daily_quota 900,000
        [
            {
                # Two pods, 5 updates/s together for a day, then 20/s: the
                # rolling count grows by 15/s, and from about 4.7 h after the
                # change it would pass 900,000 within the 4-hour horizon.
                "interval": "5m",
                "input_series": [
                    series(
                        "pps_target_requests_total",
                        f'outcome="accepted",status_class="2xx",pod="{pod}"',
                        f"0+750x{steps_a_day} {750 * steps_a_day}+3000x120",
                    )
                    for pod in ("a", "b")
                ],
                "alert_rule_test": [
                    expect("PosProfileSyncDailyQuotaRunningOut", "24h"),
                    expect("PosProfileSyncDailyQuotaRunningOut", "27h"),
                    expect("PosProfileSyncDailyQuotaRunningOut", "30h", ("warning", ns)),
                    expect("PosProfileSyncDailyQuotaNearlyUsed", "30h"),
                ],
            },
            {
                # 10/s steadily for two days, one pod restarting (its counter
                # resets) every 6 hours: 864,000 a day, 96 % of the quota but
                # never more, so it is nearly used and does not run out.
                "interval": "5m",
                "input_series": [
                    series(
                        "pps_target_requests_total",
                        'outcome="accepted",status_class="2xx",pod="a"',
                        " ".join(["0+3000x71"] * 8),
                    ),
                ],
                "alert_rule_test": [
                    expect("PosProfileSyncDailyQuotaNearlyUsed", "40h", ("warning", ns)),
                    expect("PosProfileSyncDailyQuotaRunningOut", "40h"),
                ],
            },
        ],
    )
