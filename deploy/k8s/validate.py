"""Offline checks of rendered manifests that need more than the Kubernetes schema (deploy/k8s.sh).

    validate.py crds CRD_DIR RENDERED.yaml...    every custom resource against its operator's CRD
    validate.py consistency RENDERED.yaml...     the Kafka topics agree with the services' settings
    validate.py builtins IN.yaml OUT.yaml        writes the built-in objects of IN to OUT

CRD validation: the resource is checked against the `openAPIV3Schema` of the version it names, made
strict as `kubectl apply --validate=strict` is (an unknown field is an error, not silently pruned
by the API server). What JSON Schema cannot express is left to the API server: CEL rules
(`x-kubernetes-validations`) and list-map keys.
"""

import copy
import glob
import sys

import jsonschema
import yaml

# API groups served by Kubernetes itself; everything else is a custom resource.
BUILTIN_GROUPS = {"", "apps", "autoscaling", "policy", "batch"}


def group_of(doc):
    api = doc["apiVersion"]
    return api.split("/")[0] if "/" in api else ""


def is_builtin(doc):
    group = group_of(doc)
    return group in BUILTIN_GROUPS or group.endswith(".k8s.io")


def load(paths):
    docs = []
    for path in paths:
        with open(path) as f:
            docs.extend(d for d in yaml.safe_load_all(f) if d)
    return docs


def strict(schema):
    """A copy of an OpenAPI v3 structural schema as JSON Schema that rejects unknown fields."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties"):
            out[key] = {name: strict(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = strict(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = strict(value)
        else:
            out[key] = copy.deepcopy(value)
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def crd_schemas(crd_dir):
    """(group, kind, version) -> strict JSON Schema, from every CRD file under crd_dir."""
    schemas = {}
    for path in sorted(glob.glob(f"{crd_dir}/**/*.yaml", recursive=True)):
        for crd in load([path]):
            if crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for version in spec["versions"]:
                if not version.get("served", True):
                    continue
                schema = version["schema"]["openAPIV3Schema"]
                schemas[(spec["group"], spec["names"]["kind"], version["name"])] = strict(schema)
    return schemas


def check_crds(crd_dir, paths):
    schemas = crd_schemas(crd_dir)
    failures = 0
    for path in paths:
        for doc in load(paths=[path]):
            if is_builtin(doc):
                continue
            group, version = doc["apiVersion"].split("/")
            name = f"{path}: {doc['kind']}/{doc['metadata']['name']} ({doc['apiVersion']})"
            schema = schemas.get((group, doc["kind"], version))
            if schema is None:
                print(f"FAIL {name}: no CRD schema for it in {crd_dir}")
                failures += 1
                continue
            errors = sorted(
                jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path)
            )
            for error in errors:
                where = ".".join(str(p) for p in error.absolute_path) or "(root)"
                print(f"FAIL {name}: {where}: {error.message}")
            failures += len(errors)
            if not errors:
                print(f"ok   {name}")
    return failures


def check_consistency(paths):
    """The KafkaTopics are the topics the services expect: the names their namespace gives, the
    partition count they hash documents onto, and the replication they would create them with."""
    failures = 0
    for path in paths:
        docs = load([path])
        config = {}
        for doc in docs:
            if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].startswith("tandem-config"):
                config = doc.get("data", {})
        topics = {
            d["spec"].get("topicName", d["metadata"]["name"]): d["spec"]
            for d in docs
            if d["kind"] == "KafkaTopic"
        }
        namespace = config.get("TANDEM_KAFKA_NAMESPACE", "tandem")
        for suffix in ("ops", "events"):
            topic = f"{namespace}.{suffix}"
            spec = topics.get(topic)
            if spec is None:
                print(f"FAIL {path}: no KafkaTopic {topic} (TANDEM_KAFKA_NAMESPACE={namespace})")
                failures += 1
                continue
            expected = {
                "partitions": ("TANDEM_PARTITIONS", spec.get("partitions")),
                "replicas": ("TANDEM_KAFKA_REPLICATION_FACTOR", spec.get("replicas")),
                "min.insync.replicas": (
                    "TANDEM_KAFKA_MIN_INSYNC_REPLICAS",
                    spec.get("config", {}).get("min.insync.replicas"),
                ),
            }
            for field, (variable, value) in expected.items():
                if str(value) != str(config.get(variable)):
                    print(f"FAIL {path}: KafkaTopic {topic} {field} is {value}, {variable} is {config.get(variable)}")
                    failures += 1
            if spec.get("config", {}).get("cleanup.policy") != "delete":
                print(f"FAIL {path}: KafkaTopic {topic} must have cleanup.policy delete")
                failures += 1
        if not failures:
            print(f"ok   {path}: KafkaTopics {sorted(topics)} match the services' settings")
    return failures


def main(argv):
    if len(argv) >= 3 and argv[1] == "crds":
        return 1 if check_crds(argv[2], argv[3:]) else 0
    if len(argv) >= 2 and argv[1] == "consistency":
        return 1 if check_consistency(argv[2:]) else 0
    if len(argv) == 4 and argv[1] == "builtins":
        with open(argv[3], "w") as out:
            yaml.safe_dump_all([d for d in load([argv[2]]) if is_builtin(d)], out)
        return 0
    print(__doc__, file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv))
