#!/usr/bin/env python3
"""An OTLP/gRPC trace receiver that prints every span it gets, for tests.

Jaeger itself cannot be installed here; this is a real OTLP endpoint (the
official protos and gRPC) in a process of its own. It listens on --listen
(port 0: any free port), prints `listening on HOST:PORT` first, then one
JSON object per received span on stdout, flushed at once:

  {"service": ..., "trace_id": hex, "span_id": hex, "parent_span_id": hex or "",
   "name": ..., "kind": "SERVER"|..., "links": [{"trace_id", "span_id"}],
   "attributes": {key: value}, "status": "OK"|"ERROR"|"UNSET"}

It runs until stdin closes (the test holding the pipe ends) or SIGTERM.

  $SKILEEZ_OTLP_PYTHON deploy/local/otlp_sink.py --listen 127.0.0.1:0
"""

import argparse
import json
import sys
import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

WRITE = threading.Lock()


def value(any_value):
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value(v) for v in any_value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in any_value.kvlist_value.values}
    if kind == "bytes_value":
        return any_value.bytes_value.hex()
    return getattr(any_value, kind)


def attributes(pairs):
    return {kv.key: value(kv.value) for kv in pairs}


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):
        lines = []
        for resource_spans in request.resource_spans:
            service = attributes(resource_spans.resource.attributes).get("service.name", "")
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    lines.append(json.dumps({
                        "service": service,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "name": span.name,
                        "kind": trace_pb2.Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                        "links": [
                            {"trace_id": link.trace_id.hex(), "span_id": link.span_id.hex()}
                            for link in span.links
                        ],
                        "attributes": attributes(span.attributes),
                        "status": trace_pb2.Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
                    }))
        with WRITE:
            for line in lines:
                sys.stdout.write(line + "\n")
            sys.stdout.flush()
        return trace_service_pb2.ExportTraceServiceResponse()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:4317")
    args = parser.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
    host = args.listen.rsplit(":", 1)[0]
    port = server.add_insecure_port(args.listen)
    if port == 0:
        sys.exit(f"cannot listen on {args.listen}")
    server.start()
    with WRITE:
        sys.stdout.write(f"listening on {host}:{port}\n")
        sys.stdout.flush()
    # Ends with the test: its end closes our stdin.
    try:
        sys.stdin.read()
    except KeyboardInterrupt:
        pass
    server.stop(grace=1)


if __name__ == "__main__":
    main()
