"""Listeners, TLS and SASL (docs/security.md): one broker with a PLAINTEXT,
an SSL, a SASL_PLAINTEXT, a SASL_SSL and an mTLS listener, driven by
confluent-kafka (librdkafka), kafka-python and kcat.

Each client produces and consumes over each listener type, with PLAIN and
both SCRAM mechanisms; wrong passwords, unknown users, untrusted or missing
client certificates are refused with the right error while the broker keeps
serving others; hostile input (garbage SASL tokens, oversized handshakes, a
TLS hello on a plaintext listener, plaintext on a TLS listener, requests
before authentication) closes only the offending connection, with a log line.

The broker of this module is configured from a TOML file with five
listeners, which the Kafka harness (one PLAINTEXT listener) cannot mirror:
those tests are silt_only. The SCRAM credential APIs run against both.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialDeletion,
                                   UserScramCredentialUpsertion)
from cryptography import x509

from kafka_wire import ConnectionClosed, RawConnection, Reader, Writer, request_frame
from security_harness import BOOTSTRAP_USER, PLAIN_USERS, Certs, SecureBroker, broker_config
from silt_harness import HarnessError, parse_prometheus, wait_until

SILT_ONLY = "the Kafka harness starts one PLAINTEXT listener; this needs SSL/SASL listeners (docs/security.md)"
CLOSE_DEADLINE_S = 10.0
CLIENT_TIMEOUT_S = 30.0
SASL_HANDSHAKE = 17
SASL_AUTHENTICATE = 36
SASL_AUTHENTICATION_FAILED = 58
ILLEGAL_SASL_STATE = 34


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    return Certs.create(tmp_path_factory.mktemp("pki"))


def _start_secure(silt_bin, directory, certs: Certs, name: str) -> SecureBroker:
    b = SecureBroker(silt_bin, directory / "data", broker_config(certs, directory / "silt.toml"), name=name)
    b.start()
    return b


def _stop(b: SecureBroker):
    if b.alive():
        code = b.stop(signal.SIGTERM)
        assert code == 0, f"{b.name} exited with {code} on SIGTERM\n{b.log_tail(40)}"


@pytest.fixture(scope="module")
def secure(request, certs, tmp_path_factory):
    if request.config.getoption("--broker") == "kafka":
        pytest.skip(f"silt_only: {SILT_ONLY}")
    silt_bin = request.getfixturevalue("silt_bin")
    b = _start_secure(silt_bin, tmp_path_factory.mktemp("secure"), certs, "secure")
    yield b
    _stop(b)


def client_conf(b: SecureBroker, certs: Certs, listener: str, user: tuple[str, str] | None = None,
                mechanism: str = "PLAIN", client_cert: bool = False, **extra) -> dict:
    """librdkafka settings for one listener of the module's broker."""
    protocol = {"MTLS": "SSL"}.get(listener, listener)
    conf = {"bootstrap.servers": b.bootstrap_of(listener), "broker.address.family": "v4",
            "security.protocol": protocol.lower(), "socket.timeout.ms": 15000}
    if "SSL" in protocol:
        conf["ssl.ca.location"] = str(certs.ca_file)
    if client_cert:
        conf["ssl.certificate.location"] = str(certs.client_cert)
        conf["ssl.key.location"] = str(certs.client_key)
    if "SASL" in protocol:
        conf.update({"sasl.mechanism": mechanism, "sasl.username": user[0], "sasl.password": user[1]})
    conf.update(extra)
    return conf


def produce_and_consume(conf: dict, topic: str, count: int = 20) -> None:
    """Produces `count` records through `conf` and reads them back through it."""
    errors = []
    p = Producer({**conf, "acks": "all", "message.timeout.ms": 30000, "error_cb": errors.append})
    delivered = []
    for i in range(count):
        p.produce(topic, value=f"{topic}-{i}".encode(), partition=0,
                  on_delivery=lambda err, msg: delivered.append(err or msg.offset()))
    assert p.flush(60) == 0, f"records not delivered within 60 s (client errors {errors})"
    failures = [d for d in delivered if isinstance(d, KafkaError)]
    assert not failures, f"deliveries failed: {failures[:3]} (client errors {errors})"
    first = min(delivered)
    c = Consumer({**conf, "group.id": f"g-{uuid.uuid4()}", "enable.auto.commit": False, "error_cb": errors.append})
    try:
        c.assign([TopicPartition(topic, 0, first)])
        got = []
        deadline = time.monotonic() + 60
        while len(got) < count and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got.append(m.value())
        assert got == [f"{topic}-{i}".encode() for i in range(count)], f"read back {len(got)} of {count} (client errors {errors})"
    finally:
        c.close()


def client_error(conf: dict, codes: tuple[int, ...], what: str) -> KafkaError:
    """The first error of one of `codes` a client with `conf` reports (its
    error callback runs from poll)."""
    errors = []
    p = Producer({**conf, "error_cb": errors.append})

    def seen():
        p.poll(0.2)
        return next((e for e in errors if e.code() in codes), None)
    return wait_until(seen, 20, what, diagnostics=lambda: f"client errors: {errors}")


def auth_error(conf: dict) -> KafkaError:
    """The error a client with `conf` gets: it must be an authentication error."""
    return client_error(conf, (KafkaError._AUTHENTICATION,), "an authentication error")


# -- every client over every listener type ------------------------------------------

LOGINS = [
    ("PLAINTEXT", None, "PLAIN", False),
    ("SSL", None, "PLAIN", False),
    ("MTLS", None, "PLAIN", True),
    ("SASL_PLAINTEXT", ("alice", "alice-secret"), "PLAIN", False),
    ("SASL_PLAINTEXT", BOOTSTRAP_USER, "SCRAM-SHA-256", False),
    ("SASL_SSL", BOOTSTRAP_USER, "SCRAM-SHA-512", False),
    ("SASL_SSL", ("alice", "alice-secret"), "PLAIN", False),
]


@pytest.mark.silt_only(reason=SILT_ONLY)
@pytest.mark.parametrize("listener,user,mechanism,client_cert", LOGINS,
                         ids=[f"{l}-{m}" for l, _, m, _ in LOGINS])
def test_confluent_kafka_produces_and_consumes_over_each_listener(secure, certs, topic_name, listener, user,
                                                                  mechanism, client_cert):
    conf = client_conf(secure, certs, listener, user, mechanism, client_cert)
    # Metadata answers with this listener's address: a client told another
    # listener's port would fail its TLS or SASL handshake there.
    metadata = AdminClient(conf).list_topics(timeout=CLIENT_TIMEOUT_S)
    ports = {b.port for b in metadata.brokers.values()}
    assert ports == {secure.listener(listener)[1]}, f"brokers {metadata.brokers} on listener {listener}"
    produce_and_consume(conf, topic_name)


@pytest.mark.silt_only(reason=SILT_ONLY)
@pytest.mark.parametrize("listener,mechanism", [("SSL", None), ("SASL_PLAINTEXT", "SCRAM-SHA-256"),
                                                ("SASL_SSL", "SCRAM-SHA-512"), ("SASL_SSL", "PLAIN")])
def test_kafka_python_produces_and_consumes(secure, certs, topic_name, listener, mechanism):
    from kafka import KafkaConsumer, KafkaProducer
    kw = {"bootstrap_servers": secure.bootstrap_of(listener), "security_protocol": listener,
          "request_timeout_ms": 30000, "api_version_auto_timeout_ms": 10000}
    if "SSL" in listener:
        kw["ssl_cafile"] = str(certs.ca_file)
    if mechanism:
        user = ("alice", "alice-secret") if mechanism == "PLAIN" else BOOTSTRAP_USER
        kw.update(sasl_mechanism=mechanism, sasl_plain_username=user[0], sasl_plain_password=user[1])
    producer = KafkaProducer(acks="all", **kw)
    for i in range(10):
        producer.send(topic_name, value=f"kp-{i}".encode(), partition=0).get(timeout=CLIENT_TIMEOUT_S)
    producer.close()
    consumer = KafkaConsumer(**kw, auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=20000)
    consumer.assign([__import__("kafka").TopicPartition(topic_name, 0)])
    consumer.seek_to_beginning()
    got = []
    for m in consumer:
        got.append(m.value)
        if len(got) == 10:
            break
    consumer.close()
    assert got == [f"kp-{i}".encode() for i in range(10)]


@pytest.mark.silt_only(reason=SILT_ONLY)
def test_kcat_produces_and_consumes_over_sasl_ssl_with_scram(secure, certs, topic_name):
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    if kcat is None:
        pytest.fail("kcat is not installed (apt-get install kcat); the suite needs it", pytrace=False)
    args = [kcat, "-b", secure.bootstrap_of("SASL_SSL"), "-X", "security.protocol=sasl_ssl",
            "-X", f"ssl.ca.location={certs.ca_file}", "-X", "sasl.mechanisms=SCRAM-SHA-256",
            "-X", f"sasl.username={BOOTSTRAP_USER[0]}", "-X", f"sasl.password={BOOTSTRAP_USER[1]}", "-t", topic_name]
    lines = [f"kcat-{i}" for i in range(5)]
    done = subprocess.run(args + ["-P", "-p", "0"], input="\n".join(lines) + "\n", text=True, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr + secure.log_tail(10)
    done = subprocess.run(args + ["-C", "-p", "0", "-o", "beginning", "-e", "-q"], text=True, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == lines


# -- refused logins ------------------------------------------------------------------

@pytest.mark.silt_only(reason=SILT_ONLY)
@pytest.mark.parametrize("listener,user,mechanism", [
    ("SASL_PLAINTEXT", ("alice", "wrong"), "PLAIN"),
    ("SASL_PLAINTEXT", ("mallory", "alice-secret"), "PLAIN"),
    ("SASL_SSL", (BOOTSTRAP_USER[0], "wrong"), "SCRAM-SHA-256"),
    ("SASL_SSL", ("mallory", "x"), "SCRAM-SHA-512"),
], ids=["plain-wrong-password", "plain-unknown-user", "scram256-wrong-password", "scram512-unknown-user"])
def test_bad_credentials_are_refused_and_others_still_served(secure, certs, topic_name, listener, user, mechanism):
    error = auth_error(client_conf(secure, certs, listener, user, mechanism))
    assert "Authentication failed" in error.str(), error.str()
    assert "invalid credentials" in error.str(), error.str()
    produce_and_consume(client_conf(secure, certs, "SASL_SSL", BOOTSTRAP_USER, "SCRAM-SHA-512"), topic_name, count=3)


@pytest.mark.silt_only(reason=SILT_ONLY)
def test_a_failed_login_is_answered_with_sasl_authentication_failed_and_closed(secure):
    with RawConnection(secure.listener("SASL_PLAINTEXT")) as conn:
        error, mechanisms = sasl_handshake(conn, "PLAIN")
        assert error == 0 and "SCRAM-SHA-512" in mechanisms
        error, message = sasl_authenticate(conn, b"\0alice\0not-her-password")
        assert error == SASL_AUTHENTICATION_FAILED, message
        assert "Authentication failed" in message
        conn.wait_closed(CLOSE_DEADLINE_S, "after a failed login")
    wait_until(lambda: secure.log_has("authentication failed; closing connection"), 10, "the failed login's log line")


@pytest.mark.silt_only(reason=SILT_ONLY)
def test_sasl_v0_raw_tokens_authenticate(secure):
    with RawConnection(secure.listener("SASL_PLAINTEXT")) as conn:
        error, _ = sasl_handshake(conn, "PLAIN", version=0)
        assert error == 0
        token = b"\0alice\0" + PLAIN_USERS["alice"].encode()
        conn.send(len(token).to_bytes(4, "big") + token)
        assert conn.read_frame(CLOSE_DEADLINE_S) == b"", "PLAIN answers an empty token"
        # Authenticated: ordinary requests are served now.
        r = conn.request(3, 1, Writer().int32(0).bytes())  # Metadata v1, no topics
        assert r.int32() >= 1, "at least one broker"


@pytest.mark.silt_only(reason=SILT_ONLY)
def test_unmatched_or_missing_client_certificates_are_refused(secure, certs, topic_name):
    for cert, key in ((certs.rogue_cert, certs.rogue_key), (None, None)):
        ctx = ssl.create_default_context(cafile=str(certs.ca_file))
        if cert:
            ctx.load_cert_chain(str(cert), str(key))
        with socket.create_connection(secure.listener("MTLS"), timeout=10) as raw:
            with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
                with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    # TLS 1.3 reports the server's refusal on the first read.
                    tls.sendall(request_frame(18, 0, 1, b""))
                    if tls.recv(4) == b"":
                        raise ConnectionResetError("closed without an answer")
    produce_and_consume(client_conf(secure, certs, "MTLS", client_cert=True), topic_name, count=3)


@pytest.mark.silt_only(reason=SILT_ONLY)
def test_an_untrusted_server_certificate_is_refused_by_the_client(secure, certs, tmp_path):
    other = Certs.create(tmp_path / "other-pki")
    error = auth_error_ssl(client_conf(secure, certs, "SSL", **{"ssl.ca.location": str(other.ca_file)}))
    assert "certificate verify failed" in error.str() or "SSL handshake failed" in error.str(), error.str()


def auth_error_ssl(conf: dict) -> KafkaError:
    return client_error(conf, (KafkaError._SSL, KafkaError._TRANSPORT), "an SSL error")


# -- hostile input -------------------------------------------------------------------

@pytest.mark.silt_only(reason=SILT_ONLY)
def test_hostile_input_closes_only_the_offending_connection(secure, certs, topic_name):
    cases = []
    # Garbage SCRAM client-first message.
    with RawConnection(secure.listener("SASL_PLAINTEXT")) as conn:
        assert sasl_handshake(conn, "SCRAM-SHA-256")[0] == 0
        error, _ = sasl_authenticate(conn, b"\xff\xfe garbage \x00\x01")
        assert error == SASL_AUTHENTICATION_FAILED
        conn.wait_closed(CLOSE_DEADLINE_S, "after a garbage SCRAM token")
        cases.append("garbage SCRAM token")
    # A SaslHandshake frame far larger than sasl.max_receive_bytes.
    with RawConnection(secure.listener("SASL_PLAINTEXT")) as conn:
        conn.send((64 << 20).to_bytes(4, "big") + b"\x00\x11\x00\x01" + b"A" * 1024)
        conn.wait_closed(CLOSE_DEADLINE_S, "after an oversized handshake")
        cases.append("oversized handshake")
    # A request other than ApiVersions/SaslHandshake before authentication.
    with RawConnection(secure.listener("SASL_PLAINTEXT")) as conn:
        conn.send(request_frame(3, 1, 1, Writer().int32(0).bytes()))
        conn.wait_closed(CLOSE_DEADLINE_S, "after Metadata before authentication")
        cases.append("request before authentication")
    # A TLS ClientHello on the PLAINTEXT listener.
    with socket.create_connection(secure.kafka_addr, timeout=10) as raw:
        with pytest.raises((ssl.SSLError, ConnectionResetError, OSError)):
            ssl.create_default_context(cafile=str(certs.ca_file)).wrap_socket(raw, server_hostname="127.0.0.1")
        cases.append("TLS on plaintext")
    # A plaintext Kafka request on the SSL listener: at most a TLS alert comes back, then EOF.
    with socket.create_connection(secure.listener("SSL"), timeout=CLOSE_DEADLINE_S) as raw:
        raw.sendall(request_frame(18, 0, 1, b""))
        answer = b""
        while chunk := raw.recv(4096):
            answer += chunk
        assert answer == b"" or answer[0] == 0x15, f"not a TLS alert: {answer[:16]!r}"
        cases.append("plaintext on TLS")
    for text in ("sasl_authentication_failed", "request_too_large", "sasl_illegal_state", "tls_on_plaintext",
                 "TLS handshake failed"):
        wait_until(lambda: secure.log_has(text), 10, f"a log line naming {text}")
    secure.assert_alive("after hostile input")
    produce_and_consume(client_conf(secure, certs, "SASL_SSL", BOOTSTRAP_USER, "SCRAM-SHA-256"), topic_name, count=3)


# -- credentials ---------------------------------------------------------------------

def test_scram_credentials_are_managed_with_the_kafka_api(broker):
    """AlterUserScramCredentials and DescribeUserScramCredentials as Kafka
    answers them (runs against both)."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap, "broker.address.family": "v4"})
    user = f"bob-{uuid.uuid4().hex[:8]}"
    upsert = UserScramCredentialUpsertion(user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192), b"bob-secret")
    admin.alter_user_scram_credentials([upsert])[user].result(CLIENT_TIMEOUT_S)
    described = admin.describe_user_scram_credentials([user])[user].result(CLIENT_TIMEOUT_S)
    infos = [(i.mechanism, i.iterations) for i in described.scram_credential_infos]
    assert infos == [(ScramMechanism.SCRAM_SHA_256, 8192)], infos
    too_few = UserScramCredentialUpsertion(user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 100), b"x")
    with pytest.raises(KafkaException) as refused:
        admin.alter_user_scram_credentials([too_few])[user].result(CLIENT_TIMEOUT_S)
    assert refused.value.args[0].code() == KafkaError.UNACCEPTABLE_CREDENTIAL, refused.value
    missing = UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_512)
    with pytest.raises(KafkaException) as refused:
        admin.alter_user_scram_credentials([missing])[user].result(CLIENT_TIMEOUT_S)
    assert refused.value.args[0].code() == KafkaError.RESOURCE_NOT_FOUND, refused.value
    delete = UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_256)
    admin.alter_user_scram_credentials([delete])[user].result(CLIENT_TIMEOUT_S)
    with pytest.raises(KafkaException) as refused:
        admin.describe_user_scram_credentials([user])[user].result(CLIENT_TIMEOUT_S)
    assert refused.value.args[0].code() == KafkaError.RESOURCE_NOT_FOUND, refused.value


@pytest.mark.silt_only(reason=SILT_ONLY)
def test_users_made_with_silt_user_log_in_until_deleted_and_survive_a_restart(silt_bin, certs, tmp_path, topic_name):
    b = _start_secure(silt_bin, tmp_path, certs, "users")
    try:
        cli = [str(silt_bin), "user"]
        env = {"PATH": "/usr/bin:/bin", "SILT_USER_PASSWORD": "carol-secret"}
        done = subprocess.run(cli + ["create", "-b", b.bootstrap, "--name", "carol"], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        done = subprocess.run(cli + ["describe", "-b", b.bootstrap], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "carol" in done.stdout and "SCRAM-SHA-512" in done.stdout, done.stdout + done.stderr
        carol = ("carol", "carol-secret")
        produce_and_consume(client_conf(b, certs, "SASL_PLAINTEXT", carol, "SCRAM-SHA-512"), topic_name, count=3)
        assert b.stop(signal.SIGTERM) == 0
        b.restart()
        produce_and_consume(client_conf(b, certs, "SASL_SSL", carol, "SCRAM-SHA-256"), topic_name + "-2", count=3)
        done = subprocess.run(cli + ["delete", "-b", b.bootstrap, "--name", "carol"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        error = auth_error(client_conf(b, certs, "SASL_PLAINTEXT", carol, "SCRAM-SHA-256"))
        assert "Authentication failed" in error.str()
    finally:
        _stop(b)


# -- certificate reload and metrics ---------------------------------------------------------

def _served_common_name(b: SecureBroker, certs: Certs) -> str:
    ctx = ssl.create_default_context(cafile=str(certs.ca_file))
    with socket.create_connection(b.listener("SSL"), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            der = tls.getpeercert(binary_form=True)
    cert = x509.load_der_x509_certificate(der)
    return cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value


@pytest.mark.silt_only(reason=SILT_ONLY)
def test_a_changed_certificate_is_served_without_a_restart(secure, certs, topic_name):
    assert _served_common_name(secure, certs) in ("localhost", "localhost-reloaded")
    certs.reissue_server("localhost-reloaded")
    wait_until(lambda: _served_common_name(secure, certs) == "localhost-reloaded", 20, "the reloaded certificate")
    assert secure.log_has("TLS certificate reloaded")
    produce_and_consume(client_conf(secure, certs, "SSL"), topic_name, count=3)


@pytest.mark.silt_only(reason=SILT_ONLY)
def test_authentications_are_counted_by_mechanism_listener_and_result(secure, certs):
    auth_error(client_conf(secure, certs, "SASL_PLAINTEXT", ("alice", "nope"), "PLAIN"))
    AdminClient(client_conf(secure, certs, "SASL_PLAINTEXT", ("alice", "alice-secret"), "PLAIN")).list_topics(timeout=CLIENT_TIMEOUT_S)
    AdminClient(client_conf(secure, certs, "MTLS", client_cert=True)).list_topics(timeout=CLIENT_TIMEOUT_S)
    _, _, body = secure.http_get("/metrics")
    samples = {(n, frozenset(re.findall(r'(\w+)="([^"]*)"', labels or ""))): v
               for n, labels, v in parse_prometheus(body.decode())}

    def value(mechanism, listener, result):
        labels = frozenset({("mechanism", mechanism), ("listener", listener), ("result", result)})
        return samples.get(("silt_authentication_total", labels), 0)
    assert value("PLAIN", "SASL_PLAINTEXT", "success") >= 1, samples
    assert value("PLAIN", "SASL_PLAINTEXT", "failure") >= 1
    assert value("SSL", "MTLS", "success") >= 1


# -- raw SASL requests ---------------------------------------------------------------------

def sasl_handshake(conn: RawConnection, mechanism: str, version: int = 1) -> tuple[int, list[str]]:
    r = conn.request(SASL_HANDSHAKE, version, Writer().string(mechanism).bytes())
    error = r.int16()
    return error, [r.string() for _ in range(r.int32())]


def sasl_authenticate(conn: RawConnection, token: bytes) -> tuple[int, str]:
    """SaslAuthenticate v1: the error code and message (the connection may close after)."""
    r = conn.request(SASL_AUTHENTICATE, 1, Writer().bytes_(token).bytes())
    error = r.int16()
    return error, r.string() or ""


def test_sasl_requests_outside_a_sasl_listener_are_illegal_state(broker):
    with RawConnection(broker.kafka_addr) as conn:
        error, _ = sasl_handshake(conn, "PLAIN")
        assert error == ILLEGAL_SASL_STATE
