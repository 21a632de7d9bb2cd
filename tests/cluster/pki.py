"""The test cluster's certificates and keys, made with the openssl command (ECDSA P-256).

One CA signs the API server's serving certificate and every client certificate (the user is the
certificate's CN, its groups the O fields, as the API server reads them); the service-account
signing key pair is separate. The ``cryptography`` package is not among the project's dependencies,
Debian's openssl is on every machine that runs these tests.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-noenc")
DAYS = "3650"


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)}: {done.stderr.strip()}")


def _subject(common_name: str, organizations: Sequence[str]) -> str:
    for part in (common_name, *organizations):
        if "/" in part or "," in part:
            raise ValueError(f"certificate subject part {part!r} has '/' or ','")
    return "".join(f"/O={org}" for org in organizations) + f"/CN={common_name}"


class Pki:
    """Certificates in ``directory``: ``ca``, then ``server`` and ``client`` pairs signed by it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = KeyPair(directory / "ca.crt", directory / "ca.key")
        _openssl(
            "req", "-x509", "-config", "/dev/null", *EC_KEY,
            "-keyout", str(self.ca.key), "-out", str(self.ca.cert), "-days", DAYS,
            "-subj", "/CN=llamacontroller-test-ca",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        )  # fmt: skip

    def _issue(self, name: str, subject: str, extensions: Sequence[str]) -> KeyPair:
        pair = KeyPair(self.directory / f"{name}.crt", self.directory / f"{name}.key")
        added = [arg for ext in extensions for arg in ("-addext", ext)]
        _openssl(
            "req", "-x509", "-config", "/dev/null", *EC_KEY,
            "-keyout", str(pair.key), "-out", str(pair.cert), "-days", DAYS,
            "-CA", str(self.ca.cert), "-CAkey", str(self.ca.key), "-subj", subject,
            "-addext", "basicConstraints=critical,CA:FALSE",
            "-addext", "keyUsage=critical,digitalSignature",
            *added,
        )  # fmt: skip
        return pair

    def server(self, name: str, ips: Sequence[str], dns_names: Sequence[str]) -> KeyPair:
        """A serving certificate for these addresses and names."""
        alt_names = ",".join([*(f"IP:{ip}" for ip in ips), *(f"DNS:{dns}" for dns in dns_names)])
        return self._issue(
            name, _subject(name, ()), ["extendedKeyUsage=serverAuth", f"subjectAltName={alt_names}"]
        )

    def client(self, name: str, user: str, groups: Sequence[str] = ()) -> KeyPair:
        """A client certificate: the API server authenticates ``user`` in ``groups``."""
        return self._issue(name, _subject(user, groups), ["extendedKeyUsage=clientAuth"])

    def signing_key(self, name: str) -> KeyPair:
        """A bare key pair (the service-account token signer): ``cert`` holds the public key."""
        pair = KeyPair(self.directory / f"{name}.pub", self.directory / f"{name}.key")
        _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(pair.key))
        _openssl("pkey", "-in", str(pair.key), "-pubout", "-out", str(pair.cert))
        return pair
