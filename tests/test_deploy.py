"""The deployment files: Dockerfile, .dockerignore, deploy/compose.yaml, deploy/kubernetes/*.yaml and deploy/smoke.sh.

Fast checks read the files only (no Docker, no cluster, no network) and check the wiring between them: names that
one object refers to exist, ports and paths agree, the API and the Dask processes share the image, the cubes volume
and the storage settings, and the service's own settings parser accepts the environment they give it. The last test
runs deploy/smoke.sh: the image's install steps in a fresh virtual environment, then the image's default command.
"""

import json
import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from jobs.cluster import WORKER_MALLOC
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
DOCKERFILE = ROOT / "Dockerfile"
SMOKE = DEPLOY / "smoke.sh"
AWS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION")
DASK_PORT = 8786  # `dask scheduler`'s default --port


# ---------------------------------------------------------------------------------------------------- helpers


def manifests() -> dict[tuple[str, str], dict]:
    """Every object in deploy/kubernetes/*.yaml by (kind, name); a duplicate is an error."""
    objects: dict[tuple[str, str], dict] = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            assert {"apiVersion", "kind", "metadata"} <= doc.keys(), f"{path.name}: incomplete object {doc}"
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in objects, f"{path.name}: {key} is defined twice"
            objects[key] = doc
    return objects


def one(objects: dict[tuple[str, str], dict], kind: str) -> dict:
    found = [doc for (k, _), doc in objects.items() if k == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container_port(container: dict, port: int | str) -> int:
    """A probe's or Service's port (a number or a port name) as the container's port number."""
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    if isinstance(port, str) and not port.isdigit():
        assert port in ports, f"port name {port!r} is not a port of container {container['name']} ({ports})"
        return ports[port]
    assert int(port) in ports.values(), f"port {port} is not a port of container {container['name']} ({ports})"
    return int(port)


def option(args: list[str], name: str) -> str | None:
    """The value of ``name`` in an argument list (``--name value`` or ``--name=value``)."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def interpolate(value: str) -> str:
    """Compose's variable substitution with every variable unset: ``${X:-d}`` -> d, ``${X:?e}`` and ``${X}`` -> x."""
    value = re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", value)
    value = re.sub(r"\$\{\w+(:?\?[^}]*)?\}", "x", value)
    return value.replace("$$", "$")


def command(service: dict) -> list[str]:
    cmd = service.get("command", [])
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            instructions.append((word.upper(), " ".join(rest.split())))
    return instructions


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The service's settings as `tamrl serve` would build them in a process with environment ``env``."""
    for key in os.environ:
        if key.startswith("TAMRL_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


# ---------------------------------------------------------------------------------------------------- Kubernetes


def test_kubernetes_manifests_parse_and_name_their_kinds():
    objects = manifests()
    kinds = sorted(kind for kind, _ in objects)
    for kind in ("ConfigMap", "DaskCluster", "Deployment", "PersistentVolumeClaim", "Secret", "Service"):
        assert kind in kinds, f"deploy/kubernetes has no {kind}"
    files = {p.name for p in KUBERNETES.glob("*.yaml")}
    assert files == {"api.yaml", "config.yaml", "dask-cluster.yaml", "storage.yaml"}
    cluster = one(objects, "DaskCluster")
    assert cluster["apiVersion"] == "kubernetes.dask.org/v1"
    # the operator's documented schema: spec.worker.{replicas, spec: PodSpec}, spec.scheduler.{spec, service}
    assert isinstance(cluster["spec"]["worker"]["replicas"], int) and cluster["spec"]["worker"]["replicas"] >= 1
    assert cluster["spec"]["worker"]["spec"]["containers"]
    assert cluster["spec"]["scheduler"]["spec"]["containers"]
    assert cluster["spec"]["scheduler"]["service"]["ports"]


def test_api_deployment_refers_to_existing_config_secrets_and_volume():
    objects = manifests()
    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (api,) = pod["containers"]
    assert deployment["spec"]["replicas"] == 1, "one API: it runs the job queue and owns the SQLite job records"
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    sources = api["envFrom"]
    for source in sources:
        (ref, target), *_ = source.items()
        kind = {"configMapRef": "ConfigMap", "secretRef": "Secret"}[ref]
        assert (kind, target["name"]) in objects, f"the API's envFrom names {kind} {target['name']}, not defined"
    assert any("configMapRef" in s for s in sources) and any("secretRef" in s for s in sources)
    config = one(objects, "ConfigMap")["data"]
    mounts = {m["mountPath"]: m["name"] for m in api["volumeMounts"]}
    assert config["TAMRL_CUBES"] in mounts, "the cubes folder of the ConfigMap is not mounted in the API"
    volume = next(v for v in pod["volumes"] if v["name"] == mounts[config["TAMRL_CUBES"]])
    claim = objects.get(("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]))
    assert claim is not None, "the API's cubes volume claims a PVC that storage.yaml does not define"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"], "API and workers on several nodes share the cubes"
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_api_service_and_probes_reach_the_container_port():
    objects = manifests()
    deployment = one(objects, "Deployment")
    template = deployment["spec"]["template"]
    (api,) = template["spec"]["containers"]
    labels = template["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    port = int(option(api["args"], "--port"))
    assert api["args"][:2] == ["tamrl", "serve"] and option(api["args"], "--host") == "0.0.0.0"
    assert container_port(api, port) == port
    service = next(doc for (kind, _), doc in objects.items() if kind == "Service")
    assert service["spec"]["selector"].items() <= labels.items(), "the Service does not select the API's pods"
    assert [container_port(api, p["targetPort"]) for p in service["spec"]["ports"]] == [port]
    probes = [api[name] for name in ("startupProbe", "readinessProbe", "livenessProbe") if name in api]
    assert {"readinessProbe", "livenessProbe"} <= api.keys()
    for probe in probes:
        assert probe["httpGet"]["path"] == "/cubes"
        assert container_port(api, probe["httpGet"]["port"]) == port


def test_scheduler_address_image_and_cubes_volume_are_shared_with_the_dask_cluster(monkeypatch):
    objects = manifests()
    cluster = one(objects, "DaskCluster")
    name = cluster["metadata"]["name"]
    (scheduler,) = cluster["spec"]["scheduler"]["spec"]["containers"]
    (worker,) = cluster["spec"]["worker"]["spec"]["containers"]
    service = cluster["spec"]["scheduler"]["service"]
    assert service["selector"] == {"dask.org/cluster-name": name, "dask.org/component": "scheduler"}
    ports = {p["name"]: p for p in service["ports"]}
    assert {"tcp-comm", "http-dashboard"} <= ports.keys()
    comm = ports["tcp-comm"]
    scheduler_port = int(option(scheduler["args"], "--port") or DASK_PORT)
    assert container_port(scheduler, comm["targetPort"]) == scheduler_port
    assert container_port(scheduler, ports["http-dashboard"]["targetPort"]) == 8787

    # The operator names the scheduler Service <cluster name>-scheduler; the API reaches it on the tcp-comm port.
    config = one(objects, "ConfigMap")["data"]
    address = urlsplit(config["TAMRL_SCHEDULER"])
    assert address.scheme == "tcp"
    assert address.hostname.split(".")[0] == f"{name}-scheduler", f"TAMRL_SCHEDULER does not name {name}-scheduler"
    assert address.port == comm["port"]

    deployment = one(objects, "Deployment")
    (api,) = deployment["spec"]["template"]["spec"]["containers"]
    assert api["image"] == scheduler["image"] == worker["image"], "API, scheduler and workers need one image"
    assert scheduler["args"][:2] == ["dask", "scheduler"]
    assert worker["args"][:2] == ["dask", "worker"] and option(worker["args"], "--nthreads") == "1"

    # Workers write tiles into the cubes folder at the API's path, from the same PVC.
    def cubes_claim(pod: dict, container: dict) -> str:
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == config["TAMRL_CUBES"])
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        return volume["persistentVolumeClaim"]["claimName"]

    assert cubes_claim(cluster["spec"]["worker"]["spec"], worker) == cubes_claim(
        deployment["spec"]["template"]["spec"], api
    )
    # Workers read the same storage settings as the API, but not the job token.
    worker_sources = {next(iter(s.values()))["name"] for s in worker["envFrom"]}
    assert worker_sources <= {next(iter(s.values()))["name"] for s in api["envFrom"]}
    worker_keys = set()
    for source in worker["envFrom"]:
        kind = "ConfigMap" if "configMapRef" in source else "Secret"
        doc = objects[(kind, next(iter(source.values()))["name"])]
        worker_keys |= set(doc.get("data", {})) | set(doc.get("stringData", {}))
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"} <= worker_keys
    assert "TAMRL_TOKEN" not in worker_keys
    assert {e["name"]: e["value"] for e in worker["env"]} == {k: str(v) for k, v in WORKER_MALLOC.items()}

    # The service's settings parser accepts the API's environment.
    env = dict(config)
    for source in api["envFrom"]:
        if "secretRef" in source:
            env |= objects[("Secret", source["secretRef"]["name"])]["stringData"]
    settings = settings_from(env, monkeypatch)
    assert str(settings.cubes) == config["TAMRL_CUBES"] and settings.scheduler == config["TAMRL_SCHEDULER"]
    assert settings.drivers and all(isinstance(url, str) for url in settings.drivers)
    assert settings.token is not None


# ---------------------------------------------------------------------------------------------------- compose


def test_compose_services_share_the_cubes_volume_and_storage_settings():
    spec = compose()
    services = spec["services"]
    assert {"api", "scheduler", "worker", "minio", "minio-init"} <= services.keys()
    api, scheduler, worker, minio = (services[name] for name in ("api", "scheduler", "worker", "minio"))
    assert api["image"] == scheduler["image"] == worker["image"]
    for service in (api, scheduler, worker):
        assert (DEPLOY / service["build"]["context"]).resolve() == ROOT
        assert service["build"].get("dockerfile", "Dockerfile") == "Dockerfile"
    assert "command" not in api, "the API runs the image's default command"

    cubes = environment(api)["TAMRL_CUBES"]
    assert environment(worker)["TAMRL_CUBES"] == cubes

    def cubes_volume(service: dict) -> str:
        return next(v.split(":")[0] for v in service["volumes"] if v.split(":")[1] == cubes)

    assert cubes_volume(api) == cubes_volume(worker) in spec["volumes"], "api and worker need one named volume"

    api_env, worker_env = environment(api), environment(worker)
    for key in AWS:
        assert api_env[key] == worker_env[key], f"{key} differs between api and worker"
    endpoint = urlsplit(api_env["AWS_ENDPOINT_URL"])
    assert endpoint.hostname == "minio" and endpoint.port == 9000
    assert any(str(p).split(":")[-1] == "9000" for p in minio["ports"])
    minio_env = environment(minio)
    assert api_env["AWS_ACCESS_KEY_ID"] == minio_env["MINIO_ROOT_USER"]
    assert api_env["AWS_SECRET_ACCESS_KEY"] == minio_env["MINIO_ROOT_PASSWORD"]
    assert {k: v for k, v in worker_env.items() if k.startswith("MALLOC_")} == {
        k: str(v) for k, v in WORKER_MALLOC.items()
    }


def test_compose_api_and_workers_reach_the_scheduler(monkeypatch):
    services = compose()["services"]
    api, scheduler, worker = services["api"], services["scheduler"], services["worker"]
    address = environment(api)["TAMRL_SCHEDULER"]
    parsed = urlsplit(address)
    assert parsed.scheme == "tcp" and parsed.hostname in services, f"{address}: not a compose service"
    target = services[parsed.hostname]
    assert command(target)[:2] == ["dask", "scheduler"]
    assert parsed.port == int(option(command(target), "--port") or DASK_PORT)
    assert target is scheduler and "healthcheck" in scheduler
    assert api["depends_on"]["scheduler"]["condition"] == "service_healthy"

    args = command(worker)
    assert args[:3] == ["dask", "worker", address], "workers must join the scheduler the API uses"
    assert option(args, "--nthreads") == "1" and int(option(args, "--nworkers")) >= 1
    assert worker["deploy"]["replicas"] >= 1

    # the buckets of the driver URLs are the ones minio-init creates
    settings = settings_from({k: interpolate(v) for k, v in environment(api).items()}, monkeypatch)
    assert settings.scheduler == address and str(settings.cubes) == environment(api)["TAMRL_CUBES"]
    assert settings.token is not None
    init = " ".join(command(services["minio-init"]))
    buckets = {urlsplit(url).netloc for url in settings.drivers if url.startswith("s3://")}
    assert buckets and all(f"/{bucket}" in init for bucket in buckets)
    assert api["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"


# ---------------------------------------------------------------------------------------------------- image


def test_dockerfile_runs_the_api_as_non_root_from_the_pinned_package():
    instructions = dockerfile()
    kinds = [kind for kind, _ in instructions]
    assert instructions[0] == ("FROM", "python:3.11-slim")
    users = [args for kind, args in instructions if kind == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must run as a non-root user"
    assert kinds.index("USER") > max(i for i, k in enumerate(kinds) if k == "RUN"), "USER after the installs"
    exposed = {port for kind, args in instructions if kind == "EXPOSE" for port in args.split()}
    assert "8000" in exposed
    assert "ENTRYPOINT" not in kinds, "no ENTRYPOINT, so `dask scheduler` / `dask worker` can be given as commands"
    (cmd,) = [json.loads(args) for kind, args in instructions if kind == "CMD"]
    assert cmd[:2] == ["tamrl", "serve"] and option(cmd, "--host") == "0.0.0.0" and option(cmd, "--port") == "8000"
    (healthcheck,) = [args for kind, args in instructions if kind == "HEALTHCHECK"]
    assert "/cubes" in healthcheck and ":8000/" in healthcheck

    # torch comes pinned through the package, from the CPU wheel index; the image installs nothing on its own
    defaults = dict(arg.split("=", 1) for kind, arg in instructions if kind == "ARG" and "=" in arg)
    runs = " ".join(args for kind, args in instructions if kind == "RUN")
    runs = re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), m.group(0)).strip('"'), runs)
    installs = re.findall(r"pip install ([^&;]*)", runs)
    assert len(installs) == 1, f"one `pip install` expected: {installs}"
    (install,) = installs
    assert re.search(r"--extra-index-url \"?https://download\.pytorch\.org/whl/cpu\b", install)
    assert re.search(r"(^|\s)\.(\s|$)", install), "the image installs the package with `pip install .`"
    assert not re.search(r"(^|\s)(-e|--editable)(\s|$)", install)
    extra = [word for word in install.split() if word != "." and not word.startswith(("-", '"', "http"))]
    assert not any(word.lower().startswith("torch") for word in extra), f"torch installed on its own: {extra}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "torch==2.13.0" in project["project"]["dependencies"]

    # everything the package needs is copied: its packages (with the checkpoints), pyproject.toml and the readme
    copied = {Path(src).parts[0] for kind, args in instructions if kind == "COPY" for src in args.split()[:-1]}
    packages = {name.rstrip("*") for name in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages | {"pyproject.toml", project["project"]["readme"]} <= copied
    env = " ".join(args for kind, args in instructions if kind == "ENV")
    assert "TAMRL_CUBES=/data/cubes" in env


def test_dockerignore_keeps_local_state_out_and_the_sources_in():
    patterns = {
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip()[:1] not in ("", "#")
    }
    for excluded in (".venv", "runs", "tamrl_demo", "reports", "**/__pycache__", ".pytest_cache", ".ruff_cache"):
        assert excluded in patterns, f".dockerignore does not exclude {excluded}"
    for needed in ("pyproject.toml", "README.md", "tamrl", "jobs", "service", "*.pt", "**/*.pt", "tamrl/checkpoints"):
        assert needed not in patterns, f".dockerignore excludes {needed}, which the image needs"


# ---------------------------------------------------------------------------------------------------- smoke, docs


def test_smoke_script_is_strict_and_installs_like_the_image():
    text = SMOKE.read_text()
    assert os.access(SMOKE, os.X_OK), "deploy/smoke.sh is not executable"
    assert "set -euo pipefail" in text and "trap cleanup EXIT" in text
    assert re.search(r"pip install [^\n]*\s\.\)", text) and not re.search(r"pip install[^\n]*(-e|--editable)\s", text)
    subprocess.run(["bash", "-n", str(SMOKE)], check=True)


def test_deploy_docs_cover_every_file():
    docs = (ROOT / "docs" / "DEPLOY.md").read_text()
    for name in ("compose.yaml", "smoke.sh", "--nthreads 1", "AWS_ENDPOINT_URL", "s3fs", "helm install"):
        assert name in docs
    for path in KUBERNETES.glob("*.yaml"):
        assert f"deploy/kubernetes/{path.name}" in docs, f"docs/DEPLOY.md does not say how to apply {path.name}"


def test_smoke_script_installs_and_serves():
    """deploy/smoke.sh end to end: a fresh venv, `pip install .` as the Dockerfile does, `tamrl serve` answering
    /cubes (about 2 minutes: the image cannot be built here, so CI runs this in its place)."""
    result = subprocess.run(["bash", str(SMOKE), str(ROOT)], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "OK: all checks passed" in result.stdout
