#!/usr/bin/env bash
# The OpenAPI document and the controller's route table must list the same
# routes, public routes must say `security: []`, and the file must pass a real
# linter (@redocly/cli, pinned in tests/node/package-lock.json).
# usage: test-openapi.sh CONTROLLER_BIN SOURCE_ROOT TAP_FILE
set -uo pipefail
bin=$1 src=$2 tap=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0 failed=0
: > "$tap"
result() { # result ok|not-ok name [diagnostic]
        n=$((n + 1))
        if [ "$1" = ok ]; then echo "ok $n - $2" >> "$tap"; else
                echo "not ok $n - $2" >> "$tap"; failed=1
                [ -n "${3:-}" ] && sed 's/^/# /' <<< "$3" >> "$tap" && echo "$3" >&2
        fi
}

redocly=$src/tests/node/node_modules/.bin/redocly
if [ ! -x "$redocly" ]; then
        result not-ok "redocly is installed" "missing $redocly: run ./scripts/install-deps.sh"
        echo "1..$n" >> "$tap"; exit 1
fi

out=$(cd "$src" && "$redocly" lint --config redocly.yaml docs/openapi.yaml 2>&1)
if [ $? -eq 0 ] && ! grep -q "warning" <<< "$out"; then result ok "redocly lint passes without warnings"
else result not-ok "redocly lint passes without warnings" "$out"; fi

if ! (cd "$src" && "$redocly" bundle docs/openapi.yaml --ext json -o "$tmp/openapi.json" > /dev/null 2>&1); then
        result not-ok "openapi bundles to JSON"
        echo "1..$n" >> "$tap"; exit 1
fi
"$bin" routes > "$tmp/routes.json" || { result not-ok "controller prints its route table"; echo "1..$n" >> "$tap"; exit 1; }

cmp=$(python3 - "$tmp/routes.json" "$tmp/openapi.json" <<'PY'
import json, sys
routes = json.load(open(sys.argv[1]))
spec = json.load(open(sys.argv[2]))
table = {(r["method"].lower(), r["path"]): r for r in routes}
documented = {}
for path, item in spec["paths"].items():
    for method, op in item.items():
        if method in ("get", "post", "put", "patch", "delete"):
            documented[(method, path)] = op
problems = []
for k in sorted(set(table) - set(documented)):
    problems.append(f"route missing from docs/openapi.yaml: {k[0].upper()} {k[1]}")
for k in sorted(set(documented) - set(table)):
    problems.append(f"documented but not in the route table: {k[0].upper()} {k[1]}")
for k in sorted(set(table) & set(documented)):
    public = table[k]["public"]
    doc_public = documented[k].get("security", spec.get("security")) == []
    if public != doc_public:
        problems.append(f"{k[0].upper()} {k[1]}: route table says public={public}, openapi says public={doc_public}")
print("\n".join(problems))
PY
)
if [ -z "$cmp" ]; then result ok "route table and openapi list the same routes with the same public/authenticated split"
else result not-ok "route table and openapi list the same routes with the same public/authenticated split" "$cmp"; fi

echo "1..$n" >> "$tap"
exit $failed
