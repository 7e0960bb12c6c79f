"""KWOK stages: what the fake kubelets do to gpufair's nodes and pods.

- `gpufair-node-ready`: a node that is not Ready becomes Ready, with the capacity it was
  created with, unless annotated `gpufair.io/fake-node-status` (any value): then a test
  may set its conditions (NotReady, Unknown) and KWOK leaves them.
- `gpufair-node-heartbeat`: Ready nodes refresh their conditions every few minutes, as a
  kubelet's status report would (node leases are renewed by KWOK itself).
- `gpufair-pod-running`: a pod bound to a fake node starts at once: Running, Ready, a pod IP.
- `gpufair-pod-finish`: a running pod annotated `gpufair.io/fake-runtime: <Go duration>`
  (e.g. `30s`) succeeds that long after it started, so tests can watch GPUs come free.
- `gpufair-pod-stop`: a pod being deleted before it ended is stopped, as a kubelet does:
  phase Failed, its containers terminated with exit code 137; its conditions are kept (the
  Eviction API's DisruptionTarget among them), so a Job's podFailurePolicy can read them and
  the Job controller, which waits for a terminal phase then, lets it go.
- `gpufair-pod-delete`: a pod being deleted that has ended goes away.
"""

from __future__ import annotations

FAKE_RUNTIME_ANNOTATION = "gpufair.io/fake-runtime"
FAKE_NODE_STATUS_ANNOTATION = "gpufair.io/fake-node-status"

STAGES_YAML = """\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: gpufair-node-ready
spec:
  resourceRef: {apiGroup: v1, kind: Node}
  selector:
    matchExpressions:
    - key: '.metadata.annotations["HANDS_OFF"]'
      operator: DoesNotExist
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: NotIn
      values: ['True']
  next:
    statusTemplate: |
      {{ $t := Now }}
      {{ $created := or .metadata.creationTimestamp $t }}
      conditions:
      {{ range NodeConditions }}
      - type: {{ .type | Quote }}
        status: {{ .status | Quote }}
        reason: {{ .reason | Quote }}
        message: {{ .message | Quote }}
        lastHeartbeatTime: {{ $t | Quote }}
        lastTransitionTime: {{ $created | Quote }}
      {{ end }}
      addresses:
      {{ with NodeIP }}
      - {type: InternalIP, address: {{ . | Quote }}}
      {{ end }}
      - {type: Hostname, address: {{ .metadata.name | Quote }}}
      {{ with .status.capacity }}
      capacity:
      {{ YAML . 1 }}
      {{ end }}
      {{ with .status.allocatable }}
      allocatable:
      {{ YAML . 1 }}
      {{ end }}
      nodeInfo:
        architecture: amd64
        operatingSystem: linux
        kubeletVersion: {{ printf "kwok-%s" Version | Quote }}
        kubeProxyVersion: {{ printf "kwok-%s" Version | Quote }}
        containerRuntimeVersion: {{ printf "kwok-%s" Version | Quote }}
        kernelVersion: {{ printf "kwok-%s" Version | Quote }}
        osImage: gpufair-fake
        machineID: ""
        bootID: ""
        systemUUID: ""
      phase: Running
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: gpufair-node-heartbeat
spec:
  resourceRef: {apiGroup: v1, kind: Node}
  selector:
    matchExpressions:
    - key: '.metadata.annotations["HANDS_OFF"]'
      operator: DoesNotExist
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: In
      values: ['True']
  delay:
    durationMilliseconds: 240000
    jitterDurationMilliseconds: 300000
  next:
    statusTemplate: |
      {{ $t := Now }}
      {{ $created := or .metadata.creationTimestamp $t }}
      conditions:
      {{ range NodeConditions }}
      - type: {{ .type | Quote }}
        status: {{ .status | Quote }}
        reason: {{ .reason | Quote }}
        message: {{ .message | Quote }}
        lastHeartbeatTime: {{ $t | Quote }}
        lastTransitionTime: {{ $created | Quote }}
      {{ end }}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: gpufair-pod-running
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - key: .metadata.deletionTimestamp
      operator: DoesNotExist
    - key: .status.phase
      operator: In
      values: [Pending]
  next:
    statusTemplate: |
      {{ $t := Now }}
      phase: Running
      startTime: {{ $t | Quote }}
      conditions:
      {{ range list "PodReadyToStartContainers" "Initialized" "ContainersReady" "Ready" }}
      - type: {{ . | Quote }}
        status: "True"
        lastTransitionTime: {{ $t | Quote }}
      {{ end }}
      {{ range .spec.readinessGates }}
      - type: {{ .conditionType | Quote }}
        status: "True"
        lastTransitionTime: {{ $t | Quote }}
      {{ end }}
      containerStatuses:
      {{ range .spec.containers }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        ready: true
        started: true
        restartCount: 0
        state:
          running:
            startedAt: {{ $t | Quote }}
      {{ end }}
      initContainerStatuses:
      {{ range .spec.initContainers }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        ready: true
        restartCount: 0
        state:
          terminated:
            exitCode: 0
            reason: Completed
            startedAt: {{ $t | Quote }}
            finishedAt: {{ $t | Quote }}
      {{ end }}
      {{ with NodeIPsWith .spec.nodeName }}
      hostIP: {{ index . 0 | Quote }}
      hostIPs:
      {{ range . }}
      - ip: {{ . | Quote }}
      {{ end }}
      {{ end }}
      {{ $hostNet := or .spec.hostNetwork false }}
      {{ $uid := or .metadata.uid "" }}
      {{ with PodIPsWith .spec.nodeName $hostNet $uid .metadata.name .metadata.namespace }}
      podIP: {{ index . 0 | Quote }}
      podIPs:
      {{ range . }}
      - ip: {{ . | Quote }}
      {{ end }}
      {{ end }}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: gpufair-pod-finish
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - key: .metadata.deletionTimestamp
      operator: DoesNotExist
    - key: .status.phase
      operator: In
      values: [Running]
    - key: '.metadata.annotations["FAKE_RUNTIME"]'
      operator: Exists
  delay:
    durationMilliseconds: 0
    durationFrom:
      expressionFrom: '.metadata.annotations["FAKE_RUNTIME"]'
  next:
    statusTemplate: |
      {{ $t := Now }}
      phase: Succeeded
      conditions:
      {{ range list "Ready" "ContainersReady" }}
      - type: {{ . | Quote }}
        status: "False"
        reason: PodCompleted
        lastTransitionTime: {{ $t | Quote }}
      {{ end }}
      TERMINATED_0_Completed
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: gpufair-pod-stop
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - key: .metadata.deletionTimestamp
      operator: Exists
    - key: .status.phase
      operator: In
      values: [Pending, Running]
  next:
    statusTemplate: |
      {{ $t := Now }}
      phase: Failed
      TERMINATED_137_Error
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: gpufair-pod-delete
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - key: .metadata.deletionTimestamp
      operator: Exists
    - key: .status.phase
      operator: In
      values: [Succeeded, Failed]
  next:
    delete: true
"""


def _terminated(exit_code: int, reason: str) -> str:
    """Every container of the pod ended with `exit_code`, as its kubelet reports it."""
    return f"""containerStatuses:
      {{{{ range .spec.containers }}}}
      - name: {{{{ .name | Quote }}}}
        image: {{{{ .image | Quote }}}}
        ready: false
        started: false
        restartCount: 0
        state:
          terminated:
            exitCode: {exit_code}
            reason: {reason}
            finishedAt: {{{{ $t | Quote }}}}
      {{{{ end }}}}"""


STAGES_YAML = (
    STAGES_YAML.replace("FAKE_RUNTIME", FAKE_RUNTIME_ANNOTATION)
    .replace("HANDS_OFF", FAKE_NODE_STATUS_ANNOTATION)
    .replace("TERMINATED_0_Completed", _terminated(0, "Completed"))
    .replace("TERMINATED_137_Error", _terminated(137, "Error"))
)
