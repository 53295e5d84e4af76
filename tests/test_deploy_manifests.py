"""deploy/: the three-host compose roles, their Prometheus scrape config and the Kubernetes
manifests pass the tools that read them, and name only what colmena has.

No cluster runs here: the manifests are validated, not applied. Core kinds are checked with
kubernetes-validate against the Kubernetes API's own schemas (strict: unknown fields refused);
KEDA's and prometheus-operator's kinds against the openAPIV3Schema of their official CRDs
(tests/fixtures/crds, made strict the same way). Then the invariants a schema cannot see: probes
and ServiceMonitors reach ports and routes the processes serve, KEDA watches the queues the
workers consume, every COLMENA_* variable is a setting, secrets come from Secrets only.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from dramatiq.brokers.stub import StubBroker
from pydantic import SecretStr

from colmena.cli import core, serving
from colmena.config import Settings, load_settings
from colmena.http.app import create_app
from colmena.http.health import metrics_app
from colmena.runtime.publisher import BrokerPublisher
from colmena.runtime.queues import DOMAIN_QUEUES, queue_name
from colmena.runtime.resources import Resources
from tests.test_ops_files import promtool

ROOT = Path(__file__).parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
COMPOSE = DEPLOY / "compose"
CRDS = Path(__file__).parent / "fixtures" / "crds"
KUBERNETES_VERSION = "1.33.0"
PREFIX = "COLMENA_"
# The queue group whose actors drive a Docker engine: not run in Kubernetes (docs say where).
DOCKER_GROUP = "bots"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


KUSTOMIZATION = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
MANIFESTS = [doc for name in KUSTOMIZATION["resources"] for doc in _documents(KUBERNETES / name)]


def _kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in MANIFESTS if doc["kind"] == kind]


def _named(kind: str, name: str) -> dict[str, Any]:
    [doc] = [doc for doc in _kind(kind) if doc["metadata"]["name"] == name]
    return doc


def _pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in _kind("Deployment") + _kind("Job"):
        yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def _containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, spec in _pod_specs():
        for container in spec["containers"]:
            yield name, container


CONFIG = _named("ConfigMap", "colmena-config")["data"]


# --- schemas -------------------------------------------------------------------------------


def _strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever it lists the fields (as the API server's
    strict field validation does), so a misspelt field fails instead of being pruned."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in strict
        and "additionalProperties" not in strict
        and not strict.get("x-kubernetes-preserve-unknown-fields")
    ):
        strict["additionalProperties"] = False
    return strict


def _crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    validators: dict[tuple[str, str], jsonschema.protocols.Validator] = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        schema = _strict(crd["openAPIV3Schema"])
        validators[(f"{crd['group']}/{crd['version']}", crd["kind"])] = jsonschema.Draft7Validator(
            schema
        )
    return validators


CRD_VALIDATORS = _crd_validators()


def validation_errors(doc: dict[str, Any]) -> list[str]:
    """Why `doc` is invalid for its kind's schema (empty when valid)."""
    validator = CRD_VALIDATORS.get((doc["apiVersion"], doc["kind"]))
    if validator is not None:
        return [
            f"{'.'.join(map(str, error.absolute_path))}: {error.message}"
            for error in validator.iter_errors(doc)
        ]
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'.'.join(map(str, exc.path))}: {exc.message}"]
    return []


@pytest.mark.parametrize(
    "doc", MANIFESTS, ids=[f"{doc['kind']}/{doc['metadata']['name']}" for doc in MANIFESTS]
)
def test_every_manifest_is_valid_for_its_schema(doc: dict[str, Any]) -> None:
    assert validation_errors(doc) == []


def test_the_validation_refuses_a_misspelt_field() -> None:
    scaled = copy.deepcopy(_kind("ScaledObject")[0])
    scaled["spec"]["minReplicas"] = scaled["spec"].pop("minReplicaCount")
    assert any("minReplicas" in error for error in validation_errors(scaled))
    monitor = copy.deepcopy(_kind("ServiceMonitor")[0])
    monitor["spec"]["endpoints"][0]["paht"] = "/metrics"
    assert any("paht" in error for error in validation_errors(monitor))
    deployment = copy.deepcopy(_kind("Deployment")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    assert validation_errors(deployment)


def test_kustomization_lists_every_manifest_and_the_crds_cover_every_custom_kind() -> None:
    on_disk = {path.name for path in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(KUSTOMIZATION["resources"]) == sorted(on_disk)
    custom = {(doc["apiVersion"], doc["kind"]) for doc in MANIFESTS if "." in doc["apiVersion"]} - {
        ("apps/v1", "Deployment"),
        ("batch/v1", "Job"),
    }
    assert custom == set(CRD_VALIDATORS)
    assert not _kind("Secret"), "manifests reference Secrets, they never carry their values"


# --- what the processes are ----------------------------------------------------------------


def _setting(name: str) -> str:
    """The Settings field a COLMENA_* variable sets (AssertionError when there is none)."""
    assert name.startswith(PREFIX), name
    field = name.removeprefix(PREFIX).lower()
    assert field in Settings.model_fields, f"{name} is not a colmena setting"
    return field


def _literal_env(container: dict[str, Any]) -> dict[str, str]:
    env = dict(CONFIG) if container.get("envFrom") else {}
    env.update({item["name"]: item["value"] for item in container["env"] if "value" in item})
    return env


def _effective_port(container: dict[str, Any], field: str) -> int:
    """The port the process listens on: its variable if the manifest sets it, else the default."""
    value = _literal_env(container).get(PREFIX + field.upper())
    return int(value) if value is not None else int(Settings.model_fields[field].default)


def _command(container: dict[str, Any]) -> str:
    return str(container["args"][0])


def _queues(container: dict[str, Any]) -> list[str]:
    args = container["args"]
    return str(args[args.index("--queues") + 1]).split(",")


METRICS_FIELD = {
    "ingress": "ingress_metrics_port",
    "worker": "metrics_port",
    "scheduler": "scheduler_metrics_port",
}


def _container_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    [found] = [item for item in container["ports"] if item["name"] == port]
    return int(found["containerPort"])


def _ingress_routes() -> tuple[set[str], set[str]]:
    """The paths `colmena ingress` serves on its public listener and on its metrics listener,
    read from the apps it builds (nothing is started)."""
    settings = load_settings(_env_file=None, database_url="postgresql://localhost/unused")
    resources = Resources(
        settings,
        database_url="postgresql://localhost/unused",
        publisher=BrokerPublisher(StubBroker(), ""),
    )
    app = create_app(settings, resources)
    public = {resource.canonical for resource in app.router.resources()}
    metrics = {resource.canonical for resource in metrics_app(app).router.resources()}
    return public, metrics


def test_every_container_runs_colmena_s_image_and_a_colmena_command() -> None:
    commands = {command.name for command in [*core.COMMANDS, *serving.COMMANDS]}
    for name, container in _containers():
        assert container["image"] == f"colmena:{VERSION}", name
        assert _command(container) in commands, name


def test_probes_reach_the_routes_and_ports_each_process_serves() -> None:
    public_routes, metrics_routes = _ingress_routes()
    for name, container in _containers():
        command = _command(container)
        if command == "migrate":
            assert "readinessProbe" not in container and "livenessProbe" not in container
            continue
        metrics = _effective_port(container, METRICS_FIELD[command])
        assert _container_port(container, "metrics") == metrics, name
        probes = [container["readinessProbe"], container["livenessProbe"]]
        ports = {_container_port(container, probe["httpGet"]["port"]) for probe in probes}
        if command == "ingress":
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert {"/readyz", "/healthz"} <= public_routes
            assert "/metrics" in metrics_routes and "/metrics" not in public_routes
            assert ports == {_effective_port(container, "http_port")}, name
        else:
            # Dramatiq's and prometheus-client's exposition servers answer on any path.
            assert ports == {metrics}, name


def test_one_worker_deployment_per_queue_group_the_docker_one_aside() -> None:
    groups = [
        _queues(container) for _name, container in _containers() if _command(container) == "worker"
    ]
    assert all(len(queues) == 1 for queues in groups), groups
    consumed = [queues[0] for queues in groups]
    assert sorted(consumed) == sorted(set(DOMAIN_QUEUES) - {DOCKER_GROUP})
    schedulers = [
        doc for doc in _kind("Deployment") if doc["metadata"]["name"].endswith("scheduler")
    ]
    assert [doc["spec"]["replicas"] for doc in schedulers] == [1]


def test_keda_scales_each_worker_on_the_queue_it_consumes() -> None:
    prefix = CONFIG.get("COLMENA_QUEUE_PREFIX", "")
    auths = {doc["metadata"]["name"] for doc in _kind("TriggerAuthentication")}
    targets = []
    for scaled in _kind("ScaledObject"):
        target = _named("Deployment", scaled["spec"]["scaleTargetRef"]["name"])
        assert "replicas" not in target["spec"], "KEDA owns the replica count"
        [container] = target["spec"]["template"]["spec"]["containers"]
        [trigger] = scaled["spec"]["triggers"]
        assert trigger["type"] == "rabbitmq"
        assert trigger["metadata"]["mode"] == "QueueLength"
        [group] = _queues(container)
        assert trigger["metadata"]["queueName"] == queue_name(prefix, group)
        assert trigger["authenticationRef"]["name"] in auths
        assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
        targets.append(target["metadata"]["name"])
    workers = [
        doc["metadata"]["name"]
        for doc in _kind("Deployment")
        if _command(doc["spec"]["template"]["spec"]["containers"][0]) == "worker"
    ]
    assert sorted(targets) == sorted(workers)


def _secret_fields() -> set[str]:
    def secret(annotation: Any) -> bool:
        return annotation is SecretStr or SecretStr in getattr(annotation, "__args__", ())

    return {name for name, field in Settings.model_fields.items() if secret(field.annotation)}


def test_every_variable_is_a_setting_and_secrets_come_from_secrets_only() -> None:
    secrets = _secret_fields()
    assert {"database_url", "broker_url", "redis_url"} <= secrets
    for key in CONFIG:
        assert _setting(key) not in secrets, f"{key} is a secret: not in a ConfigMap"
    for name, container in _containers():
        for item in container["env"]:
            field = _setting(item["name"])
            if field in secrets:
                assert "secretKeyRef" in item.get("valueFrom", {}), (name, item["name"])
        for source in container.get("envFrom", []):
            assert set(source) == {"configMapRef"}, name


def test_every_pod_runs_unprivileged_on_a_read_only_root_with_bounded_resources() -> None:
    for name, spec in _pod_specs():
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] > 0, name
        scratch = {volume["name"] for volume in spec["volumes"] if "emptyDir" in volume}
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) == {"cpu", "memory"}, name
            writable = {
                mount["mountPath"]
                for mount in container["volumeMounts"]
                if mount["name"] in scratch
            }
            data_dir = _literal_env(container).get("COLMENA_DATA_DIR", "/data")
            assert {"/tmp", data_dir} <= writable, name


def test_service_monitors_scrape_every_process_on_its_metrics_port() -> None:
    pods = {doc["metadata"]["name"]: doc["spec"]["template"] for doc in _kind("Deployment")}
    scraped: set[str] = set()
    for monitor in _kind("ServiceMonitor"):
        wanted = monitor["spec"]["selector"]["matchLabels"]
        services = [
            service
            for service in _kind("Service")
            if wanted.items() <= service["metadata"]["labels"].items()
        ]
        assert services, monitor["metadata"]["name"]
        for service in services:
            job = service["metadata"]["labels"][monitor["spec"]["jobLabel"]]
            for endpoint in monitor["spec"]["endpoints"]:
                [port] = [
                    port for port in service["spec"]["ports"] if port["name"] == endpoint["port"]
                ]
                selected = [
                    template
                    for template in pods.values()
                    if service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
                ]
                assert selected, service["metadata"]["name"]
                for template in selected:
                    [container] = template["spec"]["containers"]
                    assert METRICS_FIELD[_command(container)] == METRICS_FIELD[job]
                    assert _container_port(container, port["targetPort"]) == _effective_port(
                        container, METRICS_FIELD[job]
                    )
                    scraped.add(_command(container))
    assert scraped == set(METRICS_FIELD)


# --- the three-host compose roles ----------------------------------------------------------

ROLE_FILES = sorted(COMPOSE.glob("*.yml"))
# Which VMs run each role (docs/deploy-three-hosts.md).
ROLE_HOSTS = {
    "data.yml": ("host1", "host2", "host3"),
    "app.yml": ("host1", "host2", "host3"),
    "control.yml": ("host1",),
    "lb.yml": ("host1",),
}


def _compose_binary() -> list[str]:
    """Docker's compose plugin where it is installed, else the older docker-compose."""
    if shutil.which("docker") is not None:
        plugin = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, check=False, timeout=30
        )
        if plugin.returncode == 0:
            return ["docker", "compose"]
    binary = shutil.which("docker-compose")
    assert binary is not None, "docker compose or docker-compose is needed (.ci/run installs it)"
    return [binary]


@pytest.fixture(scope="module")
def deployment_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkout as on a VM: deploy/, .env from .env.example, host.env from its example."""
    root = tmp_path_factory.mktemp("vm")
    shutil.copytree(DEPLOY, root / "deploy")
    shutil.copy(ROOT / ".env.example", root / ".env")
    shutil.copy(COMPOSE / "host.env.example", root / "deploy" / "compose" / "host.env")
    return root


def test_every_role_has_its_hosts() -> None:
    assert sorted(path.name for path in ROLE_FILES) == sorted(ROLE_HOSTS)


@pytest.mark.parametrize("role", ROLE_FILES, ids=[path.name for path in ROLE_FILES])
def test_docker_compose_accepts_each_role(role: Path, deployment_tree: Path) -> None:
    result = subprocess.run(
        [
            *_compose_binary(),
            "--env-file",
            "deploy/compose/host.env",
            "-f",
            f"deploy/compose/{role.name}",
            "config",
            "-q",
        ],
        cwd=deployment_tree,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def _colmena_services() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path in ROLE_FILES:
        for name, service in yaml.safe_load(path.read_text())["services"].items():
            if service.get("image", "").startswith("colmena:"):
                yield path.name, name, service


def _service_ports(service: dict[str, Any]) -> dict[str, int]:
    """What a colmena compose service listens on: its settings, or their defaults."""
    env = service.get("environment", {})
    command = service["command"][0]

    def port(field: str) -> int:
        value = env.get(PREFIX + field.upper())
        return int(value) if value is not None else int(Settings.model_fields[field].default)

    ports = {"metrics": port(METRICS_FIELD[command])}
    if command == "ingress":
        ports["http"] = port("http_port")
    return ports


def test_prometheus_scrapes_every_colmena_process_of_every_vm() -> None:
    expected = set()
    listening: dict[str, list[int]] = {}
    for role, name, service in _colmena_services():
        assert service["network_mode"] == "host", name
        for key in service.get("environment", {}):
            _setting(key)
        job = service["command"][0]
        ports = _service_ports(service)
        for host in ROLE_HOSTS[role]:
            label = name if job == "worker" else None
            expected.add((job, label, f"{host}:{ports['metrics']}"))
            listening.setdefault(host, []).extend(ports.values())
    for host, taken in listening.items():
        assert len(taken) == len(set(taken)), f"two processes share a port on {host}: {taken}"
    config = yaml.safe_load((DEPLOY / "prometheus" / "three-hosts.yml").read_text())
    scraped = {
        (job["job_name"], group.get("labels", {}).get("service"), target)
        for job in config["scrape_configs"]
        if job["job_name"] != "prometheus"
        for group in job["static_configs"]
        for target in group["targets"]
    }
    assert scraped == expected


def test_promtool_accepts_the_three_host_config_as_control_yml_mounts_it(tmp_path: Path) -> None:
    prometheus = yaml.safe_load((COMPOSE / "control.yml").read_text())["services"]["prometheus"]
    config_flag = [arg for arg in prometheus["command"] if arg.startswith("--config.file=")]
    [config_path] = [arg.split("=", 1)[1] for arg in config_flag]
    for volume in prometheus["volumes"]:
        source, target, *_mode = volume.split(":")
        if not source.startswith("."):
            continue  # a named volume: the TSDB
        copy_to = tmp_path / target.lstrip("/")
        copy_to.parent.mkdir(parents=True, exist_ok=True)
        origin = (COMPOSE / source).resolve()
        if origin.is_dir():
            shutil.copytree(origin, copy_to)
        else:
            shutil.copy(origin, copy_to)
    result = promtool("check", "config", str(tmp_path / config_path.lstrip("/")))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_load_balancer_checks_readyz_on_every_ingress() -> None:
    lines = [line.split() for line in (DEPLOY / "haproxy" / "haproxy.cfg").read_text().splitlines()]
    app = yaml.safe_load((COMPOSE / "app.yml").read_text())["services"]["ingress"]
    http_port = _service_ports(app)["http"]
    servers = [line[2] for line in lines if line[:1] == ["server"]]
    assert servers == [f"{host}:{http_port}" for host in ROLE_HOSTS["app.yml"]]
    assert ["http-check", "send", "meth", "GET", "uri", "/readyz"] in lines
    assert ["http-check", "expect", "status", "200"] in lines
    assert "/readyz" in _ingress_routes()[0]


def test_every_setting_the_deployment_guide_names_exists() -> None:
    guide = (ROOT / "docs" / "deploy-three-hosts.md").read_text()
    named = set(re.findall(r"\bCOLMENA_[A-Z0-9_]+", guide))
    assert {"COLMENA_DATABASE_URL", "COLMENA_BROKER_URL", "COLMENA_QUORUM_QUEUES"} <= named
    for name in named:
        _setting(name)
