"""ServiceAccount tokens from the TokenRequest API, so tests can act as the daemon's
ServiceAccount (and see RBAC refuse what its Role does not allow)."""

from __future__ import annotations

from kubernetes import client
from kubernetes.client.exceptions import ApiException


def serviceaccount_token(
    api: client.ApiClient, namespace: str, name: str, *, create: bool = True, expiration_s: int = 3600
) -> str:
    """A bound token for ServiceAccount `namespace/name`, valid `expiration_s` seconds
    (the API server's minimum is 600). The account is created when missing and `create`."""
    core = client.CoreV1Api(api)
    if create:
        try:
            core.create_namespaced_service_account(
                namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
            )
        except ApiException as exc:
            if exc.status == 404:
                raise LookupError(
                    f"namespace {namespace!r} does not exist, so ServiceAccount {namespace}/{name} "
                    "cannot be made; create the namespace first"
                ) from exc
            if exc.status != 409:
                raise
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=expiration_s)
    )
    try:
        made = core.create_namespaced_service_account_token(name, namespace, request)
    except ApiException as exc:
        if exc.status == 404:
            raise LookupError(
                f"ServiceAccount {namespace}/{name} does not exist; create it (or pass create=True)"
            ) from exc
        raise
    token = made.status.token if made.status is not None else None
    if not token:  # the API always answers with one; say so rather than hand back "None"
        raise RuntimeError(f"the TokenRequest for ServiceAccount {namespace}/{name} answered no token")
    return token
