"""
Tests for the daemons' options (L{bugzfeed.tap}, L{bugzfeed.shimtap}) and
the twistd plugins.
"""

import io
from contextlib import redirect_stdout
from zoneinfo import ZoneInfo

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from bugzfeed import __version__, shimtap, tap
from bugzfeed.config import parseDuration, redactDSN, redactURL


def serverConfig(argv, environ=None):
    options = tap.Options(environ=environ or {})
    options.parseOptions(argv)
    return options.config


def shimConfig(argv, environ=None):
    options = shimtap.Options(environ=environ or {})
    options.parseOptions(argv)
    return options.config


class ServerOptionsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """
        The defaults serve / and /dev/ as the original service did, on port
        8844, with a day of history.
        """
        config = serverConfig([])
        self.assertEqual(config, tap.ServerConfig())
        self.assertEqual(
            config.feeds,
            (("/", "exchange/bugzilla/simple"), ("/dev/", "exchange/bugzilla/simple/dev")),
        )
        self.assertEqual(
            (config.listen, config.history, config.historyCount), ("tcp:8844", 86400, 100000)
        )

    def test_admin(self) -> None:
        """
        C{--admin} (or C{BUGZFEED_ADMIN}) gives health and metrics a
        listener of their own; by default they share C{--listen}'s.
        """
        self.assertIsNone(serverConfig([]).admin)
        self.assertEqual(serverConfig(["--admin", "tcp:9100"]).admin, "tcp:9100")
        self.assertEqual(serverConfig([], {"BUGZFEED_ADMIN": "tcp:9100"}).admin, "tcp:9100")

    def test_versionIsBugzfeeds(self) -> None:
        """
        C{--version} of either daemon prints Bugzfeed's version, not Twisted's.
        """
        for options in [tap.Options(), shimtap.Options()]:
            out = io.StringIO()
            with redirect_stdout(out):
                self.assertRaises(SystemExit, options.parseOptions, ["--version"])
            self.assertEqual(out.getvalue(), f"bugzfeed {__version__}\n")

    def test_heartbeatIsADurationInWholeSeconds(self) -> None:
        """
        C{--heartbeat} reads like every other duration, in whole seconds.
        """
        for given, seconds in [("30", 30), ("30s", 30), ("1m", 60), ("0", 0)]:
            self.assertEqual(serverConfig(["--heartbeat", given]).heartbeat, seconds)
            self.assertEqual(shimConfig(["--heartbeat", given]).heartbeat, seconds)
        error = self.assertRaises(UsageError, serverConfig, ["--heartbeat", "2.5s"])
        self.assertIn("whole seconds", str(error))

    def test_feedsReplaceDefaults(self) -> None:
        """
        Giving any C{--feed} replaces the defaults.
        """
        config = serverConfig(["--feed", "/a=ex/a", "--feed", "/b/=ex/b"])
        self.assertEqual(config.feeds, (("/a/", "ex/a"), ("/b/", "ex/b")))

    def test_environment(self) -> None:
        """
        C{BUGZFEED_*} variables set options; the command line wins.
        """
        environ = {
            "BUGZFEED_LISTEN": "tcp:9000",
            "BUGZFEED_HISTORY": "2h",
            "BUGZFEED_FEED": "/x/=ex/x /y/=ex/y",
        }
        config = serverConfig(["--listen", "tcp:9001"], environ)
        self.assertEqual((config.listen, config.history), ("tcp:9001", 7200))
        self.assertEqual(config.feeds, (("/x/", "ex/x"), ("/y/", "ex/y")))

    def test_badValues(self) -> None:
        """
        Bad values are refused with a message naming the option.
        """
        for argv, word in [
            (["--feed", "nopath"], "--feed"),
            (["--feed", "/a=x", "--feed", "/a/=y"], "--feed"),
            (["--history", "soon"], "--history"),
            (["--heartbeat", "-1"], "--heartbeat"),
            (["--heartbeat", "soon"], "--heartbeat"),
            (["--amqp", "http://x/"], "--amqp"),
            (["--max-message-size", "10"], "--max-message-size"),
            (["--listen", "garbage"], "--listen"),
            (["--listen", "tcp:99999"], "--listen"),
            (["--heartbeat", "70000"], "--heartbeat"),
            (["--history", "8d"], "--history"),
            (["--feed", "/a=amq.topic"], "--feed"),
            (["--feed", "/a=" + "x" * 250], "--feed"),
            (["--amqp", "amqp://u:p@[::1/"], "--amqp"),
            (["--admin", "garbage"], "--admin"),
            (["--admin", "tcp:70000"], "--admin"),
            (["--handshake-timeout", "0"], "--handshake-timeout"),
        ]:
            error = self.assertRaises(UsageError, serverConfig, argv)
            self.assertIn(word, str(error))


class ShimOptionsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """
        The shim reads C{push_notify} of C{dbname=bugs} every second into
        C{exchange/bugzilla/simple}, in UTC.
        """
        config = shimConfig([])
        self.assertEqual(
            (
                config.database,
                config.table,
                config.exchange,
                config.pollInterval,
                config.dbTimezone,
            ),
            ("dbname=bugs", "push_notify", "exchange/bugzilla/simple", 1.0, ZoneInfo("UTC")),
        )
        self.assertFalse(config.installTrigger)
        self.assertIsNone(config.admin)
        self.assertEqual(shimConfig(["--admin", "tcp:9101"]).admin, "tcp:9101")

    def test_values(self) -> None:
        """
        Options and environment reach the config.
        """
        config = shimConfig(
            ["--table", "bugs.push_notify", "--install-trigger", "--db-timezone", "Europe/Berlin"],
            {"BUGZFEED_POLL_INTERVAL": "250", "BUGZFEED_DATABASE": "dbname=x"},
        )
        self.assertEqual(
            (
                config.table,
                config.installTrigger,
                config.dbTimezone,
                config.pollInterval,
                config.database,
            ),
            ("bugs.push_notify", True, ZoneInfo("Europe/Berlin"), 250.0, "dbname=x"),
        )

    def test_badValues(self) -> None:
        """
        Bad values are refused with a message naming the option.
        """
        for argv, word in [
            (["--table", "push_notify; DROP TABLE bugs"], "--table"),
            (["--db-timezone", "Mars/Olympus"], "--db-timezone"),
            (["--poll-interval", "0"], "--poll-interval"),
            (["--batch-size", "0"], "--batch-size"),
            (["--exchange", " "], "--exchange"),
            (["--exchange", "x" * 250], "--exchange"),
            (["--database", "garbage"], "--database"),
            (["--database", "host=x port"], "--database"),
            (["--heartbeat", "65536"], "--heartbeat"),
            (["--admin", "garbage"], "--admin"),
        ]:
            error = self.assertRaises(UsageError, shimConfig, argv)
            self.assertIn(word, str(error))


class HelperTests(SynchronousTestCase):
    def test_parseDuration(self) -> None:
        """
        Durations take s, m, h and d suffixes, or none for seconds.
        """
        self.assertEqual(
            [parseDuration(text) for text in ["30", "1.5s", "15m", "24h", "7d", "7D"]],
            [30, 1.5, 900, 86400, 604800, 604800],
        )
        for bad in ["", "h", "-1s", "1w", "1 day"]:
            self.assertRaises(ValueError, parseDuration, bad)

    def test_redaction(self) -> None:
        """
        Passwords never reach logs.
        """
        self.assertEqual(redactURL("amqp://u:secret@h:5672/v"), "amqp://u:***@h:5672/v")
        self.assertEqual(redactURL("amqp://h/"), "amqp://h/")
        self.assertEqual(
            redactDSN("host=h password=secret dbname=x"), "host=h password=*** dbname=x"
        )
        self.assertEqual(redactDSN("password='a b' dbname=x"), "password=*** dbname=x")
        self.assertEqual(redactDSN("postgresql://u:secret@h/db"), "postgresql://u:***@h/db")


class PluginTests(SynchronousTestCase):
    def test_pluginsDiscovered(self) -> None:
        """
        twistd finds both plugins.
        """
        makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
        self.assertIs(makers["bugzfeed"].options, tap.Options)
        self.assertIs(makers["bugzfeed-shim"].options, shimtap.Options)
