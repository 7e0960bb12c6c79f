"""The GPU node agent: reads NVML, labels its own node, publishes telemetry over MQTT."""
