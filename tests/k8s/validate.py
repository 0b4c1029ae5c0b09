#!/usr/bin/env python3
"""Validates Kubernetes objects against the Kubernetes API schemas of several versions, strictly
(unknown fields refused), with PyPI kubernetes-validate. Reads a JSON array of objects on stdin;
the versions are the arguments. Prints one line per object and version; exits 1 if any is
invalid. Used by tests/helm.rs."""
import json
import sys

import kubernetes_validate

failed = False
objects = json.load(sys.stdin)
for version in sys.argv[1:]:
    for obj in objects:
        name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
            print(f"valid {version}: {name}")
        except kubernetes_validate.ValidationError as e:
            failed = True
            path = "/".join(str(p) for p in e.path)
            print(f"invalid {version}: {name}: {path}: {e.message}")
        except Exception as e:  # noqa: BLE001 - a missing schema is a failure too
            failed = True
            print(f"error {version}: {name}: {e}")
sys.exit(1 if failed else 0)
