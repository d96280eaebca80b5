"""A throw-away certificate authority and a server certificate for 127.0.0.1, for the tests'
own database servers (TLS checked for real, never against a public CA)."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import NamedTuple


class ServerCertificate(NamedTuple):
    ca: Path          # the CA's certificate (what a client trusts)
    cert: Path        # the server's certificate, for IP 127.0.0.1, signed by the CA
    key: Path         # the server's private key


def make_certificates(directory: Path, address: str = "127.0.0.1") -> ServerCertificate:
    """A CA and a server certificate for IP `address` signed by it, written into `directory`."""
    openssl = ["openssl", "req", "-nodes", "-newkey", "rsa:2048"]
    _run([*openssl, "-x509", "-days", "2", "-subj", "/CN=keyturn-test-ca", "-keyout", "ca.key",
          "-out", "ca.pem", "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,keyCertSign"], directory)
    _run([*openssl, "-subj", f"/CN={address}", "-keyout", "server.key", "-out", "server.csr"],
         directory)
    (directory / "server.ext").write_text(f"subjectAltName=IP:{address}\nextendedKeyUsage=serverAuth\n")
    _run(["openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
          "-CAcreateserial", "-days", "2", "-out", "server.pem", "-extfile", "server.ext"],
         directory)
    return ServerCertificate(directory / "ca.pem", directory / "server.pem", directory / "server.key")


def make_client_certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A client certificate (CN `name`) signed by the CA `make_certificates` left in
    `directory`, for servers that ask clients for one; returns (certificate, key)."""
    _run(["openssl", "req", "-nodes", "-newkey", "rsa:2048", "-subj", f"/CN={name}",
          "-keyout", f"{name}.key", "-out", f"{name}.csr"], directory)
    (directory / f"{name}.ext").write_text("extendedKeyUsage=clientAuth\n")
    _run(["openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
          "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext"],
         directory)
    return directory / f"{name}.pem", directory / f"{name}.key"


def _run(argv: list[str], cwd: Path) -> None:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, timeout=120)
    if done.returncode:
        raise RuntimeError(f"{argv[0]} failed: {done.stderr.decode(errors='replace')[-2000:]}")
