"""The deploy files (deploy/): they parse, their configurations load with the
server's own loader (with the environment overrides the files set), they run
real roles, their probes and health checks name real routes, the drain fits
in the supervisors' stop timeouts, and the load balancers pass WebSockets.

Nothing here runs Docker or a Kubernetes cluster (neither is available where
this was written): docs/operations.md says what was and was not run."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from presence_server.config import Config, load_config, parse_config
from presence_server.node import Node
from presence_server.roles import ROLES
from presence_server.secret_refs import is_reference, is_secret_key

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ROOT = DEPLOY.parent
K8S = DEPLOY / "k8s"
SYSTEMD = DEPLOY / "systemd"
CONFIG_PATH = "/etc/presence-server/presence.toml"


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def k8s_objects() -> list[dict[str, Any]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            out.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return out


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [o for o in k8s_objects() if o["kind"] == kind]


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def secret_data() -> dict[str, str]:
    (secret,) = [s for s in of_kind("Secret") if s["metadata"]["name"] == "presence-secrets"]
    data: dict[str, str] = secret["stringData"]
    return data


_SECRET_DIRS = tempfile.TemporaryDirectory(prefix="deploy-secrets-")
PLACEHOLDER = "placeholder-secret-value-0123456789"


def file_references(text: str) -> list[str]:
    """The files a config names by reference ({ file = "..." })."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if is_reference(value):
            found.extend([value["file"]] if "file" in value else [])
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(tomllib.loads(text))
    return found


def with_secret_files(text: str, directory: Path, values: dict[str, str] | None = None) -> Path:
    """The config written to ``directory`` with the secret files it names beside it,
    as every platform of deploy/ mounts them (values by file name, else a placeholder)."""
    path = directory / "presence.toml"
    path.write_text(text)
    for name in file_references(text):
        (directory / name).write_text((values or {}).get(name, PLACEHOLDER) + "\n")
    return path


def load_deploy_config(environ: dict[str, str]) -> Config:
    """deploy/presence.toml as compose and systemd run it: its secret files beside it."""
    directory = Path(tempfile.mkdtemp(dir=_SECRET_DIRS.name))
    return load_config(with_secret_files((DEPLOY / "presence.toml").read_text(), directory), environ=environ)


def roles_of(args: list[str]) -> tuple[str, ...]:
    assert "--roles" in args, args
    return tuple(args[args.index("--roles") + 1].split(","))


def config_of(args: list[str]) -> str:
    assert args[0] == "serve" and "--config" in args, args
    return args[args.index("--config") + 1]


async def app_routes(data_dir: Path) -> set[tuple[str, str]]:
    """(method, path) of every route a node serves, whatever its roles (the nodes
    are built, never started)."""
    routes = set()
    for roles in (("gateway",), ("signaling",), ("messaging",)):
        node = Node(parse_config({"engine": {"data_dir": str(data_dir)}}, environ={}), roles=roles)
        for route in node.app.router.routes():
            info = route.resource.get_info() if route.resource else {}
            routes.add((route.method, info.get("path") or info.get("formatter", "")))
        await node.http.close()
    return routes


# -- every file parses, every configuration loads ----------------------------------------------


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs and all(isinstance(d, dict) for d in docs)


def deploy_configs() -> Iterator[tuple[str, str]]:
    for path in sorted(DEPLOY.rglob("*.toml")):
        yield str(path.relative_to(DEPLOY)), path.read_text()
    yield "k8s/secret.yaml presence.toml", secret_data()["presence.toml"]


@pytest.mark.parametrize("name,text", list(deploy_configs()), ids=[n for n, _ in deploy_configs()])
def test_every_configuration_loads_with_the_servers_loader(name: str, text: str, tmp_path: Path) -> None:
    path = with_secret_files(text, tmp_path)
    config = load_config(path, environ={})
    assert config.accounts


def test_the_environment_the_deploy_files_set_is_accepted(tmp_path: Path) -> None:
    """Every PRESENCE_* variable the files set names a real key, with a valid value."""
    path = with_secret_files(secret_data()["presence.toml"], tmp_path, secret_data())
    (configmap,) = of_kind("ConfigMap")
    env = dict(configmap["data"])
    for deployment in of_kind("Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for var in container.get("env", []):
                key = var["valueFrom"]["secretKeyRef"]["key"]
                env[var["name"]] = secret_data()[key]
    config = load_config(path, environ=env)
    assert config.operator.username == "ops" and config.server.public_url == "https://presence.example.com"

    compose_env = compose()["x-presence"]["environment"]
    values = {"PRESENCE_OPERATOR_PASSWORD": "a-long-operator-password", "PRESENCE_PUBLIC_URL": "http://localhost:8080"}
    resolved = {k: re.sub(r"\$\{(\w+)[^}]*\}", lambda m: values[m.group(1)], str(v)) for k, v in compose_env.items()}
    config = load_deploy_config(environ=resolved)
    assert config.operator.password == "a-long-operator-password"

    systemd_env = {}
    for path in [*SYSTEMD.glob("*.env"), SYSTEMD / "secrets.env.example"]:
        for line in path.read_text().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.partition("=")
                systemd_env[key] = value
    systemd_env.pop("ROLES")
    load_deploy_config(environ=systemd_env)


# -- secrets by reference: the config files hold none, every platform mounts them --------------


def test_the_deploy_configs_hold_no_secret_and_every_platform_mounts_the_files_they_name() -> None:
    deploy_text = (DEPLOY / "presence.toml").read_text()
    k8s_text = secret_data()["presence.toml"]
    for text in (deploy_text, k8s_text):
        data = tomllib.loads(text)
        inline = [
            ".".join(map(str, path)) for path, value in _leaves(data)
            if is_secret_key(path) and path[:2] != ("engine", "url") and not is_reference(value)
        ]
        assert inline == [], f"secrets held inline: {inline}"
    names = file_references(deploy_text)
    assert names and sorted(names) == sorted(file_references(k8s_text))
    assert all("/" not in n for n in names)  # beside the config: systemd credentials are one flat directory
    config_dir = CONFIG_PATH.rsplit("/", 1)[0]
    # Docker Compose: a secret per file, mounted beside the config, from the environment.
    mounted = {s["target"]: s["source"] for s in compose()["x-presence"]["secrets"]}
    for name in names:
        source = mounted[f"{config_dir}/{name}"]
        assert set(compose()["secrets"][source]) & {"environment", "file"}
    # systemd: a credential per file, in the credentials directory beside presence.toml.
    unit = (SYSTEMD / "presence-server@.service").read_text()
    credentials = dict(re.findall(r"^LoadCredential=([^:]+):(.+)$", unit, re.M))
    assert set(names) <= set(credentials)
    # Kubernetes: a key of the Secret per file, mounted beside presence.toml in every pod.
    for deployment in of_kind("Deployment"):
        (volume,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "config"]
        paths = {i["path"]: i["key"] for i in volume["secret"]["items"]}
        for name in names:
            assert paths[name] in secret_data(), (deployment["metadata"]["name"], name)


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(value, dict) and not is_reference(value):
        for k, v in value.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, (*path, i))
    else:
        yield path, value


# -- roles and topology ----------------------------------------------------------------------------


def test_compose_runs_two_gateways_a_signaling_and_a_messaging_process_on_redis() -> None:
    services = compose()["services"]
    roles = {name: roles_of(s["command"]) for name, s in services.items() if "command" in s and s["command"][0] == "serve"}
    assert sorted(roles.values()) == sorted([("gateway",), ("gateway",), ("signaling",), ("messaging",)])
    assert all(set(r) <= set(ROLES) for r in roles.values())
    for name in roles:
        assert config_of(services[name]["command"]) == CONFIG_PATH
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    (secret,) = [s for s in compose()["x-presence"]["secrets"] if s["target"] == CONFIG_PATH]
    assert compose()["secrets"][secret["source"]]["file"] == "./presence.toml"
    assert "redis-server" in services["redis"]["command"] and "--appendonly" in services["redis"]["command"]
    config = load_deploy_config(environ={})
    assert config.engine.kind == "redis" and config.engine.url == "redis://redis:6379/0" and config.server.host == "0.0.0.0"


def test_k8s_deployments_run_valid_roles_with_the_mounted_config() -> None:
    deployments = {d["metadata"]["name"]: d for d in of_kind("Deployment")}
    assert set(deployments) == {"presence-gateway", "presence-signaling", "presence-messaging"}
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert roles_of(container["args"]) == (name.removeprefix("presence-"),)
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        (config_volume,) = [v for v in pod["volumes"] if v["name"] == "config"]
        (item,) = [i for i in config_volume["secret"]["items"] if i["key"] == "presence.toml"]
        assert f"{mounts['config']}/{item['path']}" == config_of(container["args"]) == CONFIG_PATH
        assert config_volume["secret"]["secretName"] == "presence-secrets"
        assert deployment["spec"]["selector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert mounts["data"] == parse_config({"engine": {"data_dir": "/var/lib/presence-server"}}, environ={}).engine.data_dir


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"}


def test_services_pdbs_and_the_ingress_select_what_exists() -> None:
    pods = [d["spec"]["template"] for d in of_kind("Deployment")] + [s["spec"]["template"] for s in of_kind("StatefulSet")]

    def selects(selector: dict[str, str]) -> list[dict[str, Any]]:
        return [p for p in pods if selector.items() <= p["metadata"]["labels"].items()]

    services = {s["metadata"]["name"]: s for s in of_kind("Service")}
    for service in services.values():
        chosen = selects(service["spec"]["selector"])
        assert chosen, service["metadata"]["name"]
        for port in service["spec"]["ports"]:
            for pod in chosen:
                names = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
                assert port["targetPort"] in names
    for deployment in of_kind("Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        pdbs = [p for p in of_kind("PodDisruptionBudget") if p["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(pdbs) == 1, deployment["metadata"]["name"]
        spec = pdbs[0]["spec"]
        assert spec.get("minAvailable", 1) >= 1 and spec.get("maxUnavailable", 1) < deployment["spec"]["replicas"]
    (ingress,) = of_kind("Ingress")
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            assert path["backend"]["service"]["name"] in services


# -- probes and health checks point at real routes ---------------------------------------------


async def test_probes_and_health_checks_name_real_routes(tmp_path: Path) -> None:
    routes = await app_routes(tmp_path)
    assert ("GET", "/readyz") in routes and ("GET", "/healthz") in routes
    for deployment in of_kind("Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"  # never tied to Redis
        assert container["readinessProbe"]["httpGet"]["port"] == container["livenessProbe"]["httpGet"]["port"] == "http"
        assert {p["name"]: p["containerPort"] for p in container["ports"]}["http"] == load_deploy_config(environ={}).server.port
    assert "/readyz" in " ".join(compose()["x-presence"]["healthcheck"]["test"])
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "http://127.0.0.1:8080/healthz" in dockerfile
    haproxy = (DEPLOY / "haproxy.cfg").read_text()
    for uri in re.findall(r"http-check send meth GET uri (\S+)", haproxy):
        assert ("GET", uri) in routes


def test_the_dockerfile_copies_what_exists_and_runs_the_cli() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            *sources, _ = shlex.split(line)[1:]
            for source in sources:
                assert (ROOT / source).exists(), source
    assert 'ENTRYPOINT ["presence-server"]' in dockerfile


# -- draining fits in the stop timeouts ---------------------------------------------------------


def drain_seconds(config: Config, roles: tuple[str, ...] = ("gateway",)) -> float:
    """How long a SIGTERM may take: a signaling process's calls first, up to
    drain_timeout; then connections, then HTTP handlers, each up to
    shutdown_grace (Node.stop), plus closing everything else."""
    calls = config.signaling.drain_timeout if "signaling" in roles else 0.0
    return calls + 2 * config.server.shutdown_grace


def test_termination_grace_covers_the_gateways_drain(tmp_path: Path) -> None:
    config = load_config(with_secret_files(secret_data()["presence.toml"], tmp_path), environ={})
    for deployment in of_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", ["sleep", "0"])
        assert pre_stop[0] == "sleep"
        roles = roles_of(container["args"])
        assert pod["terminationGracePeriodSeconds"] >= float(pre_stop[1]) + drain_seconds(config, roles) + 5, deployment["metadata"]["name"]
    (gateway,) = [d for d in of_kind("Deployment") if d["metadata"]["name"] == "presence-gateway"]
    assert gateway["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert "preStop" in gateway["spec"]["template"]["spec"]["containers"][0]["lifecycle"]

    compose_config = load_deploy_config(environ={})
    for service in compose()["services"].values():
        if service.get("command", [""])[0] == "serve":
            grace = service["stop_grace_period"]  # its own, or the x-presence anchor's
            assert grace.endswith("s") and float(grace[:-1]) >= drain_seconds(compose_config, roles_of(service["command"])) + 5
    assert compose()["x-presence"]["stop_signal"] == "SIGTERM"
    unit = (SYSTEMD / "presence-server@.service").read_text()
    # One template for every role's instances: it covers the longest, a signaling one's.
    every_role = ("gateway", "signaling", "messaging")
    assert float(re.search(r"^TimeoutStopSec=(\d+)$", unit, re.M).group(1)) >= drain_seconds(compose_config, every_role) + 5  # type: ignore[union-attr]
    assert re.search(r"^KillSignal=SIGTERM$", unit, re.M)


# -- load balancers pass WebSockets ----------------------------------------------------------------


def test_haproxy_passes_websockets_to_ready_gateways() -> None:
    cfg = (DEPLOY / "haproxy.cfg").read_text()
    lines = [line.split("#", 1)[0].strip() for line in cfg.splitlines()]
    lines = [line for line in lines if line]
    defaults = lines[lines.index("defaults") + 1 :]
    # HTTP mode forwards the handshake's Upgrade and Connection headers and then
    # tunnels the connection; nothing may remove or rewrite those headers.
    assert "mode http" in defaults
    for line in lines:
        if re.search(r"\b(del-header|set-header|replace-header)\b", line):
            assert not re.search(r"\b(upgrade|connection)\b", line, re.I), line
        assert line not in ("option httpclose", "option http-tunnel")
    (tunnel,) = [line for line in lines if line.startswith("timeout tunnel ")]
    assert _seconds(tunnel.split()[-1]) > parse_config({}, environ={}).gateway.idle_timeout
    # Servers are the compose file's gateways and signaling process, on the config's port.
    roles = {name: roles_of(s["command"]) for name, s in compose()["services"].items() if "command" in s and s["command"][0] == "serve"}
    backends = _haproxy_backends(lines)
    port = load_deploy_config(environ={}).server.port
    assert sorted(backends["gateways"]) == sorted(f"{n}:{port}" for n, r in roles.items() if r == ("gateway",))
    assert sorted(backends["signaling"]) == sorted(f"{n}:{port}" for n, r in roles.items() if "signaling" in r)
    # The routes only the signaling role runs go there; the rest to the gateways.
    patterns = [line.split("path_reg ", 1)[1] for line in lines if "path_reg" in line]
    signaling_only = [
        "/2010-04-01/Accounts/AC6a232050fa9562efaf6d50984a297de1/Calls.json",
        "/2010-04-01/Accounts/AC6a232050fa9562efaf6d50984a297de1/Calls/CA6a232050fa9562efaf6d50984a297de1.json",
        "/v1/Ingress/outbox/Voice",
        "/v1/Ingress/outbox/Messages",
    ]
    anywhere = ["/v1/connect", "/2010-04-01/Accounts/AC6a232050fa9562efaf6d50984a297de1/Messages.json", "/v1/Ingress/outbox/Status"]
    assert all(any(re.search(p, path) for p in patterns) for path in signaling_only)
    assert not any(re.search(p, path) for p in patterns for path in anywhere)


def _haproxy_backends(lines: list[str]) -> dict[str, list[str]]:
    backends: dict[str, list[str]] = {}
    current = None
    for line in lines:
        words = line.split()
        if words[0] in ("backend", "frontend", "defaults", "global", "resolvers"):
            current = words[1] if words[0] == "backend" else None
            if current:
                backends[current] = []
        elif words[0] == "server" and current:
            backends[current].append(words[2])
    return backends


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m|h)?", value)
    assert match, value
    return int(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 0.001}[match.group(2)]


def test_the_ingress_keeps_idle_websockets_open_and_routes_signaling_paths() -> None:
    (ingress,) = of_kind("Ingress")
    notes = ingress["metadata"]["annotations"]
    idle = parse_config({}, environ={}).gateway.idle_timeout
    assert float(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) > idle
    assert float(notes["nginx.ingress.kubernetes.io/proxy-send-timeout"]) > idle
    for header in ("upgrade", "connection"):  # ingress-nginx passes them; nothing may override them
        assert header not in str(notes.get("nginx.ingress.kubernetes.io/configuration-snippet", "")).lower()
    paths = {p["path"]: p["backend"]["service"]["name"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]}
    assert paths["/"] == "presence-gateway"
    to_signaling = [p for p, service in paths.items() if service == "presence-signaling"]
    assert any(re.match(p, "/2010-04-01/Accounts/AC6a232050fa9562efaf6d50984a297de1/Calls.json") for p in to_signaling)
    assert any(re.match(p, "/v1/Ingress/outbox/Voice") for p in to_signaling)


# -- systemd ----------------------------------------------------------------------------------------------


def test_systemd_instances_run_valid_roles() -> None:
    unit = (SYSTEMD / "presence-server@.service").read_text()
    (exec_start,) = re.findall(r"^ExecStart=(.*)$", unit, re.M)
    args = shlex.split(exec_start)[1:]
    assert args[args.index("--roles") + 1] == "${ROLES}"
    assert config_of(args) == "${CREDENTIALS_DIRECTORY}/presence.toml"
    assert "LoadCredential=presence.toml:/etc/presence-server/presence.toml" in unit
    for path in SYSTEMD.glob("*.env"):
        (roles,) = re.findall(r"^ROLES=(.*)$", path.read_text(), re.M)
        assert set(roles.split(",")) <= set(ROLES) and path.stem == roles
    for instance in re.findall(r"presence-server@(\w+)\.service", (SYSTEMD / "presence-server.target").read_text()):
        assert (SYSTEMD / f"{instance}.env").exists()


def test_systemd_units_verify(tmp_path: Path) -> None:
    """systemd-analyze verify, with ExecStart pointed at this checkout's
    presence-server (verify insists the binary exists). It reports unknown keys and
    bad values as warnings, so any output at all fails the test."""
    exe = Path(sys.executable).parent / "presence-server"
    assert exe.exists()
    for path in SYSTEMD.iterdir():
        if path.suffix in (".service", ".target"):
            (tmp_path / path.name).write_text(path.read_text().replace("/opt/presence-server/.venv/bin/presence-server", str(exe)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "presence-server@gateway.service"), str(tmp_path / "presence-server.target")],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), result.stdout + result.stderr
