"""What the chart refuses, and the hook that lets the service itself refuse
the rest before anything is rolled out.

Every value the service refuses at start-up is refused by the chart too: by
values.schema.json where a schema can say it (`helm lint` and `helm install`
both check it), by a template `fail` for what needs two values at once, and
for everything else by the pre-install/pre-upgrade Job running the real
`check-config`. Each case here is checked on both sides: the chart refuses
it, and (with PPS_BIN) the built service refuses the same setting.
"""

from __future__ import annotations

import os
import subprocess

import helm_python as helm
import pytest

from test_chart import (
    CONFIG_PATH,
    FULL,
    FULLNAME,
    MINIMAL,
    PRODUCTION,
    SECRET_DIR,
    config_toml,
    lint_problems,
    make_secret_files,
    merged,
    objects,
    one,
    render,
)


def refusal(vals: dict) -> str:
    """Every complaint the chart makes about `vals`: lint's (the schema's)
    and render's (the templates' `fail`), joined; empty when it takes them."""
    problems = lint_problems(vals)
    try:
        render(vals)
    except helm.HelmError as error:
        problems.append(str(error))
    return "\n".join(problems)


def service_refuses(env: dict[str, str], tmp_path) -> str | None:
    """The built service's verdict on the minimal release's configuration with
    `env` (PPS_SECTION__KEY variables) over it: its error text, or None if it
    accepts. Skips without PPS_BIN."""
    binary = os.environ.get("PPS_BIN")
    if not binary:
        pytest.skip("PPS_BIN is not set: the service's own verdict needs a built binary")
    text = config_toml(objects(render(MINIMAL)))
    config_file = tmp_path / "config.toml"
    config_file.write_text(text)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PPS_")}
    result = subprocess.run(
        [binary, "check-config", "--config", str(config_file)],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=60,
    )
    return None if result.returncode == 0 else result.stderr


# (values overlay, what the chart says, the same setting for the service)
REFUSED = {
    "a drain deadline of 0": (
        {"config": {"delivery": {"drain_timeout_ms": 0}}},
        "drain_timeout_ms",
        {"PPS_DELIVERY__DRAIN_TIMEOUT_MS": "0"},
    ),
    "a listen address with a host name": (
        {"config": {"server": {"listen": "localhost:9464"}}},
        "listen",
        {"PPS_SERVER__LISTEN": "localhost:9464"},
    ),
    "a client code with a dot": (
        {"config": {"target": {"client_code": "acme.retail"}}},
        "client_code",
        {"PPS_TARGET__CLIENT_CODE": "acme.retail"},
    ),
    "a first retry backoff above the longest": (
        {"config": {"delivery": {"retry_initial_ms": 60000, "retry_max_ms": 30000}}},
        "retry_initial_ms (60000) must be at most config.delivery.retry_max_ms (30000)",
        {"PPS_DELIVERY__RETRY_INITIAL_MS": "60000", "PPS_DELIVERY__RETRY_MAX_MS": "30000"},
    ),
    "100000 requests in flight": (
        {"config": {"delivery": {"max_in_flight": 100000}}},
        "max_in_flight",
        {"PPS_DELIVERY__MAX_IN_FLIGHT": "100000"},
    ),
    "a dead-letter topic that is a source topic": (
        {"config": {"kafka": {"dlq_topic": "pos.purchases"}}},
        "dlq_topic (pos.purchases) must not be one of config.kafka.topics",
        {"PPS_KAFKA__DLQ_TOPIC": "pos.purchases"},
    ),
    "the start position as a librdkafka property": (
        {"config": {"kafka": {"properties": {"auto.offset.reset": "latest"}}}},
        "auto.offset.reset",
        {"PPS_KAFKA__PROPERTIES__AUTO_OFFSET_RESET": "latest"},
    ),
    "the group id as a librdkafka property": (
        {"config": {"kafka": {"properties": {"group.id": "other"}}}},
        "group.id",
        {"PPS_KAFKA__PROPERTIES__GROUP_ID": "other"},
    ),
    "an unknown SASL mechanism": (
        {"config": {"kafka": {"properties": {"sasl.mechanism": "SCRAM-SHA-1"}}}},
        "sasl.mechanism",
        {"PPS_KAFKA__PROPERTIES__SASL_MECHANISM": "SCRAM-SHA-1"},
    ),
    "an unknown start position": (
        {"config": {"kafka": {"start_from": "yesterday"}}},
        "start_from",
        {"PPS_KAFKA__START_FROM": "yesterday"},
    ),
    "a topic name of spaces": (
        {"config": {"kafka": {"topics": ["  "]}}},
        "topics",
        {"PPS_KAFKA__TOPICS": '["  "]'},
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_the_chart_refuses_what_the_service_refuses(case, tmp_path):
    overlay, complaint, env = REFUSED[case]
    said = refusal(merged(MINIMAL, overlay))
    assert complaint in said, f"the chart takes {case}:\n{said}"
    assert service_refuses(env, tmp_path) is not None, f"the service takes {case}"


def test_the_service_takes_the_minimal_release_unchanged(tmp_path):
    """The baseline of the cases above: without the bad setting, both accept."""
    assert refusal(MINIMAL) == ""
    assert service_refuses({}, tmp_path) is None


# ------------------------------------------------------ required decisions


@pytest.mark.parametrize(
    ("path", "complaint"),
    [
        (("image", "repository"), "repository"),
        (("config", "kafka", "start_from"), "start_from"),
        (("config", "rate_limit", "per_second"), "per_second"),
        (("config", "rate_limit", "daily_quota"), "daily_quota"),
    ],
)
def test_a_release_must_state_its_image_start_position_and_budget(path, complaint):
    vals = merged(MINIMAL, {})
    node = vals
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    said = refusal(vals)
    assert complaint in said, said


def test_the_chart_defaults_leave_the_decisions_open():
    """values.yaml itself decides none of them: a release inherits no start
    position, budget or image by accident."""
    import yaml
    from test_chart import CHART

    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert defaults["image"]["repository"] == ""
    assert defaults["config"]["kafka"]["start_from"] is None
    assert defaults["config"]["rate_limit"]["per_second"] is None
    assert defaults["config"]["rate_limit"]["daily_quota"] is None


def test_the_start_position_reaches_the_service_and_keda():
    config = config_toml(objects(render(MINIMAL)))
    assert 'start_from = "latest"' in config
    scaled = one(objects(render(FULL)), "ScaledObject")
    assert scaled["spec"]["triggers"][0]["metadata"]["offsetResetPolicy"] == "earliest"
    latest = merged(FULL, {"config": {"kafka": {"start_from": "latest"}}})
    scaled = one(objects(render(latest)), "ScaledObject")
    assert scaled["spec"]["triggers"][0]["metadata"]["offsetResetPolicy"] == "latest"


@pytest.mark.parametrize(
    "rate",
    [{"per_second": 11.6, "daily_quota": 900000}, {"per_second": 10.0, "daily_quota": 1000001}],
)
def test_a_budget_above_adobes_cap_needs_an_explicit_override(rate):
    above = merged(MINIMAL, {"config": {"rate_limit": rate}})
    said = refusal(above)
    assert "per_second" in said or "daily_quota" in said, said
    allowed = merged(above, {"rateBudget": {"allowAboveAdobeCap": True}})
    assert refusal(allowed) == ""


# ------------------------------------------------------------ shutdown


@pytest.mark.parametrize("margin", [0, 5])
def test_a_grace_margin_shorter_than_the_exit_after_the_deadline_is_refused(margin):
    # The process exits up to 5 s after the drain deadline (final commit,
    # group leave): a smaller margin lets SIGKILL cut them short.
    said = refusal(merged(MINIMAL, {"terminationGraceMarginSeconds": margin}))
    assert "terminationGraceMarginSeconds" in said, said
    assert refusal(merged(MINIMAL, {"terminationGraceMarginSeconds": 6})) == ""


# ------------------------------------------------------------ autoscaling


@pytest.mark.parametrize(
    ("overlay", "complaint"),
    [
        ({"autoscaling": {"enabled": True, "minReplicas": 1}}, "minReplicas"),
        ({"keda": {"minReplicaCount": 0}}, "minReplicaCount"),
        ({"keda": {"minReplicaCount": 1}}, "minReplicaCount"),
        ({"config": {"bulk": {"mode": "off"}}}, "keda.enabled needs config.bulk.mode"),
        ({"kafka": {"partitions": 0}}, "keda.maxReplicaCount is set but kafka.partitions is not"),
    ],
)
def test_autoscaling_is_refused_where_it_cannot_help(overlay, complaint):
    base = FULL if "autoscaling" not in overlay else merged(FULL, {"keda": {"enabled": False}})
    said = refusal(merged(base, overlay))
    assert complaint in said, said


def test_lag_scaling_is_taken_with_bulk_batches_and_room_in_the_partitions():
    vals = merged(FULL, {"keda": {"maxReplicaCount": 12}, "config": {"bulk": {"mode": "always"}}})
    assert refusal(vals) == ""
    scaled = one(objects(render(vals)), "ScaledObject")
    assert scaled["spec"]["minReplicaCount"] == 2
    assert scaled["spec"]["maxReplicaCount"] == 12


# ------------------------------------------------------- the check hook


def hook_objects(vals: dict) -> list[dict]:
    return [
        d
        for d in objects(render(vals))
        if d["metadata"].get("annotations", {}).get("helm.sh/hook")
    ]


@pytest.mark.parametrize("which", ["minimal", "full", "production"])
def test_install_and_upgrade_first_run_check_config_on_what_the_pods_will_see(which):
    vals = {"minimal": MINIMAL, "full": FULL, "production": PRODUCTION}[which]
    docs = objects(render(vals))
    hooks = hook_objects(vals)
    job = one(hooks, "Job")
    configmap = one(hooks, "ConfigMap")
    for hook in (job, configmap):
        annotations = hook["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    # The ConfigMap comes first, and holds the very config.toml of the release.
    assert int(configmap["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        job["metadata"]["annotations"]["helm.sh/hook-weight"]
    )
    assert configmap["data"]["config.toml"] == config_toml(docs)
    pod = job["spec"]["template"]["spec"]
    assert job["spec"]["backoffLimit"] == 0
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    deployment = one(docs, "Deployment")["spec"]["template"]["spec"]
    (service,) = deployment["containers"]
    assert container["image"] == service["image"]
    assert container["args"] == ["check-config", "--config", CONFIG_PATH]
    # The same Secret files at the same paths, so check-config reads them too.
    secret_mounts = [m for m in service["volumeMounts"] if m["mountPath"].startswith(SECRET_DIR)]
    for mount in secret_mounts:
        assert mount in container["volumeMounts"], mount
        volume = next(v for v in deployment["volumes"] if v["name"] == mount["name"])
        assert volume in pod["volumes"]
    config_volume = next(v for v in pod["volumes"] if v["name"] == "config")
    assert config_volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["automountServiceAccountToken"] is False
    # The consumers' selectors (Service, PodDisruptionBudget) never pick the check.
    selector = one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= labels.items()
    assert not one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_the_check_hook_can_be_switched_off():
    assert hook_objects(merged(MINIMAL, {"configCheck": {"enabled": False}})) == []


def test_the_hook_config_with_the_secret_files_in_place_passes_the_service(tmp_path):
    binary = os.environ.get("PPS_BIN")
    if not binary:
        pytest.skip("PPS_BIN is not set: the service's own verdict needs a built binary")
    configmap = one(hook_objects(PRODUCTION), "ConfigMap")
    secrets = tmp_path / "secrets"
    make_secret_files(secrets)
    config_file = tmp_path / "config.toml"
    config_file.write_text(configmap["data"]["config.toml"].replace(SECRET_DIR, str(secrets)))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PPS_")}
    result = subprocess.run(
        [binary, "check-config", "--config", str(config_file)],
        capture_output=True, text=True, env=clean, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert 'start_from = "latest"' in result.stdout


# ----------------------------------------------------------- extraObjects


def test_extra_objects_are_rendered_with_the_release():
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "{{ .Release.Name }}-egress"},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"]},
    }
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-note\ndata: {}\n"
    docs = objects(render(merged(MINIMAL, {"extraObjects": [policy, text]})))
    assert one(docs, "NetworkPolicy")["metadata"]["name"] == "pps-egress"
    assert any(d["metadata"]["name"] == "pps-note" for d in docs)
    assert FULLNAME in {d["metadata"]["name"] for d in docs}


# ------------------------------------------------------- values reference


def test_the_values_reference_is_generated_from_the_current_values_file():
    import sys

    from test_chart import ROOT

    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "values-reference"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    reference = (ROOT / "docs" / "values.md").read_text()
    for key in ["config.kafka.start_from", "config.rate_limit.daily_quota", "configCheck.enabled", "extraObjects"]:
        assert f"| `{key}` |" in reference, key
