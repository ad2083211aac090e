"""Offline tests of the Helm chart and of the Dockerfile.

`helm lint --strict` and `helm template` run through Helm's own Go library
(the helm-python-sdk package), so no cluster and no helm binary are needed.
When PPS_BIN names a built pos-profile-sync binary, the rendered config.toml is
also checked by the service itself (`check-config`).
"""

from __future__ import annotations

import copy
import json
import math
import os
import pathlib
import re
import shutil
import subprocess
import tomllib

import helm_python as helm
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "pos-profile-sync"
HERE = pathlib.Path(__file__).resolve().parent
RELEASE = "pps"
NAMESPACE = "retail"
FULLNAME = f"{RELEASE}-pos-profile-sync"
SECRET_DIR = "/var/run/secrets/pos-profile-sync"
CONFIG_PATH = "/etc/pos-profile-sync/config.toml"

# The metrics the service exports (the names dashboards and alerts may use).
KNOWN_METRICS = {
    "pps_events_consumed_total",
    "pps_target_requests_total",
    "pps_target_request_duration_seconds",
    "pps_event_age_seconds",
    "pps_target_in_flight",
    "pps_rate_share_per_second",
    "pps_rate_limiter_wait_seconds_total",
    "pps_retry_after_pauses_total",
    "pps_auth_paused",
    "pps_dead_letters_total",
    "pps_dead_letter_write_errors_total",
    "pps_committed_offset",
    "pps_high_watermark",
    "pps_consumer_lag",
    "pps_rebalances_total",
    "pps_paused_partitions",
    "pps_daily_updates",
    "pps_daily_quota_share",
    "pps_concurrency_limit",
    "pps_bulk_batches_total",
    "pps_bulk_rows_total",
    "pps_bulk_calls_total",
    "pps_route",
    "pps_route_backlog",
    "pps_events_accepted_total",
    "pps_oldest_unfinished_age_seconds",
}

# Every configuration key of the service: section 3 of docs/contract.md plus the
# keys the service added (delivery tuning, mapping, log format).
CONFIG_KEYS = {
    "kafka": {"brokers", "topics", "group_id", "dlq_topic", "start_from", "properties"},
    "target": {"client_code", "base_url", "token_file", "ca_file", "timeout_ms"},
    "rate_limit": {"per_second", "burst", "daily_quota"},
    "delivery": {
        "max_in_flight",
        "coalesce_window_ms",
        "max_attempts",
        "drain_timeout_ms",
        "commit_interval_ms",
        "retry_initial_ms",
        "retry_max_ms",
        "max_buffered_per_partition",
        "max_buffered",
    },
    "bulk": {
        "mode",
        "max_rows",
        "max_bytes",
        "max_age_ms",
        "commit_on",
        "calls_per_minute",
        "overflow_after_seconds",
    },
    "existence": {
        "policy",
        "fetch_per_second",
        "fetch_burst",
        "confirmed_ttl_ms",
        "max_profiles",
    },
    "verify": {"sample_ratio", "delay_ms", "interval_ms", "max_pending"},
    "mapping": {"rename", "drop", "constants"},
    "server": {"listen"},
    "log": {"format"},
}


# ---------------------------------------------------------------- helpers


def values(name: str) -> dict:
    return yaml.safe_load((HERE / name).read_text())


def merged(base: dict, overlay: dict) -> dict:
    """`base` with `overlay` merged in, as helm merges several -f files."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def lint_problems(vals: dict) -> list[str]:
    """What `helm lint --strict` reports as warnings or errors (info is fine)."""
    report = helm.lint(str(CHART), vals, strict=True, namespace=NAMESPACE)
    problems = [m["error"] for m in report["messages"] if m["severity"] >= 2]
    return problems + [e for e in report["errors"] if e not in problems]


def render(vals: dict) -> dict[str, str]:
    with helm.Chart.load(str(CHART)) as chart:
        return chart.render(vals, name=RELEASE, namespace=NAMESPACE)


def objects(rendered: dict[str, str]) -> list[dict]:
    docs = []
    for path, text in rendered.items():
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def notes(rendered: dict[str, str]) -> str:
    return next(text for path, text in rendered.items() if path.endswith("NOTES.txt"))


def config_toml(docs: list[dict]) -> str:
    configmap = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == FULLNAME
    )
    return configmap["data"]["config.toml"]


def metric_names(expr: str) -> set[str]:
    return {m.removesuffix("_bucket") for m in re.findall(r"\bpps_[a-z_]+", expr)}


MINIMAL = values("values-minimal.yaml")
FULL = values("values-full.yaml")
# The production example the operations guide starts from.
PRODUCTION = yaml.safe_load((ROOT / "examples" / "values-production.yaml").read_text())
VALUE_FILES = {"minimal": MINIMAL, "full": FULL, "production": PRODUCTION}


# ------------------------------------------------------------------- lint


def test_chart_lints_clean_with_minimal_values():
    assert lint_problems(MINIMAL) == []


def test_chart_lints_clean_with_every_optional_part():
    assert lint_problems(FULL) == []
    kinds = {d["kind"] for d in objects(render(FULL))}
    assert {
        "Deployment",
        "ConfigMap",
        "Service",
        "ServiceAccount",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "PrometheusRule",
        "ScaledObject",
    } <= kinds


def test_chart_lints_clean_with_the_cpu_autoscaler_instead_of_keda():
    vals = merged(FULL, {"keda": {"enabled": False}, "autoscaling": {"enabled": True}})
    assert lint_problems(vals) == []
    hpa = one(objects(render(vals)), "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": FULLNAME,
    }


def test_lint_fails_without_the_client_code():
    problems = lint_problems(values("values-no-client-code.yaml"))
    assert problems, "a release without config.target.client_code must not lint"
    assert any("client_code" in p for p in problems)


def test_lint_fails_on_the_bare_defaults():
    problems = lint_problems({})
    assert any("client_code" in p for p in problems)
    assert any("brokers" in p for p in problems)


@pytest.mark.parametrize(
    ("overlay", "complaint"),
    [
        ({"replicaCount": "3"}, "replicaCount"),
        ({"config": {"rate_limit": {"per_second": "fast"}}}, "per_second"),
        ({"config": {"rate_limit": {"burst": 2.5}}}, "burst"),
        ({"config": {"delivery": {"max_inflight": 10}}}, "max_inflight"),
        ({"config": {"bulk": {"mode": "sometimes"}}}, "mode"),
        ({"config": {"bulk": {"max_rows": 600000}}}, "max_rows"),
        ({"config": {"kafka": {"topics": []}}}, "topics"),
        ({"config": {"kafka": {"topics": "pos.purchases"}}}, "topics"),
        ({"config": {"kafka": {"properties": {"fetch.wait.max.ms": {"x": 1}}}}}, "properties"),
        ({"config": {"log": {"format": "xml"}}}, "format"),
        ({"config": {"target": {"token": "abc"}}}, "token"),
        ({"serviceMonitor": {"enabled": "yes"}}, "enabled"),
        ({"secrets": {"target": {"existingSecret": 7}}}, "existingSecret"),
    ],
)
def test_schema_rejects_wrong_values(overlay, complaint):
    problems = lint_problems(merged(MINIMAL, overlay))
    assert any(complaint in p for p in problems), problems


@pytest.mark.parametrize(
    ("overlay", "complaint"),
    [
        ({"config": {"kafka": {"properties": {"sasl.password": "hunter2"}}}}, "sasl.password"),
        ({"config": {"kafka": {"properties": {"ssl.key.password": "hunter2"}}}}, "ssl.key.password"),
        ({"autoscaling": {"enabled": True}, "keda": {"enabled": True}}, "'not' failed"),
        ({"config": {"server": {"listen": "0.0.0.0"}}}, "listen"),
    ],
)
def test_lint_refuses_inlined_secrets_and_conflicting_settings(overlay, complaint):
    problems = lint_problems(merged(MINIMAL, overlay))
    assert any(complaint in p for p in problems), problems


@pytest.mark.parametrize(
    ("overlay", "complaint"),
    [
        (
            {"config": {"kafka": {"properties": {"sasl.password": "hunter2"}}}},
            "sasl.password",
        ),
        (
            {"config": {"delivery": {"drain_timeout_ms": 45000}}},
            "must be below the Kafka session timeout",
        ),
        (
            {
                "config": {
                    "delivery": {"drain_timeout_ms": 20000},
                    "kafka": {"properties": {"session.timeout.ms": "15000"}},
                }
            },
            "must be below the Kafka session timeout (session.timeout.ms = 15000)",
        ),
        (
            {
                "secrets": {"target": {"existingSecret": "pps-target"}},
                "config": {"target": {"token_file": "/somewhere/else"}},
            },
            "conflicts with secrets.target.existingSecret",
        ),
        (
            {"secrets": {"kafkaTls": {"existingSecret": "tls", "caKey": "", "certKey": ""}}},
            "neither caKey nor certKey",
        ),
        (
            {"config": {"kafka": {"properties": {"ssl.ca.location": "/etc/ssl/other.pem"}}},
             "secrets": {"kafkaTls": {"existingSecret": "tls"}}},
            "conflicts with the file mounted from secrets",
        ),
    ],
)
def test_install_refuses_settings_the_service_would_reject(overlay, complaint):
    """What `helm template` and `helm install` refuse. (`helm lint` only logs a
    template's `fail`, so the schema repeats what it can express.)"""
    with pytest.raises(helm.HelmError) as refused:
        render(merged(MINIMAL, overlay))
    assert complaint in str(refused.value)


# ------------------------------------------------------------- deployment


@pytest.mark.parametrize("which", sorted(VALUE_FILES))
def test_deployment_is_locked_down(which):
    deployment = one(objects(render(VALUE_FILES[which])), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    ctx = container["securityContext"]
    assert ctx["runAsNonRoot"] is True
    assert ctx["runAsUser"] == 65532
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"]["drop"] == ["ALL"]
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]


@pytest.mark.parametrize("which", sorted(VALUE_FILES))
def test_deployment_probes_point_at_health_endpoints(which):
    deployment = one(objects(render(VALUE_FILES[which])), "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    port = int(VALUE_FILES[which]["config"].get("server", {}).get("listen", ":9464").rsplit(":", 1)[1])
    assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


@pytest.mark.parametrize("which", sorted(VALUE_FILES))
def test_grace_period_outlasts_the_drain_deadline(which):
    vals = VALUE_FILES[which]
    docs = objects(render(vals))
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    drain_ms = tomllib.loads(config_toml(docs))["delivery"]["drain_timeout_ms"]
    grace = pod["terminationGracePeriodSeconds"]
    # The service exits within the drain deadline plus 5 s; SIGKILL must come later.
    assert grace * 1000 > drain_ms + 5000
    assert grace == math.ceil(drain_ms / 1000) + 10


def test_grace_period_follows_the_drain_deadline():
    pod = one(
        objects(render(merged(MINIMAL, {"config": {"delivery": {"drain_timeout_ms": 30500}}}))),
        "Deployment",
    )["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 31 + 10


def test_config_checksum_rolls_the_pods_only_when_the_config_changes():
    def checksum(vals):
        deployment = one(objects(render(vals)), "Deployment")
        return deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert re.fullmatch(r"[0-9a-f]{64}", checksum(MINIMAL))
    assert checksum(MINIMAL) == checksum(copy.deepcopy(MINIMAL))
    faster = merged(MINIMAL, {"config": {"rate_limit": {"per_second": 11.0}}})
    assert checksum(faster) != checksum(MINIMAL)


def test_deployment_runs_the_config_the_configmap_holds():
    docs = objects(render(MINIMAL))
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["run", "--config", CONFIG_PATH]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert mount["mountPath"] == str(pathlib.PurePosixPath(CONFIG_PATH).parent)
    volume = next(v for v in pod["volumes"] if v["name"] == "config")
    assert volume["configMap"]["name"] == FULLNAME


def test_replicas_are_left_to_the_autoscaler_when_one_is_enabled():
    assert one(objects(render(MINIMAL)), "Deployment")["spec"]["replicas"] == 2
    assert "replicas" not in one(objects(render(FULL)), "Deployment")["spec"]


def test_static_membership_names_each_member_after_its_pod_only_when_enabled():
    def env(vals: dict) -> list[dict]:
        deployment = one(objects(render(vals)), "Deployment")
        return deployment["spec"]["template"]["spec"]["containers"][0]["env"]

    names = [e["name"] for e in env(MINIMAL)]
    assert "PPS_KAFKA__PROPERTIES__GROUP_INSTANCE_ID" not in names
    enabled = env(merged(MINIMAL, {"staticMembership": {"enabled": True}}))
    by_name = {e["name"]: e for e in enabled}
    assert by_name["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert by_name["PPS_KAFKA__PROPERTIES__GROUP_INSTANCE_ID"]["value"] == "$(POD_NAME)"
    # Kubernetes expands $(POD_NAME) only from variables defined before it.
    order = [e["name"] for e in enabled]
    assert order.index("POD_NAME") < order.index("PPS_KAFKA__PROPERTIES__GROUP_INSTANCE_ID")


def test_pods_spread_over_zones_and_nodes():
    pod = one(objects(render(MINIMAL)), "Deployment")["spec"]["template"]["spec"]
    keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    for constraint in pod["topologySpreadConstraints"]:
        assert constraint["labelSelector"]["matchLabels"] == {
            "app.kubernetes.io/name": "pos-profile-sync",
            "app.kubernetes.io/instance": RELEASE,
        }


# ---------------------------------------------------------------- secrets


def test_secrets_are_mounted_as_whole_volumes_from_existing_secrets():
    docs = objects(render(FULL))
    assert not [d for d in docs if d["kind"] == "Secret"], "the chart must never create a Secret"
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert all("subPath" not in m for m in container["volumeMounts"]), "subPath breaks rotation"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["target-token"] == f"{SECRET_DIR}/target"
    assert mounts["kafka-secrets"] == f"{SECRET_DIR}/kafka"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["target-token"]["secret"]["secretName"] == "pps-target-token"
    sources = {s["secret"]["name"]: s["secret"]["items"] for s in volumes["kafka-secrets"]["projected"]["sources"]}
    assert sources["pps-kafka-sasl"] == [{"key": "password", "path": "sasl-password"}]
    assert {i["path"] for i in sources["pps-kafka-tls"]} == {"ca.crt", "tls.crt", "tls.key", "key-password"}

    # The TOML points at exactly those files.
    config = tomllib.loads(config_toml(docs))
    props = config["kafka"]["properties"]
    assert config["target"]["token_file"] == f"{SECRET_DIR}/target/token"
    assert props["sasl.password_file"] == f"{SECRET_DIR}/kafka/sasl-password"
    assert props["ssl.ca.location"] == f"{SECRET_DIR}/kafka/ca.crt"
    assert props["ssl.certificate.location"] == f"{SECRET_DIR}/kafka/tls.crt"
    assert props["ssl.key.location"] == f"{SECRET_DIR}/kafka/tls.key"
    assert props["ssl.key.password_file"] == f"{SECRET_DIR}/kafka/key-password"


@pytest.mark.parametrize("which", sorted(VALUE_FILES))
def test_no_secret_value_reaches_a_configmap(which):
    secret_keys = {
        "sasl.password",
        "ssl.key.password",
        "ssl.key.pem",
        "ssl.keystore.password",
        "sasl.oauthbearer.client.secret",
        "token",
        "password",
    }

    def walk(node, path=()):
        if isinstance(node, dict):
            for key, value in node.items():
                yield from walk(value, (*path, key))
        else:
            yield path, node

    for doc in objects(render(VALUE_FILES[which])):
        if doc["kind"] != "ConfigMap":
            continue
        for text in doc["data"].values():
            if not text.lstrip().startswith("{"):
                for path, value in walk(tomllib.loads(text)):
                    assert path[-1] not in secret_keys, f"{'.'.join(path)} is a secret"
                    if isinstance(value, str) and value.startswith("/"):
                        continue
                    assert "BEGIN" not in str(value) and "PRIVATE KEY" not in str(value)


def test_a_password_given_inline_is_refused_and_never_rendered():
    vals = merged(FULL, {"config": {"kafka": {"properties": {"sasl.password": "hunter2"}}}})
    with pytest.raises(helm.HelmError) as refused:
        render(vals)
    assert "sasl.password" in str(refused.value)
    assert "hunter2" not in str(refused.value)


# ------------------------------------------------------------------- TOML


@pytest.mark.parametrize("which", sorted(VALUE_FILES))
def test_configmap_holds_valid_toml_with_every_setting(which):
    config = tomllib.loads(config_toml(objects(render(VALUE_FILES[which]))))
    assert set(config) == set(CONFIG_KEYS)
    for section, keys in CONFIG_KEYS.items():
        assert set(config[section]) == keys, section
    assert isinstance(config["rate_limit"]["per_second"], float)
    assert isinstance(config["existence"]["fetch_per_second"], float)
    assert isinstance(config["verify"]["sample_ratio"], float)
    for section, key in [
        ("rate_limit", "burst"),
        ("rate_limit", "daily_quota"),
        ("delivery", "max_in_flight"),
        ("delivery", "drain_timeout_ms"),
        ("bulk", "max_bytes"),
        ("bulk", "max_rows"),
        ("target", "timeout_ms"),
    ]:
        assert type(config[section][key]) is int, f"{section}.{key} must be a TOML integer"


def test_full_values_reach_the_toml_unchanged():
    config = tomllib.loads(config_toml(objects(render(FULL))))
    given = FULL["config"]
    assert config["kafka"]["topics"] == given["kafka"]["topics"]
    for key, value in given["kafka"]["properties"].items():
        assert config["kafka"]["properties"][key] == value
    assert config["rate_limit"]["per_second"] == 11.5
    assert config["mapping"] == {
        "rename": {"lastPurchaseTotal": "spend"},
        "drop": ["lastPurchaseChannel"],
        "constants": {"source": "pos"},
    }
    assert config["delivery"] == given["delivery"]
    assert config["bulk"] == given["bulk"]


# Strings that YAML or TOML could mistake for something else.
LOOKALIKES = {
    "yes": "yes",
    "on": "on",
    "number": "123",
    "float": "1e3",
    "hex": "0x1F",
    "tilde": "~",
    "null": "null",
    "date": "2026-11-28",
    "empty": "",
    "padded": "  lead",
}


def test_toml_quoting_survives_awkward_strings():
    awkward = 'a "quoted" back\\slash\ttab\nnewline # not a comment é 中 \u0007 = [x]'
    vals = merged(
        MINIMAL,
        {
            "config": {
                "kafka": {"properties": {"client.id": awkward, "weird.key\"x": "1", "socket.nagle.disable": True}},
                "mapping": {
                    "constants": {"source": awkward, "with space": "v", **LOOKALIKES},
                    "rename": {"lastPurchaseTotal": "spend"},
                },
                "rate_limit": {"per_second": 2},
            }
        },
    )
    config = tomllib.loads(config_toml(objects(render(vals))))
    assert config["kafka"]["properties"]["client.id"] == awkward
    assert config["kafka"]["properties"]['weird.key"x'] == "1"
    assert config["kafka"]["properties"]["socket.nagle.disable"] is True
    assert config["mapping"]["constants"] == {"source": awkward, "with space": "v", **LOOKALIKES}
    assert config["rate_limit"]["per_second"] == 2.0
    assert isinstance(config["rate_limit"]["per_second"], float)


def test_null_settings_are_left_to_the_service_default():
    vals = merged(MINIMAL, {"config": {"target": {"base_url": None}, "delivery": {"max_attempts": None}}})
    config = tomllib.loads(config_toml(objects(render(vals))))
    assert "base_url" not in config["target"]
    assert "max_attempts" not in config["delivery"]


@pytest.mark.parametrize("which", sorted(VALUE_FILES))
def test_service_accepts_the_rendered_config(which, tmp_path):
    binary = os.environ.get("PPS_BIN")
    if not binary:
        message = (
            "PPS_BIN is not set: set it to a built pos-profile-sync binary "
            "(e.g. PPS_BIN=target/release/pos-profile-sync) to have the service "
            "check the rendered config.toml"
        )
        print(f"SKIPPED: {message}")
        pytest.skip(message)
    text = config_toml(objects(render(VALUE_FILES[which])))
    # The Secret files do not exist outside a pod: stand real ones in a temp dir.
    secrets = tmp_path / "secrets"
    make_secret_files(secrets)
    text = text.replace(SECRET_DIR, str(secrets))
    config_file = tmp_path / "config.toml"
    config_file.write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PPS_")}
    result = subprocess.run(
        [binary, "check-config", "--config", str(config_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, (
        f"check-config exited {result.returncode}\n--- config.toml\n{text}\n"
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )


def make_secret_files(directory: pathlib.Path) -> None:
    """The files the chart mounts from Secrets, with usable contents."""
    (directory / "target").mkdir(parents=True)
    (directory / "kafka").mkdir()
    (directory / "target" / "token").write_text("chart-test-token\n")
    kafka = directory / "kafka"
    (kafka / "sasl-password").write_text("chart-test-password\n")
    (kafka / "key-password").write_text("chart-test-key-password")
    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed to make the TLS files for check-config"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-days", "1",
            "-subj", "/CN=pos-profile-sync-chart-test",
            "-keyout", str(kafka / "tls.key"), "-out", str(kafka / "tls.crt"),
            "-passout", f"file:{kafka / 'key-password'}",
        ],
        check=True,
        capture_output=True,
    )
    shutil.copy(kafka / "tls.crt", kafka / "ca.crt")


# ------------------------------------------------------------------ NOTES


def test_notes_warn_when_replicas_exceed_partitions():
    text = notes(render(merged(MINIMAL, {"replicaCount": 8, "kafka": {"partitions": 6}})))
    assert "WARNING: replicaCount (8) exceeds the partitions" in text
    assert "2 pod(s) will hold no partition" in text


def test_notes_stay_quiet_when_replicas_fit_the_partitions():
    text = notes(render(merged(MINIMAL, {"replicaCount": 6, "kafka": {"partitions": 6}})))
    assert "WARNING" not in text
    assert "Share per pod:   1.67 to 1.67 updates/s with 6 pods" in text


def test_install_refuses_an_autoscaler_that_may_exceed_the_partitions():
    with pytest.raises(helm.HelmError) as refused:
        render(merged(FULL, {"keda": {"maxReplicaCount": 20}}))
    assert "keda.maxReplicaCount (20) exceeds kafka.partitions (12)" in str(refused.value)
    cpu = merged(FULL, {"keda": {"enabled": False}, "autoscaling": {"enabled": True, "maxReplicas": 13}})
    with pytest.raises(helm.HelmError) as refused:
        render(cpu)
    assert "autoscaling.maxReplicas (13) exceeds kafka.partitions (12)" in str(refused.value)


def test_notes_ask_for_the_partition_count_when_unknown():
    text = notes(render(merged(MINIMAL, {"kafka": {"partitions": 0}})))
    assert "kafka.partitions is not set" in text


def test_notes_warn_when_the_budget_outruns_the_daily_quota():
    text = notes(
        render(
            merged(
                MINIMAL,
                {
                    "config": {"rate_limit": {"per_second": 20.0, "daily_quota": 1000000}},
                    "rateBudget": {"allowAboveAdobeCap": True},
                },
            )
        )
    )
    assert "WARNING: config.rate_limit.per_second (20)" in text
    assert "1728000 single updates" in text


# ------------------------------------------------------ monitoring, scaling


def test_prometheus_rule_covers_the_failure_modes():
    rule = one(objects(render(FULL)), "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == {
        "PosProfileSyncConsumerLagGrowing",
        "PosProfileSyncTargetAuthPaused",
        "PosProfileSyncDeadLetters",
        "PosProfileSyncDeadLetterWriteErrors",
        "PosProfileSyncDailyQuotaNearlyUsed",
        "PosProfileSyncDailyQuotaRunningOut",
        "PosProfileSyncPartitionStuck",
        "PosProfileSyncTargetErrors",
        "PosProfileSyncPodNotReady",
        "PosProfileSyncDown",
    }
    for name, alert in alerts.items():
        assert metric_names(alert["expr"]) <= KNOWN_METRICS, name
        assert alert["labels"]["severity"] in {"warning", "critical"}
        assert alert["labels"]["team"] == "retail-platform"
        assert alert["annotations"]["runbook_url"].startswith("https://runbooks.example.com/")
    assert "pps_auth_paused" in alerts["PosProfileSyncTargetAuthPaused"]["expr"]
    assert "/ 1000000 > 0.9" in alerts["PosProfileSyncDailyQuotaNearlyUsed"]["expr"]
    assert f'job="{FULLNAME}",namespace="{NAMESPACE}"' in alerts["PosProfileSyncConsumerLagGrowing"]["expr"]


def test_runbook_anchors_exist_in_the_operations_guide():
    guide = (ROOT / "docs" / "operations.md").read_text()
    rule = one(objects(render(FULL)), "PrometheusRule")
    for group in rule["spec"]["groups"]:
        for alert in group["rules"]:
            assert f"### {alert['alert']}" in guide, alert["alert"]
            assert alert["annotations"]["runbook_url"].endswith("#" + alert["alert"].lower())


def test_metrics_service_keeps_not_ready_pods_scraped():
    docs = objects(render(FULL))
    service = one(docs, "Service")
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["ports"][0]["port"] == 9464
    monitor = one(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()


def test_keda_scales_on_the_groups_lag():
    vals = merged(FULL, {"config": {"kafka": {"topics": ["pos.purchases"]}}})
    scaled = one(objects(render(vals)), "ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["consumerGroup"] == "pos-profile-sync-prod"
    assert meta["topic"] == "pos.purchases"
    assert meta["lagThreshold"] == "5000"
    assert meta["offsetResetPolicy"] == "earliest"
    assert meta["bootstrapServers"] == FULL["config"]["kafka"]["brokers"]
    assert all(isinstance(v, str) for v in meta.values()), "KEDA metadata values are strings"
    assert trigger["authenticationRef"] == {"name": "pps-kafka-keda-auth"}


def test_disruption_budget_lets_unready_pods_be_evicted():
    budget = one(objects(render(MINIMAL)), "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_dashboard_configmap_shows_what_an_sre_looks_at_first():
    docs = objects(render(FULL))
    configmap = next(d for d in docs if d["metadata"]["name"] == f"{FULLNAME}-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(configmap["data"]["pos-profile-sync.json"])
    panels = {p["title"]: p for p in dashboard["panels"] if p["type"] != "row"}
    for title in [
        "Throughput",
        "Lag per partition",
        "Budget use",
        "Target responses",
        "Dead letters by class",
        "Daily quota use",
    ]:
        assert title in panels, title
    used = set()
    for panel in panels.values():
        for target in panel["targets"]:
            used |= metric_names(target["expr"])
    assert used <= KNOWN_METRICS, used - KNOWN_METRICS
    assert "pps_rate_share_per_second" in {
        m for t in panels["Budget use"]["targets"] for m in metric_names(t["expr"])
    }


def test_dashboard_is_off_by_default():
    assert not [d for d in objects(render(MINIMAL)) if d["metadata"]["name"].endswith("-dashboard")]


# ----------------------------------------------------------------- values


def test_every_values_key_is_commented():
    """Each key of values.yaml has a comment of its own, except inside the
    Kubernetes objects that are passed through as they are."""
    passthrough = {
        "podSecurityContext",
        "securityContext",
        "resources",
        "strategy",
        "topologySpreadConstraints",
        "behavior",
        "properties",
    }
    lines = (CHART / "values.yaml").read_text().splitlines()
    uncommented = []
    stack: list[tuple[int, str]] = []
    for number, line in enumerate(lines):
        match = re.match(r"^(\s*)(- )?([A-Za-z0-9_.\-]+):", line)
        if not match or line.lstrip().startswith("#"):
            continue
        indent = len(match.group(1)) + (2 if match.group(2) else 0)
        key = match.group(3)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        inside_passthrough = any(name in passthrough for _, name in stack)
        stack.append((indent, key))
        if inside_passthrough or match.group(2):
            continue
        previous = lines[number - 1].strip() if number else ""
        if not previous.startswith("#"):
            uncommented.append(f"line {number + 1}: {key}")
    assert uncommented == []


def test_schema_requires_what_the_service_cannot_guess():
    schema = json.loads((CHART / "values.schema.json").read_text())
    config = schema["properties"]["config"]
    assert "client_code" in config["properties"]["target"]["required"]
    assert {"brokers", "topics"} <= set(config["properties"]["kafka"]["required"])
    for section, keys in CONFIG_KEYS.items():
        assert set(config["properties"][section]["properties"]) == keys, section


# ------------------------------------------------------------- Dockerfile


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuations joined."""
    text = (ROOT / "Dockerfile").read_text()
    logical, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if current and line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    stages: list[list[tuple[str, str]]] = []
    for line in logical:
        instruction, _, args = line.strip().partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction, args.strip()))
    return stages


def cargo_bin_name() -> str:
    manifest = tomllib.loads((ROOT / "Cargo.toml").read_text())
    (binary,) = [b for b in manifest["bin"] if b["name"] == manifest["package"]["name"]]
    return binary["name"]


def test_dockerfile_entrypoint_runs_the_packages_binary():
    name = cargo_bin_name()
    assert name == "pos-profile-sync"
    final = dockerfile_stages()[-1]
    entrypoint = json.loads(next(a for i, a in final if i == "ENTRYPOINT"))
    assert entrypoint == [f"/usr/local/bin/{name}"]
    copies = [a.split() for i, a in final if i == "COPY"]
    destinations = {c[-1]: c[-2] for c in copies}
    assert entrypoint[0] in destinations, "the entrypoint must be the copied binary"
    assert pathlib.PurePosixPath(destinations[entrypoint[0]]).name == name
    build = " ".join(a for stage in dockerfile_stages() for i, a in stage if i == "RUN")
    assert f"--bin {name}" in build
    assert f"target/release/{name}" in build


def test_dockerfile_cmd_runs_the_consumer_with_the_charts_config():
    final = dockerfile_stages()[-1]
    cmd = json.loads(next(a for i, a in final if i == "CMD"))
    assert cmd[0] == "run"
    assert cmd == ["run", "--config", CONFIG_PATH]
    (container,) = one(objects(render(MINIMAL)), "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["args"] == cmd


def test_dockerfile_runtime_is_small_non_root_and_labelled():
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage build"
    final = stages[-1]
    assert ("USER", "65532:65532") in final
    assert ("EXPOSE", "9464") in final
    labels = " ".join(a for i, a in final if i == "LABEL")
    for label in ["title", "description", "version", "revision", "created", "licenses"]:
        assert f"org.opencontainers.image.{label}=" in labels
    text = (ROOT / "Dockerfile").read_text()
    assert "rust:1-bookworm" in text
    assert "gcr.io/distroless/cc-debian12:nonroot" in text
    assert "cargo chef cook" in text


def test_dockerfile_cooks_with_the_patched_crates_sources():
    """A `[patch.crates-io]` path is a dependency the cook step builds: its
    source must be in the builder stage before `cargo chef cook`."""
    manifest = tomllib.loads((ROOT / "Cargo.toml").read_text())
    paths = [p["path"] for p in manifest.get("patch", {}).get("crates-io", {}).values() if "path" in p]
    assert paths, "the manifest patches rdkafka by path"
    builder = next(stage for stage in dockerfile_stages() if any("cargo chef cook" in a for _, a in stage))
    cook = next(n for n, (i, a) in enumerate(builder) if i == "RUN" and "cargo chef cook" in a)
    copied = {a.split()[-1].rstrip("/") for i, a in builder[:cook] if i == "COPY"}
    for path in paths:
        assert any(path == c or path.startswith(c + "/") for c in copied), f"{path} not copied before the cook"


def test_dockerfile_ships_the_binary_with_its_line_tables_compressed():
    """The line tables stay (backtraces with files and lines), zlib-compressed,
    on the binary the runtime stage copies, before it is checked and copied."""
    builder = next(stage for stage in dockerfile_stages() if any("cargo chef cook" in a for _, a in stage))
    build = next(a for i, a in builder if i == "RUN" and "cargo build --release" in a)
    assert "objcopy --compress-debug-sections=zlib /out/pos-profile-sync" in build
    assert build.index("install -D") < build.index("objcopy"), "compress the installed binary"
    manifest = tomllib.loads((ROOT / "Cargo.toml").read_text())
    assert manifest["profile"]["release"]["debug"] == "line-tables-only"


def test_versions_agree():
    version = tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == version, "Chart.yaml appVersion must follow Cargo.toml"
    assert f"ARG VERSION={version}" in (ROOT / "Dockerfile").read_text()


def test_dockerignore_keeps_build_artifacts_out_of_the_context():
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {"target/", ".git", "fuzz/artifacts/"} <= ignored
    assert "src" not in ignored and "Cargo.lock" not in ignored
