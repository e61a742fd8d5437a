"""deploy/k8s: every manifest valid against strict JSON schemas, and the KEDA autoscaling true to the engine.

Built-in kinds are validated with the Kubernetes 1.31 "strict" schemas that the dev dependency
kubernetes-validate ships; KEDA's ScaledObject with tests/data/k8s/keda-scaledobject-v1alpha1.json
(provenance in its README).  `problems` holds the project's own rules; each schema and each rule is
also shown to reject a broken copy of the manifests.
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry, Resource

from cxstream.streams import topics
from cxstream.streams.batch import BatchRuntime
from cxstream.streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy/k8s"
K8S_VERSION = "1.31"
KEDA_SCHEMA = ROOT / "tests/data/k8s/keda-scaledobject-v1alpha1.json"
MAX_POLLING_S = 15  # KEDA polls the lag at least this often: a scale-out within 60 s has room for a pod start
#: Metadata keys of KEDA's kafka scaler (KEDA 2.16 docs); anything else is a typo KEDA would ignore.
KAFKA_TRIGGER_KEYS = {
    "bootstrapServers", "bootstrapServersFromEnv", "consumerGroup", "consumerGroupFromEnv", "topic", "topicFromEnv",
    "lagThreshold", "activationLagThreshold", "offsetResetPolicy", "allowIdleConsumers", "excludePersistentLag",
    "scaleToZeroOnInvalidOffset", "limitToPartitionsWithLag", "ensureEvenDistributionOfPartitions",
    "partitionLimitation", "version", "sasl", "saslTokenProvider", "tls", "unsafeSsl", "awsRegion",
}


def manifests(folder: Path = K8S) -> dict[str, list[dict[str, Any]]]:
    """Every YAML document of every manifest file, by file name."""
    files = sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml"))
    return {f.name: [d for d in yaml.safe_load_all(f.read_text()) if d is not None] for f in files}


def k8s_definitions() -> dict[str, Any]:
    schemas = resources.files(kubernetes_validate) / "kubernetes-json-schema" / f"v{K8S_VERSION}.0-local-strict"
    return json.loads((schemas / "_definitions.json").read_text())


def keda_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(KEDA_SCHEMA.read_text())
    registry: Registry = Registry().with_resources([
        (schema["$id"], Resource.from_contents(schema)),
        ("https://kubernetes.io/api/_definitions.json", Resource.from_contents(k8s_definitions())),
    ])
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, registry=registry)


def schema_errors(doc: dict[str, Any]) -> list[str]:
    """Why *doc* is not a valid manifest (empty: it is)."""
    where = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
    if doc.get("apiVersion") == "keda.sh/v1alpha1":
        if doc.get("kind") != "ScaledObject":
            return [f"{where}: no schema for this KEDA kind"]
        return [f"{where}: {'/'.join(map(str, e.absolute_path))}: {e.message}" for e in keda_validator().iter_errors(doc)]
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{where}: {'.'.join(map(str, e.path))}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [f"{where}: {e.message}"]
    return []


# -- the project's rules ------------------------------------------------------------------------------

def engine_settings(workload: dict[str, Any]) -> tuple[Settings, dict[str, str]]:
    """The engine's settings in a workload's first container (secrets as placeholders) and its literal env."""
    env = workload["spec"]["template"]["spec"]["containers"][0].get("env") or []
    literal = {e["name"]: e["value"] for e in env if "value" in e}
    from_refs = {e["name"]: "from-a-reference" for e in env if "valueFrom" in e}
    return Settings.from_env({**literal, **from_refs}), literal


def problems(files: dict[str, list[dict[str, Any]]]) -> list[str]:
    out: list[str] = []
    docs = [d for ds in files.values() for d in ds]
    by_kind: dict[tuple[str, str], dict[str, Any]] = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    text = yaml.safe_dump_all(docs)
    if "rocksdb://" in text or "CX_TABLE_STORE" in text:
        out.append("CX_TABLE_STORE/rocksdb:// is set: no table uses the Faust store (and rocksdict is not installed)")
    for name, ds in files.items():
        if "keda" not in name and any(d["apiVersion"].startswith("keda.sh/") for d in ds):
            out.append(f"{name}: holds a KEDA object: the plain manifests must apply on a cluster without KEDA")

    workloads = [d for d in docs if d["kind"] in ("StatefulSet", "Deployment")]
    if not workloads:
        out.append("no engine workload (StatefulSet or Deployment)")
    services = [d for d in docs if d["kind"] == "Service"]
    for w in workloads:
        name = w["metadata"]["name"]
        labels = w["spec"]["template"]["metadata"].get("labels") or {}
        if w["spec"]["selector"].get("matchLabels", {}).items() - labels.items():
            out.append(f"{name}: its selector does not match its pods' labels")
        if w["kind"] == "StatefulSet" and ("Service", w["spec"].get("serviceName")) not in by_kind:
            out.append(f"{name}: serviceName {w['spec'].get('serviceName')!r} is no Service of these files")
        known = {n for n, _, _ in Settings.documented()}
        env = w["spec"]["template"]["spec"]["containers"][0].get("env") or []
        out += [f"{name}: {e['name']} is no setting of the engine" for e in env
                if e["name"].startswith("CX_") and e["name"] not in known]
        if any(e["name"] == "CX_API_KEYS" and "valueFrom" not in e for e in env):
            out.append(f"{name}: CX_API_KEYS is written in the manifest: take it from a Secret")
        try:
            engine_settings(w)
        except ValueError as exc:
            out.append(f"{name}: {exc}")
        container = w["spec"]["template"]["spec"]["containers"][0]
        live = ((container.get("livenessProbe") or {}).get("httpGet") or {}).get("path")
        if live != "/livez":  # /healthz needs Redis: a Redis outage longer than the probe's window restarted every engine
            out.append(f"{name}: the liveness probe asks {live!r}, not /livez (an outage of Redis must not restart the engines)")
    for s in services:
        if not any(s["spec"].get("selector", {}).items() <= (w["spec"]["template"]["metadata"].get("labels") or {}).items()
                   for w in workloads):
            out.append(f"Service {s['metadata']['name']}: its selector matches no workload's pods")

    scaled = [d for d in docs if d["kind"] == "ScaledObject"]
    if not scaled:
        out.append("no KEDA ScaledObject: nothing scales the engine on consumer lag")
    for so in scaled:
        out += scaled_object_problems(so, by_kind)
    return out


def scaled_object_problems(so: dict[str, Any], by_kind: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    spec = so["spec"]
    ref = spec["scaleTargetRef"]
    kind = ref.get("kind", "Deployment")
    target = by_kind.get((kind, ref["name"]))
    if target is None or target["apiVersion"] != ref.get("apiVersion", "apps/v1"):
        return [f"ScaledObject {so['metadata']['name']}: scales {kind}/{ref['name']}, which these files do not define"]
    out = []
    try:
        settings, env = engine_settings(target)
    except ValueError:
        return []  # reported with the workload
    if spec.get("pollingInterval", 30) > MAX_POLLING_S:  # 30 s is KEDA's default
        out.append(f"ScaledObject: pollingInterval {spec.get('pollingInterval', 30)} s is over {MAX_POLLING_S} s")
    lo, hi = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)  # KEDA's defaults
    if not 1 <= lo <= hi <= settings.partitions:
        out.append(f"ScaledObject: replicas {lo}..{hi} must be within 1..{settings.partitions} (CX_PARTITIONS)")
    up = ((spec.get("advanced") or {}).get("horizontalPodAutoscalerConfig") or {}).get("behavior", {}).get("scaleUp", {})
    if up.get("stabilizationWindowSeconds", 0) > MAX_POLLING_S:
        out.append("ScaledObject: the HPA's scale-up stabilization window delays a scale-out")
    group = BatchRuntime(settings.broker_url, settings).group_id
    inputs = {settings.topic_prefix + t.name for t in topics.INPUTS}
    seen = set()
    for trig in spec["triggers"]:
        md = trig.get("metadata") or {}
        name = trig.get("name", trig["type"])
        if trig["type"] != "kafka":
            out.append(f"trigger {name}: type {trig['type']}, not kafka (consumer lag)")
            continue
        out += [f"trigger {name}: {k} is no option of KEDA's kafka scaler" for k in sorted(set(md) - KAFKA_TRIGGER_KEYS)]
        if md.get("consumerGroup") != group:
            out.append(f"trigger {name}: consumerGroup {md.get('consumerGroup')!r}, but the stages' group is {group!r}")
        if md.get("bootstrapServers") != env.get("CX_BROKER_URL"):
            out.append(f"trigger {name}: bootstrapServers {md.get('bootstrapServers')!r} is not the engine's CX_BROKER_URL")
        if md.get("topic") not in inputs:
            out.append(f"trigger {name}: topic {md.get('topic')!r} is not an input topic {sorted(inputs)}")
        seen.add(md.get("topic"))
        if not str(md.get("lagThreshold", "")).isdigit() or int(md["lagThreshold"]) < 1:
            out.append(f"trigger {name}: lagThreshold {md.get('lagThreshold')!r} is not a positive whole number")
        if md.get("offsetResetPolicy", "latest") != "earliest":
            out.append(f"trigger {name}: offsetResetPolicy must be 'earliest', as the engine's consumer")
        if md.get("allowIdleConsumers", "false") != "false":
            out.append(f"trigger {name}: allowIdleConsumers lets replicas outnumber partitions")
    out += [f"ScaledObject: no trigger on the lag of input topic {t}" for t in sorted(inputs - seen)]
    return out


# -- tests ---------------------------------------------------------------------------------------

def test_every_manifest_is_valid_against_its_schema() -> None:
    files = manifests()
    assert {"engine.yaml", "keda-scaledobject.yaml"} <= set(files)
    kinds = {d["kind"] for ds in files.values() for d in ds}
    assert {"StatefulSet", "Service", "ScaledObject"} <= kinds
    errors = [e for ds in files.values() for d in ds for e in schema_errors(d)]
    assert errors == []


def test_manifests_follow_the_project_rules() -> None:
    assert problems(manifests()) == []


def _doc(files: dict[str, list[dict[str, Any]]], kind: str) -> dict[str, Any]:
    return next(d for ds in files.values() for d in ds if d["kind"] == kind)


def _container(files: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return _doc(files, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]


def _trigger(files: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return _doc(files, "ScaledObject")["spec"]["triggers"][0]


SCHEMA_BREAKS = {
    "misspelt StatefulSet field": lambda f: _doc(f, "StatefulSet")["spec"].update(replica=2),
    "replicas as a string": lambda f: _doc(f, "StatefulSet")["spec"].update(replicas="2"),
    "misspelt env field": lambda f: _container(f)["env"][0].update(valu="x"),
    "port as a string": lambda f: _doc(f, "Service")["spec"]["ports"][0].update(port="8080"),
    "unknown pod management policy key": lambda f: _doc(f, "StatefulSet")["spec"].update(podManagement="Parallel"),
    "missing containers": lambda f: _doc(f, "StatefulSet")["spec"]["template"]["spec"].pop("containers"),
    "misspelt ScaledObject field": lambda f: _doc(f, "ScaledObject")["spec"].update(pollingIntervall=10),
    "ScaledObject without triggers": lambda f: _doc(f, "ScaledObject")["spec"].pop("triggers"),
    "lagThreshold not a string": lambda f: _trigger(f)["metadata"].update(lagThreshold=1000),
    "bad metricType": lambda f: _trigger(f).update(metricType="Average"),
    "misspelt HPA behavior field": lambda f: _doc(f, "ScaledObject")["spec"]["advanced"][
        "horizontalPodAutoscalerConfig"]["behavior"]["scaleUp"].update(stabilisationWindowSeconds=0),
    "misspelt ScaledObject metadata field": lambda f: _doc(f, "ScaledObject")["metadata"].update(label={}),
    "pollingInterval as a string": lambda f: _doc(f, "ScaledObject")["spec"].update(pollingInterval="10"),
}


@pytest.mark.parametrize("name", sorted(SCHEMA_BREAKS))
def test_the_schemas_reject_a_broken_manifest(name: str) -> None:
    files = copy.deepcopy(manifests())
    SCHEMA_BREAKS[name](files)
    assert [e for ds in files.values() for d in ds for e in schema_errors(d)], f"{name}: not caught"


def _env(files: dict[str, list[dict[str, Any]]], name: str, value: str) -> None:
    env = _container(files)["env"]
    env[:] = [e for e in env if e["name"] != name] + [{"name": name, "value": value}]


RULE_BREAKS = {
    "rocksdb table store": lambda f: _env(f, "CX_TABLE_STORE", "rocksdb://"),
    "liveness on /healthz": lambda f: _container(f)["livenessProbe"]["httpGet"].update(path="/healthz"),
    "unknown setting": lambda f: _env(f, "CX_PARTITIONZ", "8"),
    "setting of the wrong type": lambda f: _env(f, "CX_PARTITIONS", "eight"),
    "API key written in the manifest": lambda f: _env(f, "CX_API_KEYS", "change-me"),
    "fewer partitions than replicas": lambda f: _env(f, "CX_PARTITIONS", "4"),
    "another app id": lambda f: _env(f, "CX_APP_ID", "cx-prod"),
    "a topic prefix": lambda f: _env(f, "CX_TOPIC_PREFIX", "prod."),
    "broker elsewhere": lambda f: _env(f, "CX_BROKER_URL", "kafka-0.kafka:9092"),
    "KEDA object in the plain manifest": lambda f: f["engine.yaml"].append(_doc(f, "ScaledObject")),
    "no ScaledObject": lambda f: f.pop("keda-scaledobject.yaml"),
    "scales a missing workload": lambda f: _doc(f, "ScaledObject")["spec"]["scaleTargetRef"].update(name="engine"),
    "scales a Deployment": lambda f: _doc(f, "ScaledObject")["spec"]["scaleTargetRef"].update(kind="Deployment"),
    "slow polling": lambda f: _doc(f, "ScaledObject")["spec"].update(pollingInterval=30),
    "default polling": lambda f: _doc(f, "ScaledObject")["spec"].pop("pollingInterval"),
    "more replicas than partitions": lambda f: _doc(f, "ScaledObject")["spec"].update(maxReplicaCount=12),
    "min above max": lambda f: _doc(f, "ScaledObject")["spec"].update(minReplicaCount=9),
    "scale-up held back": lambda f: _doc(f, "ScaledObject")["spec"]["advanced"]["horizontalPodAutoscalerConfig"][
        "behavior"]["scaleUp"].update(stabilizationWindowSeconds=120),
    "Faust's group instead of the stages'": lambda f: _trigger(f)["metadata"].update(consumerGroup="cxstream"),
    "an internal topic": lambda f: _trigger(f)["metadata"].update(topic="cx.routing.v1"),
    "one input topic without a trigger": lambda f: _doc(f, "ScaledObject")["spec"]["triggers"].pop(),
    "misspelt trigger option": lambda f: _trigger(f)["metadata"].update(lagTreshold="10"),
    "zero lagThreshold": lambda f: _trigger(f)["metadata"].update(lagThreshold="0"),
    "latest offset reset": lambda f: _trigger(f)["metadata"].update(offsetResetPolicy="latest"),
    "idle consumers": lambda f: _trigger(f)["metadata"].update(allowIdleConsumers="true"),
    "a CPU trigger": lambda f: _trigger(f).update(type="cpu"),
    "service selects nothing": lambda f: _doc(f, "Service")["spec"].update(selector={"app": "cx"}),
    "selector not matching the pods": lambda f: _doc(f, "StatefulSet")["spec"]["selector"].update(
        matchLabels={"app": "other"}),
    "serviceName of no Service": lambda f: _doc(f, "StatefulSet")["spec"].update(serviceName="engine"),
}


@pytest.mark.parametrize("name", sorted(RULE_BREAKS))
def test_the_project_rules_catch_a_broken_manifest(name: str) -> None:
    files = copy.deepcopy(manifests())
    RULE_BREAKS[name](files)
    assert problems(files), f"{name}: not caught"


def test_the_engine_takes_its_key_from_the_secret() -> None:
    env = {e["name"]: e for e in _container(manifests())["env"]}
    assert env["CX_API_KEYS"]["valueFrom"]["secretKeyRef"] == {"name": "cxstream", "key": "api-keys"}


def test_the_engine_can_take_transport_security_from_a_configmap_and_a_secret_mounted_as_files() -> None:
    """Optional: without the ConfigMap and the Secret cxstream-transport the pods start as before (plaintext)."""
    sts = _doc(manifests(), "StatefulSet")
    pod, container = sts["spec"]["template"]["spec"], _container(manifests())
    assert {"configMapRef": {"name": "cxstream-transport", "optional": True}} in container["envFrom"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "transport"]
    assert volume["secret"] == {"secretName": "cxstream-transport", "optional": True, "defaultMode": 0o440}
    assert {"name": "transport", "mountPath": "/etc/cxstream/transport", "readOnly": True} in container["volumeMounts"]
    # mode 0440 files are readable by the engine only through its group: the image's user (Dockerfile) and fsGroup
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"] == 10001
    assert "--uid 10001" in (ROOT / "Dockerfile").read_text()
