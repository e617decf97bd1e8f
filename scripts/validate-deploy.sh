#!/usr/bin/env bash
# Checks what ships to run engram-store in production, offline once its tools are installed:
# - deploy/k8s/*.yaml against the Kubernetes API schemas (PyPI `kubernetes-validate`, which
#   bundles them; installed into a venv of its own), strictly (unknown fields fail);
# - deploy/prometheus/*.yml with `promtool check config` (Debian's `prometheus` package; its
#   promtool has no Kubernetes discovery, so the Kubernetes scrape config is then checked as
#   YAML only, and said so);
# - the Grafana dashboard is JSON and names only metrics the server exports
#   (store/src/metrics/names.rs);
# - every `--flag` the manifests and the Dockerfile pass to `engram-store serve` is one it has;
# - memory requests cover the `--ram-cache` budget (at most 25% over it) and equal the limits.
# Environment: K8S_VERSION (default 1.30.0), DEPLOY_VENV (default target/deploy-venv),
# ENGRAM_STORE_BIN (default target/debug/engram-store, built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSION=${K8S_VERSION:-1.30.0}
VENV=${DEPLOY_VENV:-target/deploy-venv}
BIN=${ENGRAM_STORE_BIN:-target/debug/engram-store}
failed=0
fail() { echo "FAIL: $*"; failed=1; }

echo "== Kubernetes manifests against the $K8S_VERSION schemas (kubernetes-validate --strict)"
if [ ! -x "$VENV/bin/kubernetes-validate" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  "$VENV/bin/python" -m pip install -q "kubernetes-validate>=1.30"
fi
"$VENV/bin/kubernetes-validate" --strict -k "$K8S_VERSION" deploy/k8s/*.yaml || fail "kubernetes-validate"

echo "== memory requests cover --ram-cache"
"$VENV/bin/python" - <<'PY' || fail "memory requests"
import glob, re, sys, yaml
UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
         "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
def k8s_bytes(q):
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|k|M|G|T|)", str(q))
    if not m:
        sys.exit(f"memory quantity {q!r} is not bytes")
    return int(m[1]) * UNITS[m[2]]
def store_bytes(v):
    m = re.fullmatch(r"(\d+)(KiB|MiB|GiB|TiB|)", v)
    return int(m[1]) * {"": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}[m[2]]
checked = 0
for path in sorted(glob.glob("deploy/k8s/*.yaml")):
    for doc in yaml.safe_load_all(open(path)):
        spec = (doc or {}).get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("containers", []):
            budget = [a.split("=", 1)[1] for a in c.get("args", []) if a.startswith("--ram-cache=")]
            if not budget:
                continue
            ram = store_bytes(budget[0])
            res = c.get("resources", {})
            req = k8s_bytes(res.get("requests", {}).get("memory", "0"))
            lim = k8s_bytes(res.get("limits", {}).get("memory", "0"))
            if not ram < req <= ram * 1.25 or lim != req:
                sys.exit(f"{path}: --ram-cache {budget[0]} but memory request {req} B, limit {lim} B "
                         "(want a request above the budget, at most 25% more, and limit = request)")
            print(f"{path}: --ram-cache {budget[0]}, memory request {req / 2**30:.0f} GiB = limit")
            checked += 1
if not checked:
    sys.exit("no container with --ram-cache found")
PY

echo "== Prometheus scrape configs (promtool check config)"
if ! command -v promtool >/dev/null 2>&1; then
  fail "promtool not found (apt-get install -y prometheus)"
else
  promtool check config deploy/prometheus/scrape-static.yml || fail "scrape-static.yml"
  if out=$(promtool check config deploy/prometheus/scrape-kubernetes.yml 2>&1); then
    echo "$out"
  elif grep -q "kubernetes_sd_configs not found" <<<"$out"; then
    echo "NOTE: this promtool is built without Kubernetes discovery (Debian's is):" \
      "scrape-kubernetes.yml checked as YAML only"
    "$VENV/bin/python" - <<'PY' || fail "scrape-kubernetes.yml is not valid YAML"
import yaml
doc = yaml.safe_load(open("deploy/prometheus/scrape-kubernetes.yml"))
jobs = doc["scrape_configs"]
assert jobs and all("job_name" in j and "kubernetes_sd_configs" in j for j in jobs), jobs
print("scrape-kubernetes.yml: YAML ok,", len(jobs), "job(s)")
PY
  else
    echo "$out"
    fail "scrape-kubernetes.yml"
  fi
fi

echo "== Grafana dashboard names only exported metrics"
python3 - <<'PY' || fail "dashboard"
import json, re, sys
dash = json.load(open("deploy/grafana/engram-store-dashboard.json"))
exported = set(re.findall(r'"(engram_store_[a-z0-9_]+)"', open("store/src/metrics/names.rs").read()))
used = set()
for panel in dash["panels"]:
    for t in panel["targets"]:
        used.update(re.findall(r"engram_store_[a-z0-9_]+", t["expr"]))
bad = sorted(u for u in used if re.sub(r"_(bucket|sum|count)$", "", u) not in exported and u not in exported)
if bad:
    sys.exit(f"not exported: {bad}")
print(f"dashboard: {len(dash['panels'])} panels, {len(used)} metrics, all exported")
PY

echo "== flags given to 'engram-store serve' exist"
[ -x "$BIN" ] || cargo build -q -p engram-store
help=$("$BIN" serve --help)
# Flags of the containers that run `engram-store serve` (not etcd's, nor those in comments).
flags=$( ("$VENV/bin/python" - <<'PY'
import glob, re, yaml
for path in sorted(glob.glob("deploy/k8s/*.yaml")):
    for doc in yaml.safe_load_all(open(path)):
        spec = (doc or {}).get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("containers", []):
            args = c.get("args", [])
            if args[:1] == ["serve"]:
                for a in args[1:]:
                    m = re.match(r"--[a-z][a-z0-9-]+", a)
                    if m:
                        print(m[0])
PY
  grep -E '^CMD' Dockerfile | grep -oE -- '--[a-z][a-z0-9-]+') | sort -u)
for f in $flags; do
  grep -q -- "$f" <<<"$help" || fail "serve has no $f"
done
echo "serve flags used: $(echo $flags)"

if [ "$failed" = 0 ]; then echo "deploy: all checks passed"; else exit 1; fi
