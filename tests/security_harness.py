"""Test certificates and a Silt broker with every listener type, for
test_security.py.

Certificates are made at test time with the `cryptography` package (a CA, a
server certificate for 127.0.0.1/localhost, a client certificate, and an
untrusted CA with its own client certificate): nothing secret is committed.
The broker gets a TOML file with one listener of each security protocol plus
an mTLS listener; their bound ports are read from its "kafka listener bound"
log lines.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from silt_harness import Broker, HarnessError

_BOUND_RE = re.compile(r"kafka listener bound listener=(?P<name>\S+) protocol=\S+ address=(?P<host>[0-9.]+):(?P<port>\d+)")

#: PLAIN users of the broker's config (Kafka's JAAS user_<name>="<password>").
PLAIN_USERS = {"alice": "alice-secret"}
#: The SCRAM user the broker writes at start (sasl.bootstrap_users).
BOOTSTRAP_USER = ("admin", "admin-secret")


def _name(cn: str, org: str = "Silt Tests") -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    os.chmod(path, 0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@dataclass
class Ca:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @staticmethod
    def create(cn: str) -> "Ca":
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                             crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        return Ca(key, cert)

    def issue(self, cn: str, server: bool, org: str = "Silt Tests") -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (x509.CertificateBuilder().subject_name(_name(cn, org)).issuer_name(self.cert.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                         else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return key, builder.sign(self.key, hashes.SHA256())


@dataclass
class Certs:
    """Paths of the test PKI's PEM files."""
    dir: Path
    ca: Ca
    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path
    rogue_key: Path

    @staticmethod
    def create(directory: Path) -> "Certs":
        directory.mkdir(parents=True, exist_ok=True)
        ca = Ca.create("Silt Test CA")
        rogue = Ca.create("Untrusted CA")
        paths = {name: directory / f"{name}.pem" for name in
                 ("ca", "server-cert", "server-key", "client-cert", "client-key", "rogue-cert", "rogue-key")}
        _write_cert(paths["ca"], ca.cert)
        certs = Certs(directory, ca, paths["ca"], paths["server-cert"], paths["server-key"], paths["client-cert"],
                      paths["client-key"], paths["rogue-cert"], paths["rogue-key"])
        certs.reissue_server("localhost")
        key, cert = ca.issue("client-1", server=False)
        _write_key(certs.client_key, key)
        _write_cert(certs.client_cert, cert)
        key, cert = rogue.issue("intruder", server=False)
        _write_key(certs.rogue_key, key)
        _write_cert(certs.rogue_cert, cert)
        return certs

    def reissue_server(self, cn: str) -> None:
        """A new server certificate and key, each file replaced atomically."""
        key, cert = self.ca.issue(cn, server=True)
        for path, write in ((self.server_key, lambda p: _write_key(p, key)), (self.server_cert, lambda p: _write_cert(p, cert))):
            tmp = path.with_suffix(".tmp")
            write(tmp)
            os.replace(tmp, path)


def broker_config(certs: Certs, path: Path) -> Path:
    """A TOML config with PLAINTEXT (from the environment), SSL,
    SASL_PLAINTEXT, SASL_SSL and an mTLS (SSL, client certificate required) listener."""
    plain_users = "\n".join(f'{u} = "{p}"' for u, p in PLAIN_USERS.items())
    path.write_text(f"""
[[kafka.listeners]]
name = "SSL"
listen = "127.0.0.1:0"

[[kafka.listeners]]
name = "SASL_PLAINTEXT"
listen = "127.0.0.1:0"

[[kafka.listeners]]
name = "SASL_SSL"
listen = "127.0.0.1:0"

[[kafka.listeners]]
name = "MTLS"
listen = "127.0.0.1:0"
security_protocol = "SSL"
ssl_client_auth = "required"

[tls]
cert_file = "{certs.server_cert}"
key_file = "{certs.server_key}"
ca_file = "{certs.ca_file}"
reload_check_interval_ms = 300

[sasl]
enabled_mechanisms = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

[sasl.plain_users]
{plain_users}

[[sasl.bootstrap_users]]
name = "{BOOTSTRAP_USER[0]}"
password = "{BOOTSTRAP_USER[1]}"
""")
    return path


class SecureBroker(Broker):
    """`silt broker --config <file>` with the listeners of `broker_config`."""

    def __init__(self, silt_bin: Path, data_dir: Path, config: Path, name: str = "secure",
                 env: dict[str, str] | None = None):
        super().__init__(silt_bin, data_dir, env=env, name=name)
        self.config = config

    def _command(self) -> list[str]:
        return [str(self.silt_bin), "broker", "--config", str(self.config)]

    def listener(self, name: str) -> tuple[str, int]:
        """The bound address of the listener called `name` (latest start)."""
        found = None
        for line in self.lines:
            m = _BOUND_RE.search(line)
            if m and m.group("name") == name:
                found = (m.group("host"), int(m.group("port")))
        if found is None:
            raise HarnessError(f"no 'kafka listener bound listener={name}' line in the broker's output")
        return found

    def bootstrap_of(self, name: str) -> str:
        host, port = self.listener(name)
        return f"{host}:{port}"

    def log_has(self, text: str) -> bool:
        return any(text in line for line in self.lines)
