#!/usr/bin/env python3
"""A minimal OTLP trace receiver for netrun's tests.

Listens on loopback for OTLP/gRPC (TraceService/Export) and OTLP/HTTP protobuf
(POST /v1/traces), and appends every received span as one JSON object per line to the
file given as the only argument. Once both listeners are up it prints one JSON line to
stdout: {"grpc": "http://127.0.0.1:P", "http": "http://127.0.0.1:Q"}.

Needs the PyPI packages grpcio and opentelemetry-proto (scripts/install-test-deps).
"""

import json
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as service
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as service_grpc

LOCK = threading.Lock()


def any_value(v):
    """An OTLP AnyValue as a plain JSON value (scalars only; others as their text form)."""
    kind = v.WhichOneof("value")
    if kind in ("string_value", "bool_value", "int_value", "double_value"):
        return getattr(v, kind)
    return str(v)


def attributes(kvs):
    return {kv.key: any_value(kv.value) for kv in kvs}


def record(request, out_path, transport):
    lines = []
    for rs in request.resource_spans:
        resource = attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for span in ss.spans:
                lines.append(json.dumps({
                    "transport": transport,
                    "resource": resource,
                    "scope": ss.scope.name,
                    "name": span.name,
                    "kind": span.kind,
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex(),
                    "attributes": attributes(span.attributes),
                    "events": [e.name for e in span.events],
                }))
    with LOCK, open(out_path, "a", encoding="utf-8") as out:
        for line in lines:
            out.write(line + "\n")


class TraceService(service_grpc.TraceServiceServicer):
    def __init__(self, out_path):
        self.out_path = out_path

    def Export(self, request, context):  # noqa: N802 (gRPC method name)
        record(request, self.out_path, "grpc")
        return service.ExportTraceServiceResponse()


def http_handler(out_path):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server naming)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            request = service.ExportTraceServiceRequest()
            request.ParseFromString(body)
            record(request, out_path, "http")
            reply = service.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    return Handler


def main():
    out_path = sys.argv[1]
    open(out_path, "a", encoding="utf-8").close()
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    service_grpc.add_TraceServiceServicer_to_server(TraceService(out_path), grpc_server)
    grpc_port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    http_server = ThreadingHTTPServer(("127.0.0.1", 0), http_handler(out_path))
    threading.Thread(target=http_server.serve_forever, daemon=True).start()
    print(json.dumps({
        "grpc": f"http://127.0.0.1:{grpc_port}",
        "http": f"http://127.0.0.1:{http_server.server_address[1]}",
    }), flush=True)
    grpc_server.wait_for_termination()


if __name__ == "__main__":
    main()
