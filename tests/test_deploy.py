"""The deployment files in deploy/ and config/, checked as far as this
machine allows (it has no Docker engine and no Kubernetes cluster):
every shipped broker configuration loads with the broker's real loader,
promtool accepts the Prometheus config and rules (and their unit tests
pass), every manifest parses with the kinds expected, and the dashboard
and rules use only catalogued metrics. What cannot run here (building the
image, `docker compose up`, `kubectl apply -k`) is listed in
docs/operations.md."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from silt_harness import REPO_ROOT, metric_catalogue, require_tool, run_silt

pytestmark = pytest.mark.silt_only(reason="Silt's deployment files and config loader")

DEPLOY = REPO_ROOT / "deploy"
#: Metric-like names in PromQL that are not Silt's.
FOREIGN_METRICS = {"up"}


def shipped_configs() -> list[Path]:
    return sorted([*REPO_ROOT.glob("config/*.toml"), *DEPLOY.rglob("*.toml")])


def load_yaml_documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def silt_metrics_in(promql: str) -> set[str]:
    names = set(re.findall(r"\b(silt_[a-z0-9_]+)", promql))
    catalogue = metric_catalogue()
    out = set()
    for name in names:
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        out.add(base if base != name and catalogue.get(base, {}).get("type") == "histogram" else name)
    return out


# --- broker configuration -------------------------------------------------------------

def test_there_are_shipped_configs():
    names = {str(p.relative_to(REPO_ROOT)) for p in shipped_configs()}
    assert {"config/silt.toml", "deploy/compose/silt.toml", "deploy/kubernetes/silt.toml"} <= names, names


@pytest.mark.parametrize("path", shipped_configs(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_shipped_config_loads_with_the_broker_loader(silt_bin, path):
    result = run_silt(silt_bin, "config", "check", "--config", str(path))
    assert result.returncode == 0, f"{path}: {result.stderr.decode()}"
    assert b"valid" in result.stdout


def test_config_check_names_the_bad_key(silt_bin, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[log]\nsegment_bytes = 10\n")
    result = run_silt(silt_bin, "config", "check", "--config", str(bad))
    assert result.returncode == 2
    assert "log.segment_bytes" in result.stderr.decode() and "10" in result.stderr.decode()
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[metrics]\nper_partitions = true\n")
    result = run_silt(silt_bin, "config", "check", "--config", str(unknown))
    assert result.returncode == 2 and "per_partitions" in result.stderr.decode(), result.stderr


# --- Prometheus -------------------------------------------------------------------------

def test_promtool_accepts_the_rules_and_their_unit_tests():
    promtool = require_tool("promtool")
    rules = DEPLOY / "prometheus" / "rules"
    for args in (["check", "rules", *map(str, sorted(rules.glob("silt.yml")))],
                 ["test", "rules", "silt_test.yml"]):
        result = subprocess.run([promtool, *args], cwd=rules, capture_output=True, timeout=120)
        assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout.decode()}{result.stderr.decode()}"


def test_promtool_accepts_the_prometheus_config(tmp_path):
    promtool = require_tool("promtool")
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    # The config names the rules by their path in the container; point it at the repository's.
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    config["rule_files"] = [str(DEPLOY / "prometheus" / "rules" / "silt.yml")]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config))
    result = subprocess.run([promtool, "check", "config", str(local)], capture_output=True, timeout=120)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert jobs["silt"]["static_configs"][0]["targets"] == ["silt:9644"]


def test_alert_rules_use_catalogued_metrics_and_cover_the_issue():
    catalogue = metric_catalogue()
    rules = [r for g in yaml.safe_load((DEPLOY / "prometheus" / "rules" / "silt.yml").read_text())["groups"]
             for r in g["rules"]]
    for rule in rules:
        for name in silt_metrics_in(rule["expr"]):
            assert name in catalogue, f"alert {rule['alert']} uses {name}, which docs/metrics.md does not list"
    alerts = {r["alert"] for r in rules}
    assert {"SiltBrokerDown", "SiltDiskAlmostFull", "SiltDiskFillingUp", "SiltConsumerLagHigh",
            "SiltArchiveLagHigh", "SiltArchiveUploadsFailing", "SiltArchiveUploadErrors",
            "SiltUnderReplicatedPartitions", "SiltOfflinePartitions", "SiltNoActiveController",
            "SiltIsrShrinking"} <= alerts, alerts


# --- Grafana ------------------------------------------------------------------------------

def test_dashboard_parses_and_uses_only_catalogued_metrics():
    catalogue = metric_catalogue()
    dashboards = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
    assert dashboards, "no Grafana dashboard"
    for path in dashboards:
        dashboard = json.loads(path.read_text())
        exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
        exprs += [v.get("definition", "") for v in dashboard["templating"]["list"]]
        assert len(exprs) > 20, f"{path.name}: only {len(exprs)} queries"
        used = set().union(*(silt_metrics_in(e) for e in exprs))
        unknown = used - set(catalogue)
        assert not unknown, f"{path.name} uses metrics that docs/metrics.md does not list: {sorted(unknown)}"
        # Broker, topics, groups and tiering each have panels.
        rows = {p["title"] for p in dashboard["panels"] if p["type"] == "row"}
        assert {"Broker", "Topics", "Consumer groups", "Tiering"} <= rows, rows
        assert {"silt_tiering_lag_bytes", "silt_consumer_group_lag", "silt_requests_total"} <= used


def test_grafana_provisioning_parses():
    datasources = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "silt.yml").read_text())
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


# --- compose ------------------------------------------------------------------------------

def test_compose_wires_silt_to_the_store_prometheus_and_grafana():
    compose_dir = DEPLOY / "compose"
    compose = yaml.safe_load((compose_dir / "compose.yaml").read_text())
    services = compose["services"]
    assert {"silt", "minio", "minio-init", "prometheus", "grafana"} <= set(services), set(services)
    silt = services["silt"]
    env = silt["environment"]
    assert env["SILT_TIERING__ARCHIVE_URL"] == "s3://silt-archive/"
    assert env["SILT_TIERING__S3_ENDPOINT"] == "http://minio:9000"
    assert str(env["SILT_TIERING__S3_ALLOW_HTTP"]).lower() == "true"
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"} <= set(env)
    assert silt["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert "silt-archive" in " ".join(services["minio-init"]["entrypoint"])
    build = silt["build"]
    assert (compose_dir / build["context"] / build["dockerfile"]).is_file()
    # Every file a service mounts from the repository exists.
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (compose_dir / source).exists(), f"{name} mounts {source}, which does not exist"


def test_cluster_compose_gives_each_node_its_id_and_the_same_voters():
    compose_dir = DEPLOY / "compose"
    services = yaml.safe_load((compose_dir / "compose.cluster.yaml").read_text())["services"]
    nodes = {name: s for name, s in services.items() if name.startswith("silt-")}
    assert len(nodes) == 3, set(services)
    voters = {s["environment"]["SILT_CLUSTER__VOTERS"] for s in nodes.values()}
    assert len(voters) == 1, f"every node needs the same voter list: {voters}"
    listen_port = {s["environment"]["SILT_CLUSTER__LISTEN"].rsplit(":", 1)[1] for s in nodes.values()}
    parsed = {}
    for voter in voters.pop().split(","):
        node_id, addr = voter.split("@")
        host, port = addr.rsplit(":", 1)
        parsed[int(node_id)] = (host, port)
        assert host in nodes, f"voter {voter} names no service"
        assert {port} == listen_port, f"voter {voter} is not at the nodes' cluster.listen port"
    ids = {int(s["environment"]["SILT_NODE__ID"]): name for name, s in nodes.items()}
    assert set(ids) == set(parsed), "each node's id must be a voter id"
    for node_id, name in ids.items():
        env = nodes[name]["environment"]
        assert parsed[node_id][0] == name, f"voter {node_id} must be the service with SILT_NODE__ID={node_id}"
        assert env["SILT_CLUSTER__ADVERTISED"] == f"{name}:{parsed[node_id][1]}"
        assert env["SILT_KAFKA__ADVERTISED_ADDRESS"].split(":")[0] == name, "peers fetch from the advertised Kafka address"
    data_volumes = [v for s in nodes.values() for v in s["volumes"] if v.endswith(":/var/lib/silt")]
    assert len(set(data_volumes)) == 3, f"each node needs its own data volume: {data_volumes}"
    for name, service in nodes.items():
        for volume in service["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (compose_dir / source).exists(), f"{name} mounts {source}, which does not exist"


# --- Kubernetes ---------------------------------------------------------------------------

def test_kustomization_resources_parse_with_the_expected_kinds(silt_bin):
    k8s = DEPLOY / "kubernetes"
    kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    kinds: dict[str, list[dict]] = {}
    for resource in kustomization["resources"]:
        for doc in load_yaml_documents(k8s / resource):
            kinds.setdefault(doc["kind"], []).append(doc)
    assert set(kinds) == {"Namespace", "Service", "StatefulSet", "PodDisruptionBudget", "Secret"}, set(kinds)
    # Every YAML file in the directory is used.
    assert {p.name for p in k8s.glob("*.yaml")} == set(kustomization["resources"]) | {"kustomization.yaml"}

    headless = next(s for s in kinds["Service"] if s["spec"].get("clusterIP") == "None")
    (sts,) = kinds["StatefulSet"]
    assert sts["spec"]["serviceName"] == headless["metadata"]["name"]
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] in {m["name"] for m in container["volumeMounts"]}
    assert {e["secretRef"]["name"] for e in container["envFrom"]} == {kinds["Secret"][0]["metadata"]["name"]}
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"} <= set(kinds["Secret"][0]["stringData"])
    assert "SILT_TIERING__ARCHIVE_URL" in {e["name"] for e in container["env"]}
    # A voter per replica, named by pod ordinal under the headless Service; node id = ordinal.
    env = {e["name"]: e for e in container["env"]}
    assert env["SILT_NODE__ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"
    voters = env["SILT_CLUSTER__VOTERS"]["value"].split(",")
    assert len(voters) == sts["spec"]["replicas"], voters
    cluster_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "cluster")
    assert "cluster" in {p["name"] for p in headless["spec"]["ports"]}
    for ordinal, voter in enumerate(voters):
        assert voter == (f"{ordinal}@{sts['metadata']['name']}-{ordinal}.{headless['metadata']['name']}"
                         f".$(POD_NAMESPACE).svc.cluster.local:{cluster_port}"), voter
    assert env["SILT_CLUSTER__LISTEN"]["value"].endswith(f":{cluster_port}")
    (pdb,) = kinds["PodDisruptionBudget"]
    assert pdb["spec"]["selector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]

    # The ConfigMap is generated from files: each loads with the broker's loader.
    (generator,) = kustomization["configMapGenerator"]
    mounted = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert mounted["config"]["configMap"]["name"] == generator["name"]
    for file in generator["files"]:
        result = run_silt(silt_bin, "config", "check", "--config", str(k8s / file))
        assert result.returncode == 0, result.stderr.decode()


# --- Dockerfile and systemd ------------------------------------------------------------------

def test_dockerfile_is_multi_stage_and_copies_what_exists():
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    assert len(stages) >= 2, stages
    assert stages[0][1] == "build" and not stages[-1][0].startswith("rust"), stages
    assert "COPY --from=build" in text
    for source in re.findall(r"^COPY\s+(?!--from)(.+?)\s+\S+$", text, re.M):
        for path in source.split():
            assert (REPO_ROOT / path).exists(), f"the Dockerfile copies {path}, which does not exist"
    assert re.search(r'^CMD \["broker"', text, re.M)


def test_systemd_unit_runs_the_broker_with_its_config():
    unit = (DEPLOY / "systemd" / "silt.service").read_text()
    assert re.search(r"^ExecStart=\S*silt broker --config /etc/silt/silt.toml$", unit, re.M)
    assert re.search(r"^KillSignal=SIGTERM$", unit, re.M)
