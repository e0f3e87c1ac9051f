"""The committed CRDs are what the models generate, and what they generate is structural."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from videoqueue.api.crds import KINDS, ResourceKind, build_crds, crd_manifest, main, stale_files
from videoqueue.api.schema import Schema, walk

CRD_DIR = Path(__file__).resolve().parents[3] / "crds"


def test_committed_crds_match_the_models() -> None:
    stale = stale_files(CRD_DIR)

    assert not stale, "CRDs are stale; run `make manifests`:\n" + "\n".join(stale.values())


def test_check_fails_with_a_diff_when_files_are_stale(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    assert main(["--check", "--out", str(tmp_path)]) == 0

    stale = tmp_path / "videoqueue.dev_videojobs.yaml"
    stale.write_text(stale.read_text().replace("maxItems: 20", "maxItems: 21"))
    capsys.readouterr()

    assert main(["--check", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr()
    assert "-                maxItems: 21" in out.out
    assert "+                maxItems: 20" in out.out
    assert "videoqueue.dev_videojobs.yaml" in out.err


def test_generated_files_parse_to_the_manifests() -> None:
    files = build_crds()

    for kind in KINDS:
        assert yaml.safe_load(files[kind.file_name]) == crd_manifest(kind)


def schema_of(kind: ResourceKind) -> Schema:
    schema: Schema = crd_manifest(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def nodes(kind: ResourceKind) -> list[Schema]:
    found: list[Schema] = []
    walk(schema_of(kind), found.append)
    return found


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_schema_is_structural(kind: ResourceKind) -> None:
    for node in nodes(kind):
        assert not {"$ref", "$defs", "allOf", "oneOf", "title", "nullable"} & node.keys(), node
        assert node.get("type") != "null"
        if "anyOf" in node:
            assert node["x-kubernetes-int-or-string"] is True
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}]
        elif not node.get("x-kubernetes-preserve-unknown-fields"):
            assert "type" in node, node
        assert node.get("default", 0) is not None
        if isinstance(node.get("exclusiveMinimum"), bool):
            assert "minimum" in node


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_status_has_no_defaults(kind: ResourceKind) -> None:
    status: Schema = schema_of(kind)["properties"]["status"]
    found: list[Schema] = []
    walk(status, found.append)

    assert not [n for n in found if "default" in n]


def resolve(schema: Schema, json_path: str) -> Schema | None:
    node: Schema | None = schema
    for part in json_path.strip(".").split("."):
        node = (node or {}).get("properties", {}).get(part)
    return node


@pytest.mark.parametrize(
    ("kind", "column"),
    [(k, c) for k in KINDS for c in k.columns if not c.json_path.startswith(".metadata")],
    ids=lambda v: getattr(v, "kind", None) or getattr(v, "name", ""),
)
def test_printer_columns_point_at_fields_of_their_type(kind: ResourceKind, column: Any) -> None:
    field = resolve(schema_of(kind), column.json_path)

    assert field is not None, f"{column.json_path} is not in the {kind.kind} schema"
    assert field["type"] == column.type


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_names(kind: ResourceKind) -> None:
    names = crd_manifest(kind)["spec"]["names"]

    assert names["shortNames"] == [{"VideoQueue": "vq", "VideoJob": "vj"}[kind.kind]]
    assert names["categories"] == ["videoqueue"]


def test_every_cel_rule_says_which_field_is_wrong() -> None:
    rules = [
        rule
        for kind in KINDS
        for node in nodes(kind)
        for rule in node.get("x-kubernetes-validations", [])
    ]

    assert len(rules) >= 10
    for rule in rules:
        message = rule["message"]
        # Field-level quantity rules get their path from the API server's error prefix.
        assert message.startswith(("spec.", "metadata.name", "must be a positive")), message


def test_job_and_queue_schemas_carry_the_key_rules() -> None:
    job = schema_of(next(k for k in KINDS if k.kind == "VideoJob"))
    spec = job["properties"]["spec"]["properties"]

    assert spec["queueName"]["x-kubernetes-validations"][0]["rule"] == "self == oldSelf"
    assert spec["priority"] == {
        "default": 5,
        "description": spec["priority"]["description"],
        "maximum": 10,
        "minimum": 0,
        "type": "integer",
    }
    assert spec["dependsOn"]["x-kubernetes-list-type"] == "set"
    assert spec["startAfter"]["format"] == "date-time"
    # Any JSON value per param, within bounds (the values have no type to declare).
    assert spec["params"]["maxProperties"] == 32
    assert spec["params"]["additionalProperties"]["x-kubernetes-preserve-unknown-fields"] is True
    conditions = job["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert "self.metadata.name in self.spec.dependsOn" in str(job["x-kubernetes-validations"])
