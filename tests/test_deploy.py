"""Deployment files: Kubernetes manifests validated against the Kubernetes OpenAPI schemas (offline, with
kubernetes-validate), the Dockerfile linted structurally (there is no container engine here to build
it), the server settings, and the README documenting every setting."""

from __future__ import annotations

import re
import shlex

import kubernetes_validate
import pytest
import yaml
from conftest import ROOT

from cds_hooks import config as settings

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
#: the oldest Kubernetes minor still commonly supported by managed offerings
K8S_VERSION = "1.30.0"
COMPILERS = ("gcc", "g++", "clang", "build-essential", "make", "cc", "cpp", "libc6-dev", "python3-dev",
             "rustc", "cargo")


def manifests() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs.extend((path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def by_kind(kind: str) -> dict:
    (doc,) = [doc for _, doc in manifests() if doc["kind"] == kind]
    return doc


# --- Kubernetes ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,doc", manifests(), ids=lambda v: v if isinstance(v, str) else v.get("kind"))
def test_manifest_is_valid_against_the_kubernetes_schema(name, doc):
    # strict: unknown fields (typos such as "readinesProbe") are errors, not silently ignored
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_validator_rejects_a_typo():
    deployment = yaml.safe_load((K8S / "deployment.yaml").read_text())
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_example():
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert listed == present


def test_deployment_has_probes_resources_and_runs_unprivileged():
    pod = by_kind("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_secrets_come_from_secret_references_and_settings_from_the_configmap():
    container = by_kind("Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item for item in container["env"]}
    for name in ("LUPUS_CDS_DATABASE_URL", "LUPUS_CDS_REDIS_URL"):
        assert "secretKeyRef" in env[name]["valueFrom"], name
        assert "value" not in env[name]
    assert container["envFrom"] == [{"configMapRef": {"name": by_kind("ConfigMap")["metadata"]["name"]}}]
    data = by_kind("ConfigMap")["data"]
    unknown = set(data) - set(settings.SETTINGS) - {"PROMETHEUS_MULTIPROC_DIR"}
    assert not unknown, f"ConfigMap sets unknown settings {unknown}"
    assert not {"LUPUS_CDS_DATABASE_URL", "LUPUS_CDS_REDIS_URL"} & set(data), "URLs carry passwords: Secrets"
    assert not any(re.search(r"://[^/@\s]*:[^/@\s]*@", value) for value in data.values())


def test_service_hpa_and_pdb_point_at_the_deployment():
    deployment = by_kind("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget"):
        spec = by_kind(kind)["spec"]
        selector = spec["selector"].get("matchLabels", spec["selector"])
        assert selector.items() <= labels.items(), kind
    port = deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["name"]
    assert by_kind("Service")["spec"]["ports"][0]["targetPort"] == port
    target = by_kind("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert by_kind("HorizontalPodAutoscaler")["spec"]["minReplicas"] >= 2


# --- Dockerfile ----------------------------------------------------------------------------------------

def dockerfile_stages() -> list[dict]:
    """Stages of deploy/Dockerfile: each {"from": image, "name": alias, "instructions": [(op, args)]}."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    args: dict[str, str] = {}
    stages: list[dict] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        op = op.upper()
        if op == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
        elif op == "FROM":
            words = rest.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), words[0])
            name = words[2] if len(words) > 2 and words[1].upper() == "AS" else None
            stages.append({"from": image, "name": name, "instructions": []})
        else:
            stages[-1]["instructions"].append((op, rest.strip()))
    return stages


def test_dockerfile_is_multi_stage_on_a_slim_base():
    stages = dockerfile_stages()
    assert len(stages) >= 2
    final = stages[-1]
    slim = r"python:3\.1[1-9][\w.-]*-slim[\w.-]*(@sha256:[0-9a-f]{64})?"
    assert re.fullmatch(slim, final["from"]), final["from"]
    copies = [args for op, args in final["instructions"] if op == "COPY"]
    assert any(args.startswith(f"--from={stages[0]['name']}") for args in copies), "takes the build stage"


def test_dockerfile_final_stage_runs_as_non_root_with_a_healthcheck():
    final = dockerfile_stages()[-1]["instructions"]
    users = [args for op, args in final if op == "USER"]
    assert users, "final stage sets USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    ops = [op for op, _ in final]
    assert ops.index("USER") > max(i for i, op in enumerate(ops) if op == "RUN"), "nothing runs as root after"
    (health,) = [args for op, args in final if op == "HEALTHCHECK"]
    assert "/healthz" in health and "CMD" in health
    cmd = " ".join(args for op, args in final if op in ("CMD", "ENTRYPOINT"))
    assert "serve" in cmd


def test_dockerfile_final_stage_installs_no_compilers():
    final = dockerfile_stages()[-1]["instructions"]
    for op, args in final:
        if op != "RUN":
            continue
        words = set(shlex.split(args.replace("&&", " ").replace(";", " ")))
        assert not words & set(COMPILERS), f"compiler in final stage: {words & set(COMPILERS)}"
        assert "pip" not in " ".join(words), "the final stage installs nothing with pip (it copies the venv)"


def test_dockerfile_copies_only_what_exists():
    for stage in dockerfile_stages():
        for op, args in stage["instructions"]:
            if op == "COPY" and not args.startswith("--from"):
                *sources, _ = args.split()
                for source in sources:
                    assert (ROOT / source).exists(), source
    text = (DEPLOY / "Dockerfile").read_text()
    assert "COPY cds_hooks ./cds_hooks" in text  # the server settings travel inside the package
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text()
    assert ".venv" not in ignore or "!.venv" not in ignore  # context is an allow-list; .venv never sent


# --- server (granian) -----------------------------------------------------------------------------------

def test_serve_uses_every_cpu_by_default_and_logs_as_json(monkeypatch, tmp_path):
    from cds_hooks import server

    for name in ("LUPUS_CDS_WORKERS", "LUPUS_CDS_REDIS_URL", "LUPUS_CDS_REPLAY_DB", "LUPUS_CDS_ALLOW_UNSIGNED",
                 "LUPUS_CDS_LOG_FORMAT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # not a directory of its own to clean up
    built = server.build_server("127.0.0.1", 18080)
    assert built.workers == server.default_workers() == len(__import__("os").sched_getaffinity(0))
    assert built.http1_settings.header_read_timeout == server.HEADER_TIMEOUT_SECONDS * 1000
    assert built.backpressure >= 1000, "granian counts idle connections against this: keep it large"
    assert built.log_access is False  # cds_hooks.serving writes the access log
    formatter = built.log_config["formatters"]["service"]["()"]
    assert formatter == "cds_hooks.logs.JSONFormatter"
    assert built.workers_kill_timeout == server.GRACEFUL_SECONDS
    monkeypatch.setenv("LUPUS_CDS_WORKERS", "3")
    assert server.build_server("127.0.0.1", 18080).workers == 3
    assert server.build_server("127.0.0.1", 18080, workers=1).workers == 1  # --workers wins


def test_serve_refuses_an_in_memory_replay_store_with_several_workers(monkeypatch, tmp_path):
    from cds_hooks import server

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.delenv("LUPUS_CDS_REDIS_URL", raising=False)
    monkeypatch.delenv("LUPUS_CDS_ALLOW_UNSIGNED", raising=False)
    monkeypatch.setenv("LUPUS_CDS_REPLAY_DB", "memory")
    with pytest.raises(ValueError, match="replayed"):
        server.build_server("127.0.0.1", 18080, workers=2)
    assert server.build_server("127.0.0.1", 18080, workers=1).workers == 1


def test_granian_is_a_declared_dependency_and_gunicorn_is_gone():
    text = (ROOT / "pyproject.toml").read_text()
    assert '"granian>=' in text and "gunicorn" not in text
    assert not (ROOT / "cds_hooks" / "gunicorn_conf.py").exists()


# --- documentation -------------------------------------------------------------------------------------

def test_readme_documents_every_setting_and_the_shared_state():
    readme = (DEPLOY / "README.md").read_text()
    missing = [name for name in settings.SETTINGS if f"`{name}`" not in readme]
    assert not missing, f"deploy/README.md 'Settings' lacks {missing}: add the rows (as in README.md)"
    for topic in ("PROMETHEUS_MULTIPROC_DIR", "/healthz", "/readyz", "/metrics", "rotat", "stateless",
                  "feedback-report", "kubernetes-validate"):
        assert topic in readme, topic
