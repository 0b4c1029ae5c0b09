#!/usr/bin/env python3
"""Checks the Helm chart without a cluster:

  1. `helm lint` (Helm v4's library through helm-sdkpy) on the chart with its default values and
     with each ci/*-values.yaml (merged onto the defaults in a copy of the chart, as `-f` would);
  2. values.yaml and each ci/*-values.yaml against values.schema.json (jsonschema), and
     wrong-typed values refused by it.

Prints one line per check and exits non-zero on the first failure. Used by tests/helm.rs.
"""
import asyncio, copy, json, pathlib, shutil, sys, tempfile

import jsonschema
import yaml

CHART = pathlib.Path(__file__).resolve().parent.parent / "helm" / "modelslab-sentinel"


def merge(base, over):
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def lint(chart_dir):
    from helm_sdkpy import Configuration
    from helm_sdkpy.chart import Lint
    result = asyncio.run(Lint(Configuration()).run(str(chart_dir)))
    # Helm's lint severities: 1 info, 2 warning, 3 error.
    failed = result.get("Errors") or [m for m in result.get("Messages") or [] if m.get("Severity", 0) >= 2]
    return result, failed


def main():
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    cases = [("values.yaml", defaults)]
    for f in sorted((CHART / "ci").glob("*-values.yaml")):
        cases.append((f"ci/{f.name}", merge(defaults, yaml.safe_load(f.read_text()) or {})))
    for name, values in cases:
        jsonschema.validate(values, schema)
        print(f"schema ok: {name}")
        with tempfile.TemporaryDirectory() as d:
            copy_dir = pathlib.Path(d) / "modelslab-sentinel"
            shutil.copytree(CHART, copy_dir)
            (copy_dir / "values.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
            result, failed = lint(copy_dir)
            if failed:
                print(f"helm lint FAILED: {name}: {json.dumps(result)}")
                sys.exit(1)
            print(f"helm lint ok: {name}")
    for bad, why in [({"replicaCount": "two"}, "replicaCount as a string"),
                     ({"image": {"pullPolicy": "Sometimes"}}, "an unknown pullPolicy"),
                     ({"config": {"telemetry": {"log_level": "loud"}}}, "an unknown log level"),
                     ({"config": {"probes": [{"name": "Bad Name", "request": {"path": "/x"}}]}}, "a bad probe name"),
                     ({"serviceMonitor": {"enabled": "yes"}}, "a string for a boolean"),
                     ({"colour": "blue"}, "an unknown top-level key")]:
        try:
            jsonschema.validate(merge(defaults, bad), schema)
        except jsonschema.ValidationError:
            print(f"schema refuses: {why}")
            continue
        print(f"schema FAILED to refuse {why}")
        sys.exit(1)


if __name__ == "__main__":
    main()
