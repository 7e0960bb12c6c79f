# The gpufair image: `gpufair run` (scheduler) and `gpufair agent` (node agent) from one build.
# The agent reads NVML through the driver library the NVIDIA container toolkit mounts.
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY scheduler ./scheduler
COPY simulator ./simulator
RUN pip install --no-cache-dir . && rm -rf /src
USER 65532:65532
ENTRYPOINT ["gpufair"]
