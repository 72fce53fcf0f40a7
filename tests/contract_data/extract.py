"""Regenerate the contract facts in this folder from the providers' published OpenAPI specs.

``python -m tests.contract_data.extract [SPEC_DIR]`` (default ``../shared/specs``; needs PyYAML from
the dev extra). The tests read only the JSON written here, so a fresh clone passes without the
specs; each file records the spec file, title, version and SHA-256 it came from.

What is kept per operation: method, path, operationId, parameters (name, where, required, schema),
the request body schema and each response's status, content type and schema; plus every component
schema. OpenAPI 3.0 ``nullable: true`` becomes a JSON Schema type union with ``"null"``, so one
JSON Schema validator (2020-12) checks both the 3.0 and the 3.1 specs.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).parent
SPECS = {
    "samsara-csv-api-openapi.yml": "samsara.json",
    "impact-brand-jobs-v14.yaml": "impact-brand-jobs.json",
    "impact-brand-reports-v14.yaml": "impact-brand-reports.json",
    "impact-partner-jobs-v16.yaml": "impact-partner-jobs.json",
    "impact-partner-reports-v16.yaml": "impact-partner-reports.json",
}
METHODS = ("get", "put", "post", "delete", "patch")


def json_schema(node: Any) -> Any:
    """OpenAPI schema → JSON Schema: ``nullable`` becomes a ``null`` type, the rest is kept."""
    if isinstance(node, list):
        return [json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: json_schema(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def operations(spec: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for path, item in spec.get("paths", {}).items():
        for method in METHODS:
            if method not in item:
                continue
            operation = item[method]
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            responses = {}
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                media = next(iter(content), None)
                responses[str(status)] = {
                    "content_type": media,
                    "schema": json_schema(content[media].get("schema")) if media else None,
                }
            found.append(
                {
                    "method": method.upper(),
                    "path": path,
                    "operationId": operation.get("operationId"),
                    "parameters": [
                        {
                            "name": p["name"],
                            "in": p["in"],
                            "required": bool(p.get("required", False)),
                            "schema": json_schema(p.get("schema", {})),
                        }
                        for p in operation.get("parameters", [])
                    ],
                    "request_body": json_schema(body),
                    "responses": responses,
                }
            )
    return found


def extract(spec_path: Path) -> dict[str, Any]:
    raw = spec_path.read_bytes()
    spec = yaml.safe_load(raw)
    return {
        "source": {
            "file": spec_path.name,
            "title": spec["info"]["title"],
            "version": str(spec["info"]["version"]),
            "openapi": spec["openapi"],
            "sha256": hashlib.sha256(raw).hexdigest(),
        },
        "operations": operations(spec),
        "components": {"schemas": json_schema(spec.get("components", {}).get("schemas", {}))},
    }


def main(argv: list[str]) -> None:
    spec_dir = Path(argv[0]) if argv else HERE.parents[2] / "shared" / "specs"
    for spec_name, out_name in SPECS.items():
        facts = extract(spec_dir / spec_name)
        (HERE / out_name).write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n")
        print(f"{out_name}: {len(facts['operations'])} operations from {spec_name} {facts['source']['version']}")


if __name__ == "__main__":
    main(sys.argv[1:])
