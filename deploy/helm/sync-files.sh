#!/usr/bin/env bash
# Copies the files the chart embeds from their sources in deploy/ (Helm reads files only from
# inside a chart). tests/test_helm_chart.py fails while a copy differs from its source.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEPLOY="$(dirname "$HERE")"
CHART="$HERE/gpufair"
cp "$DEPLOY"/crds/*.yaml "$CHART/crds/"
cp "$DEPLOY"/mosquitto/mosquitto.conf "$DEPLOY"/mosquitto/acl "$CHART/files/mosquitto/"
cp "$DEPLOY"/grafana/*.json "$CHART/files/grafana/"
cp "$DEPLOY"/prometheus/gpufair-rules.yaml "$CHART/files/prometheus/"
echo "chart files synced from $DEPLOY"
