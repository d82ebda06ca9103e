"""
What docs/deploy.md promises, checked against the real services: the
least privileges it lists for PostgreSQL and RabbitMQ are enough, and TLS
through an C{ssl:} endpoint works with C{bugzfeed-watch --cafile}.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import uuid
from typing import Any, List

import psycopg2
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks

from bugzfeed.watch import WatchOptions, makeWatcher
from tests.integration import (
    AMQP_URL,
    PG_HOST,
    PG_USER,
    TEST_DATABASE,
    rabbitmqctl,
    waitFor,
)
from tests.test_integration import ServiceTestCase, iso, when

#: The permissions docs/deploy.md gives, as (configure, write, read).
SERVER_PERMISSIONS = (
    r"^(exchange/bugzilla/.*|bugzfeed\..*)$",
    r"^bugzfeed\..*$",
    r"^(exchange/bugzilla/.*|bugzfeed\..*)$",
)
SHIM_PERMISSIONS = (r"^exchange/bugzilla/.*$", r"^exchange/bugzilla/.*$", r"^$")


class LeastPrivilegeTests(ServiceTestCase):
    def documentedExchange(self) -> str:
        """
        @return: An exchange under C{exchange/bugzilla/}, which the
            documented permissions cover; deleted after the test.
        """
        self.exchange("unused")
        exchange = f"exchange/bugzilla/test-{self.suffix}"
        self._exchanges.append(exchange)
        return exchange

    @inlineCallbacks
    def brokerUser(self, name: str, permissions: Any) -> Any:
        """
        @return: An AMQP URL for a new broker user with C{permissions} on
            vhost C{/}; the user is deleted after the test.
        """
        user, password = f"{name}-{self.suffix}", uuid.uuid4().hex
        yield rabbitmqctl("add_user", user, password)
        self.addCleanup(rabbitmqctl, "delete_user", user)
        yield rabbitmqctl("set_permissions", "-p", "/", user, *permissions)
        host = AMQP_URL.split("@", 1)[1]
        return f"amqp://{user}:{password}@{host}"

    def shimRole(self, table: str, extra: List[str] = []) -> str:
        """
        @return: A DSN for a new PostgreSQL role with the documented grants
            on C{table} (and C{extra} statements); dropped after the test.
        """
        role = f"bugzfeed_shim_{self.suffix}"
        admin = psycopg2.connect(host=PG_HOST, user=PG_USER, dbname=TEST_DATABASE)
        admin.autocommit = True

        def run(*statements: str) -> None:
            with admin.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)

        run(
            f"CREATE ROLE {role} LOGIN",
            f"GRANT CONNECT ON DATABASE {TEST_DATABASE} TO {role}",
            f"GRANT USAGE ON SCHEMA public TO {role}",
            f"GRANT SELECT, DELETE ON {table} TO {role}",
            *[statement.format(role=role, table=table) for statement in extra],
        )

        def drop() -> None:
            # Ends the shim's sessions too, if a test left one behind.
            run(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'",
                f"DROP OWNED BY {role} CASCADE",
                f"DROP ROLE {role}",
            )
            admin.close()

        self.addCleanup(drop)
        return f"host={PG_HOST} user={role} dbname={TEST_DATABASE}"

    @inlineCallbacks
    def deliverOneRow(self, extra: List[str], trigger: bool) -> Any:
        exchange = self.documentedExchange()
        database = self.database()
        serverURL = yield self.brokerUser("bugzfeed", SERVER_PERMISSIONS)
        shimURL = yield self.brokerUser("bugzfeed-shim", SHIM_PERMISSIONS)
        port = yield self.startServer([("/", exchange)], amqp=serverURL)
        self.startShim(
            database,
            exchange,
            trigger=trigger,
            amqp=shimURL,
            dsn=self.shimRole(database.table, extra),
        )
        client = yield self.client(port)
        yield client.command({"command": "subscribe", "bugs": [8301]})
        database.insert(8301, when(1))
        update = yield self.nextUpdate(client, 8301)
        self.assertEqual(update["when"], iso(when(1)))
        yield waitFor(lambda: database.count() == 0, what="the row to be deleted")
        return database

    def test_documentedGrantsSuffice(self) -> Any:
        """
        A server and a shim with only the documented broker permissions,
        the shim with only SELECT and DELETE on the table, carry a row to a
        client and delete it.
        """
        return self.deliverOneRow([], trigger=False)

    def test_installTriggerNeedsTriggerAndCreate(self) -> Any:
        """
        With C{TRIGGER} on the table and C{CREATE} on the schema as well,
        the shim installs the NOTIFY trigger itself (--install-trigger).
        """
        d = self.deliverOneRow(
            ["GRANT TRIGGER ON {table} TO {role}", "GRANT CREATE ON SCHEMA public TO {role}"],
            trigger=True,
        )

        def check(database: Any) -> None:
            [(count,)] = database.execute(
                "SELECT count(*) FROM pg_trigger WHERE tgname = 'bugzfeed_notify'"
                " AND tgrelid = %s::regclass",
                (database.table,),
            )
            self.assertEqual(count, 1)

        return d.addCallback(check)


def selfSignedCertificate(directory: str) -> Any:
    """
    Write a key and a self-signed certificate for C{localhost}.

    @return: The paths of the key and the certificate.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=365 * 30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    keyPath = os.path.join(directory, "tls.key")
    certificatePath = os.path.join(directory, "tls.crt")
    with open(keyPath, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(certificatePath, "wb") as f:
        f.write(certificate.public_bytes(serialization.Encoding.PEM))
    return keyPath, certificatePath


class TLSTests(ServiceTestCase):
    @inlineCallbacks
    def test_sslEndpointAndWatchCafile(self) -> None:
        """
        The server listening on an C{ssl:} endpoint serves C{wss://}, and
        C{bugzfeed-watch --cafile} trusts its self-signed certificate and
        prints an update.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        keyPath, certificatePath = selfSignedCertificate(directory)
        exchange = self.exchange("simple")
        database = self.database()
        port = yield self.startServer(
            [("/", exchange)],
            listen="ssl:{port}:interface=127.0.0.1"
            f":privateKey={keyPath}:certKey={certificatePath}",
        )
        self.startShim(database, exchange)
        options = WatchOptions()
        options.parseOptions(
            ["--json", "--cafile", certificatePath, f"wss://localhost:{port}/", "8302"]
        )
        out, err = io.StringIO(), io.StringIO()
        watcher = makeWatcher(reactor, options, out, err)
        watcher.start()
        self.addCleanup(lambda: watcher.stop().addTimeout(5, reactor))
        yield waitFor(
            lambda: watcher.subscribed, what="the subscription over TLS: " + err.getvalue()
        )
        database.insert(8302, when(2))
        yield waitFor(lambda: out.getvalue(), what="the update over TLS")
        self.assertEqual(json.loads(out.getvalue())["bug"], 8302)
