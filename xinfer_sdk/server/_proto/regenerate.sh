#!/usr/bin/env bash
# Regenerate *_pb2.py from the vendored .proto files with grpcio-tools 1.64.1 (protobuf 5.26.1 gencode: the
# oldest runtime we support, and no runtime-version check that would reject older protobuf installs).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
V="${TMPDIR:-/tmp}/xinfer-protogen"
[ -x "$V/bin/python" ] || { python3 -m venv "$V"; "$V/bin/pip" install -q grpcio-tools==1.64.1; }
cd "$HERE"
"$V/bin/python" -m grpc_tools.protoc -I. --python_out=. grpc_service.proto model_config.proto
# generated code imports its sibling as a top-level module; make it package-relative
sed -i 's/^import model_config_pb2 as model__config__pb2$/from . import model_config_pb2 as model__config__pb2/' \
    grpc_service_pb2.py
