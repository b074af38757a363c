"""Every ``--json`` document of the CLI, taken from real runs against real sockets and
processes, is valid against the JSON Schema shipped in the package (render/schema.json)."""

from __future__ import annotations

import json
import os
from importlib import resources

import pytest

jsonschema = pytest.importorskip("jsonschema")

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/ns/net"), reason="Linux only")

SCHEMA = json.loads(resources.files("portscope.render").joinpath("schema.json").read_text())

LISTENER = """
    l = socket.socket(socket.AF_INET6); l.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    l.bind(("::", 0)); l.listen(); port = l.getsockname()[1]
    c = socket.create_connection(("127.0.0.1", port)); a, _ = l.accept()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
    kid = fork_sleeper()
    ready(port=port, udp=u.getsockname()[1], kid=kid)
"""


def validate(document: dict, definition: str) -> None:
    """Validate ``document`` against ``#/$defs/<definition>`` and against the whole schema
    (which says a document is exactly one of the defined documents)."""
    checker = jsonschema.FormatChecker()
    sub = jsonschema.Draft202012Validator({"$defs": SCHEMA["$defs"],
                                           "$ref": f"#/$defs/{definition}"},
                                          format_checker=checker)
    errors = sorted(sub.iter_errors(document), key=lambda e: list(e.absolute_path))
    assert not errors, [f"{list(e.absolute_path)}: {e.message[:300]}" for e in errors[:5]]
    jsonschema.Draft202012Validator(SCHEMA, format_checker=checker).validate(document)


def run_json(cli, *args: str, codes=(0,)) -> dict:
    result = cli(*args)
    assert result.returncode in codes, (args, result.returncode, result.stderr)
    return json.loads(result.stdout)


def test_schema_is_a_valid_2020_12_schema():
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_schema_rejects_what_the_model_forbids():
    """The schema is strict enough to catch drift: an unknown socket field, a port out of
    range, a lone surrogate-free string replaced by a number."""
    sock = {"proto": "tcp", "family": "ipv4", "local": {"address": "127.0.0.1", "port": 80},
            "remote": None, "state": "LISTEN", "inode": 1, "uid": 0, "netns": None,
            "v6only": None, "rx_queue_bytes": 0, "tx_queue_bytes": 0, "owners": [],
            "owner_unknown": "kernel", "cookie": None, "container": None, "published": None}
    defs = {"$defs": SCHEMA["$defs"], "$ref": "#/$defs/socket"}
    jsonschema.validate(sock, defs)
    for bad in ({**sock, "netns_id": 1}, {**sock, "local": {"address": "x", "port": 70000}},
                {**sock, "state": "LISTENING"}, {**sock, "owners": [{"pid": 1}]}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, defs)


def test_listings_are_valid(holder, cli):
    h = holder(LISTENER)
    port = str(h.info["port"])
    validate(run_json(cli, "--json"), "listing")
    doc = run_json(cli, port, "--json")
    validate(doc, "listing")
    assert doc["query"]["port"] == h.info["port"]
    listener = next(s for s in doc["sockets"] if s["state"] == "LISTEN")
    assert listener["accepted_connections"] == 1
    assert {o["pid"] for o in listener["owners"]} == {h.pid, h.info["kid"]}
    validate(run_json(cli, "list", "-a", "--json"), "listing")
    validate(run_json(cli, "list", "-u", "--port", str(h.info["udp"]), "--json"), "listing")
    validate(run_json(cli, "list", "-n", "-l", "--json"), "listing")
    validate(run_json(cli, "list", "-x", "-a", "--json"), "listing")
    validate(run_json(cli, "list", "-x", "-a", "--backend", "procfs", "--json"), "listing")


def test_diagnose_and_act_documents_are_valid(holder, cli):
    h = holder(LISTENER)
    port = str(h.info["port"])
    held = run_json(cli, "check", port, "--json", codes=(1,))
    validate(held, "check")
    assert held["bindable"] is False and held["blockers"]
    free = run_json(cli, "free", "--json")
    validate(free, "free")
    validate(run_json(cli, "check", str(free["ports"][0]), "--json"), "check")
    validate(run_json(cli, "explain", port, "--json"), "explain")
    validate(run_json(cli, "explain", str(h.pid), "--json"), "explain")
    validate(run_json(cli, "kill", port, "--dry-run", "--json"), "kill")
    # the accepted connection is closed by the server's end: TIME_WAIT keeps the port (exit 1)
    done = run_json(cli, "kill", port, "--yes", "--json", "--timeout", "5", codes=(1,))
    validate(done, "kill")
    assert done["freed"] is False and done["kernel_held"]
    assert {o["pid"] for o in done["outcomes"]} == {h.pid, h.info["kid"]}


def test_registry_and_audit_documents_are_valid(holder, cli):
    holder(LISTENER)
    validate(run_json(cli, "services", "https", "--json"), "services")
    validate(run_json(cli, "services", "60000", "--json", codes=(0, 1)), "services")
    validate(run_json(cli, "audit", "--json", "--fail-on", "high", codes=(0, 1, 4)), "audit")


def test_listing_of_several_namespaces_is_valid(cli):
    from netns import NetNS, can_use_netns
    if not can_use_netns():
        pytest.skip("needs root and ip(8) to create a network namespace")
    ns = NetNS()
    try:
        ns.holder("""
            l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(); ready()
        """)
        doc = run_json(cli, "--json", "--netns", "all")
        validate(doc, "listing")
        assert len(doc["namespaces"]) >= 2
    finally:
        ns.close()
