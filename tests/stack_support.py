"""The compose stack of tests/test_stack.py: a copy of the project, its images, its containers.

The stack runs from a copy of the project in a temporary directory, because the compose file
reads `.env`, `./products` and `./secrets/csd` next to itself: the test writes its own there,
never into the working tree. Images are built with the project's compose file plus
docker-compose.local.yml only (bases from Debian's packages, ops/images/debian-base).

`python -m tests.stack_support prebuild STATUS_FILE` builds the same images ahead of the test
(`.ci/run` starts it in the background), then writes its exit status and log to STATUS_FILE;
the test waits for that file before it builds again, from the layers the prebuild left.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).parent.parent
COMPOSE_FILES = ("docker-compose.yml", "docker-compose.local.yml")
PROJECT_FILES = ("pyproject.toml", "README.md", ".dockerignore", ".env.example", *COMPOSE_FILES)
PROJECT_DIRS = ("colmena", "ops")
# The CA bundle pip trusts on this machine: its way to PyPI may present its own certificate,
# which Debian's bundle inside the image does not know (ops/Dockerfile, build-ca.pem).
HOST_CA_BUNDLE = Path(os.environ.get("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt"))
COLMENA_IMAGE = "colmena:local"
PREBUILD_ENV = "COLMENA_STACK_PREBUILD"


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 1.0) -> Any:
    """`check()`'s first truthy answer, polled until `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        if answer:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def run(
    args: Sequence[str | Path], *, cwd: Path | None = None, timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} exited {result.returncode}\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


def copy_project(destination: Path) -> Path:
    """What the compose file and the image builds read, copied into `destination`."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in PROJECT_FILES:
        shutil.copy2(ROOT / name, destination / name)
    for name in PROJECT_DIRS:
        shutil.copytree(ROOT / name, destination / name, ignore=ignore)
    if HOST_CA_BUNDLE.is_file():
        shutil.copy(HOST_CA_BUNDLE, destination / "build-ca.pem")
    return destination


def build_images(project: Path) -> dict[str, float]:
    """The local Debian base (unless up to date), then every image of the stack; seconds each."""
    timings = {}
    started = time.monotonic()
    run([project / "ops" / "images" / "debian-base"], timeout=900)
    timings["debian-base"] = time.monotonic() - started
    started = time.monotonic()
    compose(project, "colmena-stack-build", "build", timeout=1800)
    timings["compose build"] = time.monotonic() - started
    return timings


def compose(
    project: Path, name: str, *args: str, timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    files = [arg for file in COMPOSE_FILES for arg in ("-f", str(project / file))]
    return run(
        ["docker-compose", "-p", name, *files, *args], cwd=project, timeout=timeout, check=check
    )


def wait_for_prebuild(timeout: float) -> None:
    """When `.ci/run` started a prebuild, wait for it, and fail with its log if it failed."""
    status_file = os.environ.get(PREBUILD_ENV)
    if not status_file:
        return
    path = Path(status_file)
    wait_for("the image prebuild .ci/run started", path.is_file, timeout, every=2)
    status = json.loads(path.read_text())
    assert status["returncode"] == 0, f"the image prebuild failed:\n{status['log']}"


def prebuild(status_file: Path) -> int:
    """Build the stack's images now, so the stack test later only reuses their layers."""
    returncode, log = 0, ""
    with tempfile.TemporaryDirectory(prefix="colmena-prebuild-") as tmp:
        project = copy_project(Path(tmp))
        shutil.copy(project / ".env.example", project / ".env")
        try:
            log = json.dumps(build_images(project))
        except (AssertionError, subprocess.TimeoutExpired) as exc:
            returncode, log = 1, str(exc)
    partial = status_file.with_suffix(".partial")
    partial.write_text(json.dumps({"returncode": returncode, "log": log}))
    partial.rename(status_file)
    return returncode


@dataclass
class Stack:
    """One run of the stack under a unique compose project name, with its helper containers."""

    project: Path
    name: str = field(default_factory=lambda: f"colmena-stack-{secrets.token_hex(4)}")

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return compose(self.project, self.name, *args, timeout=timeout)

    @property
    def network(self) -> str:
        return f"{self.name}_default"

    def up(self, *args: str) -> None:
        """Create the networks cut off from the outside, start the helpers, then the stack.

        The networks are made here, as compose would (its labels, so it adopts and later
        removes them), because `docker-compose up --no-start` waits on healthchecks that never
        run, and the networks must be sealed before any container starts."""
        config = yaml.safe_load(self.compose("config").stdout)
        for key, network in config["networks"].items():
            assert network.get("internal") is True, f"network {key} is not internal"
            name = f"{self.name}_{key}"
            exists = run(["docker", "network", "inspect", name], check=False).returncode == 0
            if not exists:
                run(
                    [
                        "docker", "network", "create", "--internal",
                        "--label", f"com.docker.compose.project={self.name}",
                        "--label", f"com.docker.compose.network={key}",
                        "--label", "com.docker.compose.version=1.29.2",
                        name,
                    ]
                )  # fmt: skip
            self.seal(name)
        self.start_helpers()
        self.compose("up", "-d", *args)

    def seal(self, network: str) -> None:
        """No packet from the stack is routed off the machine: `internal: true` keeps Docker's
        DNS from resolving outside names, but dockerd runs with --iptables=false, so the
        isolation rules it would add are missing. Turning off forwarding for what arrives on
        the network's bridge does their job (the host still reaches the containers)."""
        network_id = run(["docker", "network", "inspect", "-f", "{{.Id}}", network]).stdout
        forwarding = Path(f"/proc/sys/net/ipv4/conf/br-{network_id.strip()[:12]}/forwarding")
        forwarding.write_text("0\n")
        assert forwarding.read_text().strip() == "0", forwarding

    def start_helpers(self) -> None:
        """The outside world the stack talks to, on its network: an SMTP sink that prints every
        message (Python 3.11's smtpd) and colmena's PAC sandbox in SW Sapien's format."""
        helpers = {
            "smtp": ["-m", "smtpd", "-n", "-c", "DebuggingServer", "0.0.0.0:1025"],
            "pac": [
                "-c",
                "from aiohttp import web; from colmena.sandbox.pac import pac_app; "
                "web.run_app(pac_app(), host='0.0.0.0', port=8090)",
            ],
        }
        for alias, command in helpers.items():
            run(
                [
                    "docker", "run", "-d", "--name", f"{self.name}-{alias}",
                    "--network", self.network, "--network-alias", alias,
                    "--read-only", "--tmpfs", "/tmp", "--user", "10001",
                    "--label", f"colmena.stack-test={self.name}",
                    "--entrypoint", "python3", COLMENA_IMAGE, *command,
                ]
            )  # fmt: skip

    def stop_helpers(self) -> None:
        for alias in ("smtp", "pac"):
            run(["docker", "rm", "-f", f"{self.name}-{alias}"], check=False)

    def down(self, *args: str) -> None:
        self.stop_helpers()
        self.compose("down", "--remove-orphans", *args, timeout=300)

    def containers(self, service: str | None = None) -> list[dict[str, Any]]:
        """`docker inspect` of the project's containers (of one service), stopped ones included."""
        labels = ["--filter", f"label=com.docker.compose.project={self.name}"]
        if service:
            labels += ["--filter", f"label=com.docker.compose.service={service}"]
        ids = run(["docker", "ps", "-aq", *labels]).stdout.split()
        if not ids:
            return []
        return json.loads(run(["docker", "inspect", *ids]).stdout)

    def all_healthy(self) -> bool:
        """Every container with a healthcheck healthy, every one-shot exited 0, none restarting."""
        found = self.containers()
        for container in found:
            state = container["State"]
            if container["Config"]["Labels"]["com.docker.compose.service"] == "migrate":
                if state["Status"] == "exited":
                    assert state["ExitCode"] == 0, "migrate failed"
                    continue
                return False
            if state["Status"] != "running":
                return False
            health = state.get("Health")
            if health is None or health["Status"] != "healthy":
                return False
        return bool(found)

    def unhealthy_report(self) -> str:
        lines = []
        for container in self.containers():
            state = container["State"]
            health = (state.get("Health") or {}).get("Status", "-")
            lines.append(f"{container['Name']}: {state['Status']} health={health}")
            service = container["Config"]["Labels"]["com.docker.compose.service"]
            if health != "healthy" or state["Status"] != "running" or service == "ingress":
                logs = run(["docker", "logs", "--tail", "15", container["Id"]], check=False)
                lines.append((logs.stdout + logs.stderr).rstrip())
        return "\n".join(lines)

    @property
    def ingress_address(self) -> str:
        """Where the host reaches an ingress replica: its address on the stack's network
        (ports are not published on an internal network)."""
        [container, *_] = self.containers("ingress")
        return str(container["NetworkSettings"]["Networks"][self.network]["IPAddress"])

    def sql(self, query: str) -> str:
        result = self.compose(
            "exec", "-T", "postgres", "psql", "-U", "colmena", "-d", "colmena", "-tAc", query
        )
        return result.stdout.strip()

    def count(self, query: str) -> int:
        return int(self.sql(query) or 0)

    def logs(self, container: str) -> str:
        result = run(["docker", "logs", container])
        return result.stdout + result.stderr

    def smtp_logs(self) -> str:
        """Every message the SMTP sink received, as it printed them."""
        return self.logs(f"{self.name}-smtp")

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        """The status and body of a POST; an error status is an answer too."""
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()


def main(argv: Sequence[str]) -> int:
    if len(argv) != 2 or argv[0] != "prebuild":
        print("usage: python -m tests.stack_support prebuild STATUS_FILE", file=sys.stderr)
        return 2
    return prebuild(Path(argv[1]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
