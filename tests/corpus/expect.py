"""From what the apps counted of themselves (truth.jsonl) and what their SDKs exported
(export-NNNN.pb) to expect.json, what a correct analysis of the exports must say; and a report
of the span shapes in the exports.

Reading the exports needs `opentelemetry-proto` (in python/requirements.txt).

Invariant: every verdict comes from the apps' own counts, never from the spans; the spans only
name the endpoints (as the SDK does) and locate the requests.
"""

from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def captured_spans(export_dir):
    """Every span in the exports under `export_dir`, as dicts, with the number of the export it
    came in (`export`), its service and the attributes that matter here."""
    spans = []
    for path in sorted(Path(export_dir).glob("export-*.pb")):
        request = ExportTraceServiceRequest()
        request.ParseFromString(path.read_bytes())
        export = int(path.stem.split("-")[1])
        for resource_spans in request.resource_spans:
            resource = {a.key: any_value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(
                        {
                            "export": export,
                            "service": resource.get("service.name"),
                            "instance": resource.get("service.instance.id"),
                            "pid": resource.get("process.pid"),
                            "scope": scope_spans.scope.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "name": span.name,
                            "kind": span.kind,
                            "start_ns": span.start_time_unix_nano,
                            "end_ns": span.end_time_unix_nano,
                            "attributes": {a.key: any_value(a.value) for a in span.attributes},
                            "links": [link.span_id.hex() for link in span.links],
                        }
                    )
    return spans


def any_value(value):
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, which)


#: SpanKind numbers of the OTLP protobuf.
KIND_NAMES = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
SERVER = 2
CONSUMER = 5


def shapes(spans, records):
    """What the exports show of the shapes issue 30 lists: root spans that are no request (by
    service, kind and name), requests whose root span arrived in a later export than a span under
    it from its own process or from another one (by endpoint and trace id), spans that end after
    their parent (by kind and name), and requests with a SERVER span under their root in their own
    process."""
    by_id = {(s["trace_id"], s["span_id"]): s for s in spans}
    request_ids = {(r["trace_id"], r["span_id"]) for r in records if r["kind"] in ("request", "consumer")}
    roots_not_requests = {}
    for span in spans:
        if span["parent_span_id"] or (span["trace_id"], span["span_id"]) in request_ids:
            continue
        key = f'{span["service"]}: {KIND_NAMES[span["kind"]]} {span["name"]}'
        roots_not_requests[key] = roots_not_requests.get(key, 0) + 1
    late_roots = {"same_process": [], "other_process": []}
    two_servers = []
    for record in records:
        if record["kind"] not in ("request", "consumer"):
            continue
        root = by_id[(record["trace_id"], record["span_id"])]
        below = descendants(spans, root)
        own = [s for s in below if process_of(s) == process_of(root)]
        label = f'{record["endpoint"]} {record["trace_id"]}'
        if own and root["export"] > min(s["export"] for s in own):
            late_roots["same_process"].append(label)
        elif below and root["export"] > min(s["export"] for s in below):
            late_roots["other_process"].append(label)
        if any(s["kind"] == SERVER for s in own):
            two_servers.append(label)
    outliving = {}
    for span in spans:
        parent = by_id.get((span["trace_id"], span["parent_span_id"]))
        if parent is not None and span["end_ns"] > parent["end_ns"]:
            key = f'{KIND_NAMES[span["kind"]]} {span["name"]} under {KIND_NAMES[parent["kind"]]} {parent["name"]}'
            outliving[key] = outliving.get(key, 0) + 1
    return {
        "exports": len({s["export"] for s in spans}),
        "spans": len(spans),
        "roots_not_requests": dict(sorted(roots_not_requests.items())),
        "late_roots": late_roots,
        "children_ending_after_parent": dict(sorted(outliving.items())),
        "requests_with_two_server_spans": two_servers,
    }


def descendants(spans, root):
    """The spans under `root`, in any process."""
    children = {}
    for span in spans:
        if span["trace_id"] == root["trace_id"]:
            children.setdefault(span["parent_span_id"], []).append(span)
    found, stack = [], [root["span_id"]]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child["span_id"])
    return found


def process_of(span):
    """What tells one process from another in a resource: its instance id or its pid."""
    return (span["service"], span["instance"], span["pid"])


def span_tree(spans, trace_id, root_span_id):
    """The spans of one trace from `root_span_id` down, indented, siblings in start order."""
    children = {}
    for span in spans:
        if span["trace_id"] == trace_id:
            children.setdefault(span["parent_span_id"], []).append(span)
    lines = []

    def walk(span_id, depth):
        for span in sorted(children.get(span_id, []), key=lambda s: s["start_ns"]):
            lines.append(f'{"  " * depth}{KIND_NAMES[span["kind"]]} {span["name"]} [{span["service"]}]')
            walk(span["span_id"], depth + 1)

    root = next(s for s in spans if s["trace_id"] == trace_id and s["span_id"] == root_span_id)
    lines.append(f'{KIND_NAMES[root["kind"]]} {root["name"]} [{root["service"]}]')
    walk(root_span_id, 1)
    return lines


def name_endpoints(records, spans):
    """Checks that each request's and task's span was captured, and names each as the SDK did:
    a request by its method and `http.route` (the app's own route must agree), a consumer by its
    span's name. Returns the records sorted by start."""
    by_id = {(s["trace_id"], s["span_id"]): s for s in spans}
    for record in records:
        if record["kind"] not in ("request", "consumer"):
            continue
        span = by_id.get((record["trace_id"], record["span_id"]))
        if span is None:
            raise RuntimeError(f"no span captured for {record['kind']} {record.get('endpoint')} {record['trace_id']}")
        wanted = SERVER if record["kind"] == "request" else CONSUMER
        if span["kind"] != wanted:
            raise RuntimeError(f"{record['kind']} {record['trace_id']} has a {KIND_NAMES[span['kind']]} span")
        record["span_name"] = span["name"]
        if record["kind"] == "consumer":
            record["endpoint"] = span["name"]
            continue
        route = span["attributes"].get("http.route")
        method = span["attributes"].get("http.request.method") or span["attributes"].get("http.method")
        if route is not None and f"{method} {route}" != record["endpoint"]:
            raise RuntimeError(f"the SDK names {record['endpoint']} {method} {route}")
    return sorted(records, key=lambda r: r["start_unix_ns"])


def is_read(sql):
    return sql.lstrip().upper().startswith("SELECT")


#: An N+1 is a statement run this many times or more in one request, each time with other values.
N_PLUS_ONE_MIN = 5


def n_plus_one(record):
    """What one request's statements say of an N+1: must (a SELECT text ran N_PLUS_ONE_MIN times
    or more with distinct values), must_not (no text ran more than twice), or may."""
    runs = {}
    for statement in record["statements"]:
        runs.setdefault(statement["sql"], []).append(statement["params"])
    if any(is_read(sql) and len(params) >= N_PLUS_ONE_MIN and len(set(params)) == len(params) for sql, params in runs.items()):
        return "must"
    if all(len(params) <= 2 for params in runs.values()):
        return "must_not"
    return "may"


def duplicate(record):
    """What one request's statements say of a duplicate ("reuse the first result"): must (the same
    SELECT ran again with the same values, all of them in its text, so the trace shows them),
    must_not (no SELECT ran twice with the same values; writes never count), or may (the same
    values went as parameters, which the trace does not show)."""
    seen = set()
    repeats = []
    for statement in record["statements"]:
        key = (statement["sql"], statement["params"])
        if key in seen and is_read(statement["sql"]):
            repeats.append(statement)
        seen.add(key)
    if not repeats:
        return "must_not"
    if any(statement["params"] is None for statement in repeats):
        return "must"
    return "may"


def detached(record):
    """The work a request started and did not wait for: calls not awaited, and messages whose
    publishing ended (on the broker's confirmation) after the response had gone."""
    late_confirmations = sum(1 for message in record["published"] if message.get("confirmed_after_request"))
    return record["not_awaited_calls"] + late_confirmations


def agreed(verdicts):
    """One verdict for an endpoint: its requests' verdict when they all agree, else may."""
    return verdicts[0] if len(set(verdicts)) == 1 else "may"


def per_request(values):
    return round(sum(values) / len(values), 3)


def expectations(app, records, spans, intent):
    """expect.json: per endpoint, what a correct analysis must say, from what the app counted."""
    groups = {}
    for record in records:
        if record["kind"] in ("request", "consumer"):
            groups.setdefault(record["endpoint"], []).append(record)
    endpoints = {}
    services = {}
    for endpoint, group in sorted(groups.items()):
        calls = [r["db_calls"] for r in group]
        statement_counts = {}
        for r in group:
            for statement in r["statements"]:
                statement_counts[statement["sql"]] = statement_counts.get(statement["sql"], 0) + 1
        entry = {
            "service": group[0]["service"],
            "kind": "consumer" if group[0]["kind"] == "consumer" else "server",
            "requests": len(group),
            "db_calls_per_request": per_request(calls),
            "db_calls_min": min(calls),
            "db_calls_max": max(calls),
            "statements_per_request": {sql: round(n / len(group), 3) for sql, n in statement_counts.items()},
            "pool_checkouts_per_request": per_request([r["pool_checkouts"] for r in group]),
            "cache_ops_per_request": per_request([len(r["cache"]) for r in group]),
            "awaited_calls_per_request": per_request([r["awaited_calls"] for r in group]),
            "not_awaited_calls_per_request": per_request([r["not_awaited_calls"] for r in group]),
            "published_per_request": per_request([len(r["published"]) for r in group]),
            "detached_per_request": per_request([detached(r) for r in group]),
            "n_plus_one": agreed([n_plus_one(r) for r in group]),
            "duplicate": agreed([duplicate(r) for r in group]),
            "network_on_critical_path": agreed(["must" if r["awaited_calls"] else "must_not" for r in group]),
        }
        entry.update(intent.get(endpoint, {}))
        endpoints[endpoint] = entry
        services.setdefault(entry["service"], []).append(endpoint)
    outside = {}
    for record in records:
        if record["kind"] in ("startup", "background"):
            key = f'{record["service"]} {record["process"]} {record["kind"]}'
            outside[key] = {"db_calls": record["db_calls"], "cache_ops": len(record["cache"])}
    return {
        "app": app,
        "request_endpoints": services,
        "endpoints": endpoints,
        "not_requests": outside,
        "capture": shapes(spans, records),
    }


def examples(spans, records):
    """The span tree of each endpoint's first request, for the driver's report."""
    seen = set()
    trees = {}
    for record in records:
        if record["kind"] not in ("request", "consumer") or record["endpoint"] in seen:
            continue
        seen.add(record["endpoint"])
        trees[record["endpoint"]] = span_tree(spans, record["trace_id"], record["span_id"])
    return trees
