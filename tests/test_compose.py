"""docker-compose.yml stays a valid stack with every service the platform needs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from colmena.config import Settings

ROOT = Path(__file__).parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
REQUIRED = {"rabbitmq", "postgres", "migrate", "ingress", "scheduler", "prometheus", "grafana"}


def test_stack_names_every_service_with_healthchecks() -> None:
    services = COMPOSE["services"]
    assert REQUIRED <= set(services)
    workers = {name for name in services if name.startswith("worker-")}
    assert {
        "worker-payments",
        "worker-licenses",
        "worker-stamping",
        "worker-rates",
        "worker-bots",
    } <= workers
    for name in ("postgres", "rabbitmq", "ingress", "prometheus", *workers):
        assert "healthcheck" in services[name], name
    assert (
        services["ingress"]["depends_on"]["migrate"]["condition"]
        == "service_completed_successfully"
    )
    assert services["ingress"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_no_secret_is_written_in_the_file() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert "change-me" not in text
    for service in COMPOSE["services"].values():
        for key, value in (service.get("environment") or {}).items():
            if any(word in key for word in ("PASSWORD", "PASS", "SECRET", "TOKEN")):
                assert value == "" or str(value).startswith("${"), key


def test_every_port_is_published_on_loopback_only() -> None:
    published = [
        (name, port)
        for name, service in COMPOSE["services"].items()
        for port in service.get("ports", [])
    ]
    assert published
    assert all(str(port).startswith("127.0.0.1:") for _name, port in published), published


def test_prometheus_scrapes_the_ingress_metrics_listener_which_is_not_published() -> None:
    port = Settings.model_fields["ingress_metrics_port"].default
    prometheus = yaml.safe_load((ROOT / "ops" / "prometheus" / "prometheus.yml").read_text())
    [job] = [job for job in prometheus["scrape_configs"] if job["job_name"] == "ingress"]
    assert job["dns_sd_configs"][0]["port"] == port
    ingress = COMPOSE["services"]["ingress"]
    assert str(port) in ingress["expose"]
    assert not any(str(port) in str(published) for published in ingress["ports"])
    assert f"127.0.0.1:{port}/" in ingress["healthcheck"]["test"][1]


def test_the_ingress_holds_no_key_that_opens_or_signs() -> None:
    environment = COMPOSE["services"]["ingress"]["environment"]
    for key in (
        "COLMENA_SECRET_KEYS",
        "COLMENA_KEY_SEAL_PRIVATE_KEY",
        "COLMENA_LICENSE_SIGNING_KEY",
    ):
        assert environment[key] == "", key
    assert environment["COLMENA_DATA_DIR"] == "/data"
    mounts = COMPOSE["services"]["ingress"].get("volumes", [])
    assert not any("docker.sock" in mount for mount in mounts)


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    binary = shutil.which("docker-compose")
    assert binary is not None, (
        "docker-compose is needed to validate the stack (.ci/run installs it)"
    )
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    result = subprocess.run(
        [binary, "config", "-q"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


LOCAL = yaml.safe_load((ROOT / "docker-compose.local.yml").read_text())
COLMENA_SERVICES = [
    name for name, service in COMPOSE["services"].items() if "ops/Dockerfile" in str(service)
]


def test_the_local_override_changes_only_where_images_come_from() -> None:
    """docker-compose.local.yml selects bases built from Debian's packages and cuts the
    networks off; what runs (commands, healthchecks, volumes, users) stays the project's."""
    allowed = {"image", "build", "profiles"}
    for name, service in LOCAL["services"].items():
        assert name in COMPOSE["services"], name
        assert set(service) <= allowed, (name, set(service) - allowed)
        if "build" in service:
            assert service["build"]["args"]["BASE_IMAGE"] == "colmena-local/debian:bookworm"
            assert service["build"]["network"] == "host"
            assert service["image"].startswith(("colmena-local/", "colmena:local"))
    assert set(COLMENA_SERVICES) <= set(LOCAL["services"])
    # Grafana alone has no Debian package: behind a profile, not started locally.
    assert LOCAL["services"]["grafana"] == {"profiles": ["grafana"]}
    assert set(LOCAL["networks"]) == {"default", *COMPOSE["networks"]}
    assert all(network["internal"] is True for network in LOCAL["networks"].values())


def test_colmena_runs_as_its_user_on_a_read_only_root() -> None:
    dockerfile = (ROOT / "ops" / "Dockerfile").read_text()
    assert "USER colmena" in dockerfile
    for package in ("libpango-1.0-0", "libpangoft2-1.0-0", "libharfbuzz-subset0"):
        assert package in dockerfile, package
    for name in COLMENA_SERVICES:
        service = COMPOSE["services"][name]
        assert service.get("read_only") is True, name
        assert "/tmp" in service["tmpfs"], name
        if name not in ("worker-bots", "scheduler"):  # these two drive the Docker engine
            assert "user" not in service, name


def test_docker_compose_accepts_the_file_with_the_local_override(tmp_path: Path) -> None:
    binary = shutil.which("docker-compose")
    assert binary is not None, "docker-compose is needed (.ci/run installs it)"
    for name in ("docker-compose.yml", "docker-compose.local.yml"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "ops" / "images", tmp_path / "ops" / "images")  # build contexts
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    result = subprocess.run(
        [binary, "-f", "docker-compose.yml", "-f", "docker-compose.local.yml", "config"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    merged = yaml.safe_load(result.stdout)
    assert merged["services"]["ingress"]["image"] == "colmena:local"
    assert merged["services"]["ingress"]["read_only"] is True
    assert merged["services"]["postgres"]["image"] == "colmena-local/postgres:15"
