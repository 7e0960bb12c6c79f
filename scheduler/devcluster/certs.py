"""Keys and certificates for a throw-away API server, made with the `openssl` command.

A fresh CA signs the API server's serving certificate (127.0.0.1 and the in-cluster
`kubernetes.default.svc` names), and a separate key signs ServiceAccount tokens. The
`openssl` CLI is used because it is on every Debian machine (ca-certificates depends on
it) while the Python `cryptography` package is not a dependency of gpufair.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = gpufair-dev
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
subjectAltName = {sans}
"""

# The names a client may dial: loopback, and the in-cluster service names a pod would use.
SERVER_SANS = (
    "IP:127.0.0.1",
    "IP:10.96.0.1",
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
)

_EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


@dataclass(frozen=True, slots=True)
class Pki:
    """Paths of the generated files."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    sa_key: Path
    sa_pub: Path


def _openssl(*args: str | Path, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise RuntimeError(
            "the `openssl` command is needed to make the dev cluster's certificates and was not found; "
            "install it (Debian: apt-get install openssl)"
        )
    done = subprocess.run([exe, *map(str, args)], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(map(str, args[:2]))} failed: {done.stderr.strip()}")


def _signed_server_cert(
    cnf: Path, common_name: str, ca_cert: Path, ca_key: Path, cert: Path, key: Path
) -> None:
    """A new key and a server certificate for it (the SANs and extensions of `cnf`'s
    server_ext), signed by the CA; the request is made beside `cert` and removed."""
    csr = cert.with_suffix(".csr")
    _openssl(
        "req",
        "-new",
        "-config",
        cnf,
        "-subj",
        f"/CN={common_name}",
        *_EC,
        "-keyout",
        key,
        "-out",
        csr,
        cwd=cert.parent,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        ca_cert,
        "-CAkey",
        ca_key,
        "-set_serial",
        f"0x{secrets.token_hex(16)}",
        "-days",
        "825",
        "-extfile",
        cnf,
        "-extensions",
        "server_ext",
        "-out",
        cert,
        cwd=cert.parent,
    )
    csr.unlink()


def make_pki(directory: Path) -> Pki:
    """Write a CA, a serving cert signed by it, and a ServiceAccount signing key pair."""
    directory.mkdir(parents=True, exist_ok=True)
    cnf = directory / "openssl.cnf"
    cnf.write_text(_CONFIG.format(sans=",".join(SERVER_SANS)))
    pki = Pki(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        server_cert=directory / "apiserver.crt",
        server_key=directory / "apiserver.key",
        sa_key=directory / "sa.key",
        sa_pub=directory / "sa.pub",
    )
    _openssl(
        "req",
        "-x509",
        "-config",
        cnf,
        "-extensions",
        "ca_ext",
        "-subj",
        "/CN=gpufair-dev-ca",
        *_EC,
        "-keyout",
        pki.ca_key,
        "-out",
        pki.ca_cert,
        "-days",
        "3650",
        cwd=directory,
    )
    _signed_server_cert(cnf, "kube-apiserver", pki.ca_cert, pki.ca_key, pki.server_cert, pki.server_key)
    _openssl(
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        pki.sa_key,
        cwd=directory,
    )
    _openssl("pkey", "-in", pki.sa_key, "-pubout", "-out", pki.sa_pub, cwd=directory)
    for key in (pki.ca_key, pki.server_key, pki.sa_key):
        key.chmod(0o600)
    return pki


def make_serving_cert(pki_dir: Path, out_dir: Path, common_name: str) -> tuple[Path, Path]:
    """A loopback serving certificate signed by the CA in `pki_dir` (made by `make_pki`),
    written as `tls.crt` / `tls.key` in `out_dir`, the names controller-runtime's webhook
    server reads: a controller's webhooks on 127.0.0.1, trusted by the API server through
    the same CA in the webhook configuration's caBundle."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cnf = out_dir / "openssl.cnf"
    cnf.write_text(_CONFIG.format(sans="IP:127.0.0.1,DNS:localhost"))
    cert, key = out_dir / "tls.crt", out_dir / "tls.key"
    _signed_server_cert(cnf, common_name, pki_dir / "ca.crt", pki_dir / "ca.key", cert, key)
    key.chmod(0o600)
    return cert, key
