"""deploy/k8s/ and docker-compose.yml checked statically against the app and the README.

No cluster or container engine runs here: the manifests are parsed and held to what the gateway
does (probe routes, drain on SIGTERM, replica relay, settings named in the README's Environment
table)."""
from __future__ import annotations

import ast
import io
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from voicegw.config import Settings, parse_duration

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
SECRET_TEMPLATE = "secret.template.yaml"
ENV_NAME = re.compile(r"\b(?:VOICEGW|TWILIO|AZURE|OPENAI)_[A-Z0-9_]*[A-Z0-9]\b")
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKENS?|API_KEY|_KEY|DATABASE_URL)\b")
PLACEHOLDER = "REPLACE_ME"
MARGIN_S = 30  # records flushed and the process gone after the last call's goodbye


# ----------------------------------------------------------------------------- loading

def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def objects() -> list[dict[str, Any]]:
    return [doc for path in manifest_files() for doc in load_all(path)]


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects() if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def deployment() -> dict[str, Any]:
    return one("Deployment")


def gateway_container() -> dict[str, Any]:
    containers = deployment()["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "one gateway container per pod"
    return containers[0]


def configmaps() -> dict[str, dict[str, str]]:
    return {o["metadata"]["name"]: o.get("data") or {} for o in objects() if o["kind"] == "ConfigMap"}


def container_env(container: dict[str, Any]) -> dict[str, str | None]:
    """Name -> value as the container sees it; None for values only known at run time (Secret,
    downward API). Explicit `env` entries override `envFrom`, as in Kubernetes."""
    maps = configmaps()
    env: dict[str, str | None] = {}
    for src in container.get("envFrom") or []:
        if "configMapRef" in src:
            ref = src["configMapRef"]["name"]
            assert ref in maps, f"envFrom names ConfigMap {ref!r}, which no manifest defines"
            env.update({k: str(v) for k, v in maps[ref].items()})
    for entry in container.get("env") or []:
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
        elif "configMapKeyRef" in (entry.get("valueFrom") or {}):
            ref = entry["valueFrom"]["configMapKeyRef"]
            env[entry["name"]] = maps[ref["name"]][ref["key"]]
        else:
            env[entry["name"]] = None
    return env


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def compose_gateway_env() -> dict[str, str]:
    env = compose()["services"]["gateway"]["environment"]
    assert isinstance(env, dict), "gateway environment as a mapping (NAME: value)"
    return {k: "" if v is None else str(v) for k, v in env.items()}


def readme_env_table() -> dict[str, str]:
    """The README's Environment table: every name of the first column -> its Default cell.
    A first cell may name several settings: `A`, `B` or `A` / `B` (defaults split the same way)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Environment", 1)[1].split("\n## ", 1)[0]
    table: dict[str, str] = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        names = re.findall(r"`([A-Z][A-Z0-9_]*)`", cells[0])
        defaults = [d.strip() for d in cells[1].split(" / ")]
        for i, name in enumerate(names):
            default = defaults[i] if len(defaults) == len(names) else cells[1]
            table[name] = default.strip("`")
    return table


def app_routes(module: str) -> set[str]:
    """Paths of the Route/WebSocketRoute/Mount calls in a module's source (the app is not built:
    building it needs a Gateway, and nothing here starts a server)."""
    tree = ast.parse((ROOT / module).read_text())
    paths = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in ("Route", "WebSocketRoute", "Mount") and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            paths.add(node.args[0].value)
    return paths


def named_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise AssertionError(f"port {port!r} is not a port of the container")


def prestop_seconds(container: dict[str, Any]) -> float:
    pre = (container.get("lifecycle") or {}).get("preStop")
    assert pre, "the gateway container has no preStop hook"
    if "sleep" in pre:
        return float(pre["sleep"]["seconds"])
    command = " ".join(pre.get("exec", {}).get("command") or [])
    m = re.search(r"\bsleep\s+(\d+(?:\.\d+)?)", command)
    assert m, f"preStop does not sleep: {pre}"
    return float(m.group(1))


def k8s_drain_timeout() -> float:
    """VOICEGW_DRAIN_TIMEOUT as the gateway container gets it (unset: the README's default)."""
    env = container_env(gateway_container())
    text = env["VOICEGW_DRAIN_TIMEOUT"] if "VOICEGW_DRAIN_TIMEOUT" in env else readme_env_table()["VOICEGW_DRAIN_TIMEOUT"]
    assert text, "VOICEGW_DRAIN_TIMEOUT must be readable from the manifests, not only from a Secret"
    return parse_duration(text)


def cores(quantity: str | int | float) -> float:
    q = str(quantity)
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


# ----------------------------------------------------------------------------- the manifests

def test_every_manifest_parses_and_the_needed_kinds_are_there() -> None:
    files = manifest_files()
    assert files, "no manifests in deploy/k8s"
    for path in files + [K8S / "kustomization.yaml"]:
        docs = load_all(path)
        assert docs, f"{path.name} is empty"
        for doc in docs:
            assert isinstance(doc, dict) and doc.get("kind") and doc.get("apiVersion"), path.name
            if doc["kind"] != "Kustomization":
                assert doc.get("metadata", {}).get("name"), f"{path.name}: a {doc['kind']} without a name"
    kinds = {o["kind"] for o in objects()}
    assert kinds >= {"Deployment", "Service", "Ingress", "PodDisruptionBudget",
                     "HorizontalPodAutoscaler", "ConfigMap", "Secret"}


def test_kustomization_lists_every_manifest_but_the_secret_template() -> None:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = list(kust["resources"])
    assert len(listed) == len(set(listed)), "a manifest is listed twice"
    for name in listed:
        assert (K8S / name).is_file(), f"kustomization.yaml lists {name}, which does not exist"
    files = {p.name for p in manifest_files()}
    # applying the template would overwrite the real Secret with placeholders
    assert SECRET_TEMPLATE in files and SECRET_TEMPLATE not in listed
    assert set(listed) == files - {SECRET_TEMPLATE}, f"not listed: {sorted(files - set(listed) - {SECRET_TEMPLATE})}"


def test_probes_use_the_app_routes_on_the_listening_port() -> None:
    routes = app_routes("voicegw/app.py")
    c = gateway_container()
    env = container_env(c)
    assert env.get("VOICEGW_HOST") == "0.0.0.0" and env.get("VOICEGW_PORT") == "8080"
    assert 8080 in [p["containerPort"] for p in c["ports"]]
    expected = {"readinessProbe": "/readyz", "livenessProbe": "/healthz"}
    for probe, path in expected.items():
        get = c[probe]["httpGet"]
        assert get["path"] == path, f"{probe} is {get['path']}, not {path}"
        assert named_port(c, get["port"]) == 8080
        assert path in routes, f"{path} is not a route of voicegw/app.py"
    if "startupProbe" in c:
        get = c["startupProbe"]["httpGet"]
        assert get["path"] in routes and named_port(c, get["port"]) == 8080
    # /readyz fails while draining: a liveness probe on it would restart draining pods
    assert c["livenessProbe"]["httpGet"]["path"] != "/readyz"


def test_grace_period_outlasts_the_drain_timeout_and_the_prestop_sleep() -> None:
    spec = deployment()["spec"]["template"]["spec"]
    c = gateway_container()
    drain = k8s_drain_timeout()
    pre = prestop_seconds(c)
    assert pre >= 3, "the preStop sleep must give the endpoints and the ingress time to stop routing"
    grace = spec["terminationGracePeriodSeconds"]
    # Kubernetes counts the preStop hook inside the grace period
    assert grace >= drain + pre + MARGIN_S, \
        f"terminationGracePeriodSeconds {grace} < drain {drain:.0f} s + preStop {pre:.0f} s + {MARGIN_S} s"


def test_compose_stop_grace_period_outlasts_the_drain_timeout() -> None:
    gw = compose()["services"]["gateway"]
    drain_txt = compose_gateway_env().get("VOICEGW_DRAIN_TIMEOUT") or readme_env_table()["VOICEGW_DRAIN_TIMEOUT"]
    assert "${" not in drain_txt, "the drain timeout is fixed in the file, so stop_grace_period can follow it"
    assert "stop_grace_period" in gw, "docker compose stop would SIGKILL after 10 s, cutting live calls"
    assert parse_duration(gw["stop_grace_period"]) >= parse_duration(drain_txt) + MARGIN_S


def test_replicas_roll_without_losing_capacity_and_relay_streams_to_their_owner() -> None:
    d = deployment()
    assert d["spec"]["replicas"] >= 2
    strategy = d["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate" and strategy["rollingUpdate"]["maxUnavailable"] == 0
    env_list = gateway_container()["env"]
    names = [e["name"] for e in env_list]
    pod_ip = env_list[names.index("POD_IP")]
    assert pod_ip["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    replica = env_list[names.index("VOICEGW_REPLICA_URL")]
    assert replica["value"] == "http://$(POD_IP):8080"
    # $(VAR) expands only from variables defined earlier in the list
    assert names.index("POD_IP") < names.index("VOICEGW_REPLICA_URL")


def test_shared_settings_and_secrets_come_from_the_secret() -> None:
    secret = one("Secret")
    keys = set(secret.get("stringData") or {}) | set(secret.get("data") or {})
    c = gateway_container()
    refs = {}
    for e in c["env"]:
        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            assert ref["name"] == secret["metadata"]["name"], f"{e['name']} reads Secret {ref['name']!r}"
            refs[e["name"]] = ref
        elif SECRET_NAME.search(e["name"]):
            raise AssertionError(f"{e['name']} is written in the Deployment, not read from the Secret")
    # every replica must share these, and the gateway is useless without them
    for name in ("VOICEGW_STREAM_SECRET", "VOICEGW_DATABASE_URL", "TWILIO_AUTH_TOKEN"):
        assert name in refs and not refs[name].get("optional"), f"{name} must come from the Secret"
    for name, ref in refs.items():
        assert ref["key"] in keys or ref.get("optional"), f"{name}: key {ref['key']} is not in the Secret template"
    for name in ("TWILIO_AUTH_TOKEN", "TWILIO_ACCOUNT_SID", "VOICEGW_STREAM_SECRET", "VOICEGW_OPERATOR_TOKENS",
                 "VOICEGW_DATABASE_URL"):
        assert name in keys, f"the Secret template has no {name}"
    assert keys & {"AZURE_OPENAI_API_KEY", "OPENAI_API_KEY"}
    assert str((secret.get("stringData") or {})["VOICEGW_DATABASE_URL"]).startswith("postgresql://")
    for name, data in configmaps().items():
        for key in data:
            assert not SECRET_NAME.search(key), f"ConfigMap {name} holds {key}: it belongs in the Secret"


def test_secret_template_holds_placeholders_only() -> None:
    secret = one("Secret")
    assert not secret.get("data"), "use stringData with placeholders; base64 data hides what it holds"
    for key, value in (secret.get("stringData") or {}).items():
        value = str(value)
        assert PLACEHOLDER in value, f"{key} is not a {PLACEHOLDER} placeholder"
        rest = value.replace(PLACEHOLDER, "")
        assert not re.search(r"AC[0-9a-fA-F]{32}|\bsk-[A-Za-z0-9_-]{8,}", rest), f"{key} looks like a real credential"
        assert not re.search(r"[A-Za-z0-9+/=_-]{20,}", rest), f"{key} holds a long token beside the placeholder"


def test_pod_runs_non_root_with_a_read_only_root_and_writable_scratch() -> None:
    spec = deployment()["spec"]["template"]["spec"]
    c = gateway_container()
    pod_sc, sc = spec.get("securityContext") or {}, c.get("securityContext") or {}
    assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True
    assert sc.get("runAsUser", pod_sc.get("runAsUser", 1)) != 0
    assert sc.get("readOnlyRootFilesystem") is True
    assert sc.get("allowPrivilegeEscalation") is False
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts") or []}
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    data_dir = container_env(c).get("VOICEGW_DATA_DIR")
    assert data_dir, "VOICEGW_DATA_DIR must point at a writable volume"
    for path in (data_dir, "/tmp"):
        assert path in mounts, f"{path} is not mounted: the root filesystem is read-only"
        assert not mounts[path].get("readOnly") and "emptyDir" in volumes[mounts[path]["name"]]


def test_resources_and_workers_fit_the_pod() -> None:
    c = gateway_container()
    res = c["resources"]
    for side in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(res[side]), f"resources.{side} needs cpu and memory"
    env = container_env(c)
    # set explicitly: the cgroup-derived default depends on the runtime's cgroup layout
    workers = int(env["VOICEGW_WORKERS"] or 0)
    assert 1 <= workers <= cores(res["limits"]["cpu"]), "VOICEGW_WORKERS must match the pod's cores"
    assert int(env["VOICEGW_MAX_CALLS"] or 0) >= 1


def test_agent_file_is_mounted_from_the_configmap_and_valid(tmp_path: Path) -> None:
    from voicegw.tools.check import check_config

    spec = deployment()["spec"]["template"]["spec"]
    c = gateway_container()
    agent = Path(container_env(c)["VOICEGW_AGENT"] or "")
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    mount = mounts.get(str(agent.parent))
    assert mount and mount.get("readOnly"), f"{agent.parent} is not a read-only mount"
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    data = configmaps()[volume["configMap"]["name"]]
    assert agent.name in data, f"the agents ConfigMap has no {agent.name}"
    path = tmp_path / agent.name
    path.write_text(data[agent.name])
    out, err = io.StringIO(), io.StringIO()
    assert check_config(path, Settings.from_env({}), out=out, err=err) == 0, err.getvalue()


def test_service_and_ingress_route_twilio_and_keep_metrics_inside() -> None:
    pod_labels = deployment()["spec"]["template"]["metadata"]["labels"]
    svc = one("Service")
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    port = next(p for p in svc["spec"]["ports"] if p["port"] == 80)
    assert named_port(gateway_container(), port["targetPort"]) == 8080

    ing = one("Ingress")
    notes = ing["metadata"]["annotations"]
    for key in ("nginx.ingress.kubernetes.io/proxy-read-timeout", "nginx.ingress.kubernetes.io/proxy-send-timeout"):
        assert int(notes[key]) >= 3600, f"{key} would cut long media streams"
    assert any("websocket" in k.lower() for k in notes), "no WebSocket annotation"
    tls_hosts = [h for t in ing["spec"]["tls"] for h in t["hosts"]]
    assert all(t.get("secretName") for t in ing["spec"]["tls"])
    paths = []
    for rule in ing["spec"]["rules"]:
        assert rule["host"] in tls_hosts, f"{rule['host']} is served without TLS"
        for p in rule["http"]["paths"]:
            backend = p["backend"]["service"]
            assert backend["name"] == svc["metadata"]["name"]
            assert backend["port"].get("number", 80) == 80 or backend["port"].get("name") == port["name"]
            paths.append(p["path"])

    def routed(path: str) -> bool:
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in paths)

    routes = app_routes("voicegw/app.py")
    for path in ("/twilio/voice", "/twilio/media"):
        assert path in routes and routed(path), f"Twilio cannot reach {path}"
    for path in ("/metrics", "/healthz", "/readyz"):
        assert not routed(path), f"{path} is exposed on the Ingress"
    console = app_routes("voicegw/console/routes.py")
    for p in paths:
        assert any(r == p or r.startswith(p.rstrip("/") + "/") for r in routes | console), f"{p} matches no route"
    public = configmaps()["voicegw-env"]["VOICEGW_PUBLIC_URL"]
    assert public.rstrip("/") in [f"https://{h}" for h in tls_hosts], "VOICEGW_PUBLIC_URL is not the Ingress host"


def test_pdb_and_autoscaler_respect_slow_drains() -> None:
    pod_labels = deployment()["spec"]["template"]["metadata"]["labels"]
    pdb = one("PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()

    hpa = one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert target["kind"] == "Deployment" and target["name"] == deployment()["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2
    cpu = [m for m in hpa["spec"]["metrics"] if m["type"] == "Resource" and m["resource"]["name"] == "cpu"]
    assert cpu and cpu[0]["resource"]["target"]["type"] == "Utilization"
    drain = k8s_drain_timeout()
    window = hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"]
    assert window >= drain, "scale-down must wait at least as long as a pod takes to drain"
    assert "drain" in (K8S / "hpa.yaml").read_text().lower(), "say in hpa.yaml that scale-in drains calls"


# ----------------------------------------------------------------------------- settings vs the README

def test_readme_environment_table_parses() -> None:
    table = readme_env_table()
    assert len(table) >= 25
    assert {"VOICEGW_HOST", "VOICEGW_PORT", "AZURE_OPENAI_API_VERSION", "OPENAI_BASE_URL",
            "VOICEGW_DRAIN_TIMEOUT", "VOICEGW_REPLICA_URL"} <= set(table)
    assert parse_duration(table["VOICEGW_DRAIN_TIMEOUT"]) > 0


@pytest.mark.parametrize("path", [*(p.relative_to(ROOT) for p in manifest_files()), Path("docker-compose.yml")],
                         ids=str)
def test_every_setting_used_is_in_the_readme_table(path: Path) -> None:
    table = readme_env_table()
    used = set(ENV_NAME.findall((ROOT / path).read_text()))
    unknown = sorted(used - set(table))
    assert not unknown, f"{path} uses settings the README's Environment table does not name: {unknown}"


def test_compose_gateway_lists_every_readme_setting() -> None:
    missing = sorted(set(readme_env_table()) - set(compose_gateway_env()))
    assert not missing, f"docker-compose.yml's gateway environment lacks {missing}"


def test_compose_mounts_agent_files_read_only() -> None:
    volumes = [str(v) for v in compose()["services"]["gateway"]["volumes"]]
    agents = [v for v in volumes if v.split(":")[1:2] == ["/app/agents"]]
    assert agents and agents[0].endswith(":ro")
    assert (ROOT / agents[0].split(":")[0]).is_dir()
    agent = compose_gateway_env()["VOICEGW_AGENT"]
    default = re.fullmatch(r"\$\{[A-Z0-9_]+:-(.*)\}", agent)
    assert default is not None or not agent, "VOICEGW_AGENT is interpolated, so .env can choose the agent"
    if default and default.group(1):
        assert default.group(1).startswith("/app/agents/")
