"""
Tests for L{bugzfeed.messages}: every command and every error.
"""

import json
from datetime import datetime
from typing import Any, Dict, List

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from bugzfeed import __version__
from bugzfeed.limits import ClientLimits
from bugzfeed.messages import INVALID_AFTER, INVALID_EPOCH, SINCE_AND_AFTER, answer
from bugzfeed.model import BugUpdate
from tests.fakes import RecordingSubscriber, makeFeed


class AnswerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(datetime(2014, 4, 4).timestamp())
        self.feed = makeFeed(self.clock)
        self.subscriber = RecordingSubscriber()
        self.limits = ClientLimits()

    def send(self, message: Any, isBinary: bool = False) -> List[Dict[str, Any]]:
        """
        @return: The reply and the updates that follow it, decoded.
        """
        payload = message if isinstance(message, bytes) else json.dumps(message).encode()
        result = answer(payload, isBinary, self.subscriber, self.feed, self.limits)
        if isinstance(result, Deferred):
            result = self.successResultOf(result)
        frames = [result.reply] + [update.toJSON() for update in result.updates]
        return [json.loads(frame) for frame in frames]

    def assertError(self, message: Any, command: Any, error: str, isBinary: bool = False) -> None:
        self.assertEqual(
            self.send(message, isBinary), [{"command": command, "result": "error", "error": error}]
        )

    def test_subscribeRepliesWithAllBugsSorted(self) -> None:
        """
        C{subscribe} answers C{ok} with every bug the connection now holds,
        sorted, and registers them.
        """
        self.send({"command": "subscribe", "bugs": [30, 10]})
        self.assertEqual(
            self.send({"command": "subscribe", "bugs": [20]}),
            [{"command": "subscribe", "result": "ok", "bugs": [10, 20, 30]}],
        )
        self.assertEqual(self.feed.registry.subscriptions(self.subscriber), [10, 20, 30])

    def test_bugsForms(self) -> None:
        """
        C{bugs} may be a list, one number, or a numeric string, as existing
        clients send.
        """
        for bugs, expected in [
            ([1, "2"], [1, 2]),
            (3, [1, 2, 3]),
            ("4", [1, 2, 3, 4]),
            (" 5 ", [1, 2, 3, 4, 5]),
        ]:
            self.assertEqual(self.send({"command": "subscribe", "bugs": bugs})[0]["bugs"], expected)

    def test_invalidBugIds(self) -> None:
        """
        A bug id that is not an integer gets the original error text, and
        nothing is subscribed.
        """
        for bad in [
            None,
            True,
            "abc",
            1.5,
            {"a": 1},
            [[1]],
            "",
            "1.5",
            float("nan"),
            "1" + "0" * 5000,
            "\u0661",
            "+5",
        ]:
            self.assertError(
                {"command": "subscribe", "bugs": [5, bad]},
                "subscribe",
                "invalid bug id; must be integer",
            )
        self.assertEqual(self.feed.registry.subscriberCount, 0)

    def test_bugIdsOutOfRange(self) -> None:
        """
        Ids must be positive and below 2**31.
        """
        for bad in [0, -1, 2**31, 10**30]:
            reply = self.send({"command": "subscribe", "bugs": bad})[0]
            self.assertEqual(
                (reply["result"], reply["error"].startswith("invalid bug id")), ("error", True)
            )
        self.assertEqual(
            self.send({"command": "subscribe", "bugs": 2**31 - 1})[0]["bugs"], [2**31 - 1]
        )

    def test_missingBugs(self) -> None:
        """
        C{subscribe} and C{unsubscribe} without C{bugs} say so.
        """
        for command in ["subscribe", "unsubscribe"]:
            self.assertError({"command": command}, command, "missing mandatory arg: 'bugs'")

    def test_unsubscribe(self) -> None:
        """
        C{unsubscribe} answers with the bugs left; a bug not held is fine.
        """
        self.send({"command": "subscribe", "bugs": [1, 2, 3]})
        self.assertEqual(
            self.send({"command": "unsubscribe", "bugs": "2"}),
            [{"command": "unsubscribe", "result": "ok", "bugs": [1, 3]}],
        )
        self.assertEqual(self.send({"command": "unsubscribe", "bugs": [99]})[0]["bugs"], [1, 3])
        self.assertEqual(self.feed.registry.subscribers(2), set())

    def test_subscriptions(self) -> None:
        """
        C{subscriptions} lists what the connection holds.
        """
        self.assertEqual(
            self.send({"command": "subscriptions"}),
            [{"command": "subscriptions", "result": "ok", "bugs": []}],
        )
        self.send({"command": "subscribe", "bugs": [8, 7]})
        self.assertEqual(self.send({"command": "subscriptions"})[0]["bugs"], [7, 8])

    def test_version(self) -> None:
        """
        C{version} answers with the package version (and, since resumes
        exist, what C{hello} tells).
        """
        [reply] = self.send({"command": "version"})
        self.assertEqual(
            (reply["command"], reply["result"], reply["version"]), ("version", "ok", __version__)
        )

    def test_unknownCommand(self) -> None:
        """
        An unknown command is echoed with C{invalid command}; a command that
        is not a string is echoed as null.
        """
        self.assertError({"command": "frobnicate"}, "frobnicate", "invalid command")
        self.assertError({"command": 5}, None, "invalid command")
        self.assertError({"command": ["subscribe"]}, None, "invalid command")

    def test_badFrames(self) -> None:
        """
        Frames that are not a JSON object with a command get an error with a
        null command.
        """
        for frame in [b"not json", b"\xff\xfe", b"[1, 2]", b'"subscribe"', b"null", b"[" * 100000]:
            reply = self.send(frame)
            self.assertEqual((reply[0]["command"], reply[0]["result"]), (None, "error"))
        self.assertError({"bugs": [1]}, None, "missing mandatory arg: 'command'")
        self.assertError(
            b'{"command": "subscribe", "bugs": [' + b"9" * 5000 + b"]}",
            None,
            "invalid message; a number has more than 4300 digits",
        )
        self.assertError(
            b'{"command": "version"}',
            None,
            "invalid message; binary frames are not supported",
            isBinary=True,
        )

    def test_sinceSendsRememberedUpdatesOldestFirst(self) -> None:
        """
        With C{since}, the reply is followed by the newest remembered update
        of each requested bug changed at or after that time, oldest first.
        """
        for bug, hour, seq in [(1, 3, 10), (2, 1, 11), (1, 1, 12), (3, 2, 13), (1, 0, 14)]:
            self.feed.receive(BugUpdate(bug, datetime(2014, 4, 3, hour), seq))
        frames = self.send({"command": "subscribe", "bugs": [1, 2], "since": "2014-04-03T01:00:00"})
        self.assertEqual(frames[0], {"command": "subscribe", "result": "ok", "bugs": [1, 2]})
        self.assertEqual(
            [(f["bug"], f["when"], f["seq"]) for f in frames[1:]],
            [(2, "2014-04-03T01:00:00", 11), (1, "2014-04-03T01:00:00", 12)],
        )

    def test_sinceWithZoneIsConvertedToUTC(self) -> None:
        """
        A C{since} with a zone is compared in UTC.
        """
        self.feed.receive(BugUpdate(1, datetime(2014, 4, 3, 10), 1))
        frames = self.send(
            {"command": "subscribe", "bugs": [1], "since": "2014-04-03T11:00:00+02:00"}
        )
        self.assertEqual(len(frames), 2)
        frames = self.send(
            {"command": "subscribe", "bugs": [1], "since": "2014-04-03T11:00:00+00:00"}
        )
        self.assertEqual(len(frames), 1)

    def test_emptySinceMeansNoCatchUp(self) -> None:
        """
        An empty or null C{since} sends the reply alone.
        """
        self.feed.receive(BugUpdate(1, datetime(2014, 4, 3, 10), 1))
        for since in ["", None]:
            self.assertEqual(
                len(self.send({"command": "subscribe", "bugs": [1], "since": since})), 1
            )

    def test_invalidSince(self) -> None:
        """
        A C{since} that is not a date is an error, and subscribes nothing.
        """
        for since in [
            "yesterday",
            5,
            ["2014-04-03"],
            "2014-13-01T00:00:00",
            "0001-01-01T00:00:00+14:00",
            "9999-12-31T23:59:59-14:00",
        ]:
            reply = self.send({"command": "subscribe", "bugs": [1], "since": since})
            self.assertEqual(reply[0]["result"], "error")
            self.assertIn("since", reply[0]["error"])
        self.assertEqual(self.feed.registry.subscriberCount, 0)


class ResumeTests(SynchronousTestCase):
    """
    C{subscribe} with C{after}: exact resumes, and when they cannot be.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(datetime(2014, 4, 4).timestamp())
        self.feed = makeFeed(self.clock, maxCount=4)
        self.feed.epoch = "epoch-1"
        self.subscriber = RecordingSubscriber()
        self.limits = ClientLimits(maxSubscriptions=5, resumeTimeout=10)
        for seq, bug in [(10, 1), (11, 2), (12, 1), (13, 3)]:
            self.feed.receive(BugUpdate(bug, datetime(2014, 4, 3, 12, 0, seq), seq))
        self.feed.markCaughtUp()

    def answer(self, message: Dict[str, Any]) -> Any:
        return answer(json.dumps(message).encode(), False, self.subscriber, self.feed, self.limits)

    def send(self, message: Dict[str, Any]) -> List[Dict[str, Any]]:
        result = self.answer(message)
        if isinstance(result, Deferred):
            result = self.successResultOf(result)
        frames = [result.reply] + [update.toJSON() for update in result.updates]
        return [json.loads(frame) for frame in frames]

    def test_replaysEveryUpdateAfterTheCursorInOrder(self) -> None:
        """
        The reply says C{recovered: true} with the epoch, then the newest
        update of each requested bug changed after the cursor follows, in
        C{seq} order.
        """
        frames = self.send({"command": "subscribe", "bugs": [1, 3], "after": 10})
        self.assertEqual(
            frames[0],
            {
                "command": "subscribe",
                "result": "ok",
                "bugs": [1, 3],
                "recovered": True,
                "epoch": "epoch-1",
            },
        )
        self.assertEqual([(f["bug"], f["seq"]) for f in frames[1:]], [(1, 12), (3, 13)])
        self.assertEqual(self.feed.registry.subscriptions(self.subscriber), [1, 3])

    def test_cursorAtTheEndReplaysNothing(self) -> None:
        frames = self.send({"command": "subscribe", "bugs": [1], "after": 13, "epoch": "epoch-1"})
        self.assertEqual((frames[0]["recovered"], frames[1:]), (True, []))

    def test_noGapNoDuplicateAcrossTheSwitchToLive(self) -> None:
        """
        An update that arrives right after the resume is pushed live, once;
        the replay ended just before it, with the bug's newest update (12,
        which supersedes 10).
        """
        frames = self.send({"command": "subscribe", "bugs": [1], "after": 9})
        self.feed.receive(BugUpdate(1, datetime(2014, 4, 3, 12, 1), 14))
        seqs = [f["seq"] for f in frames[1:]] + [m["seq"] for m in self.subscriber.messages]
        self.assertEqual(seqs, [12, 14])

    def test_cursorOlderThanHistoryIsNotRecovered(self) -> None:
        """
        A cursor from before what the node remembers gets C{recovered:
        false} with a reason, and the subscription still holds.
        """
        self.feed.receive(BugUpdate(4, datetime(2014, 4, 3, 12, 1), 14))  # forgets seq 10
        [reply] = self.send({"command": "subscribe", "bugs": [1], "after": 8})
        self.assertEqual((reply["result"], reply["recovered"]), ("ok", False))
        self.assertIn("older than this node can replay", reply["reason"])
        self.assertEqual(reply["bugs"], [1])
        self.assertTrue(
            self.send({"command": "subscribe", "bugs": [1], "after": 10})[0]["recovered"]
        )

    def test_otherEpochIsNotRecovered(self) -> None:
        [reply] = self.send({"command": "subscribe", "bugs": [1], "after": 11, "epoch": "old"})
        self.assertEqual((reply["recovered"], reply["epoch"]), (False, "epoch-1"))
        self.assertIn("recreated", reply["reason"])

    def test_cursorFromTheFutureIsAnError(self) -> None:
        [reply] = self.send({"command": "subscribe", "bugs": [1], "after": 14})
        self.assertEqual(reply["result"], "error")
        self.assertIn("beyond the latest seq (13)", reply["error"])
        self.assertEqual(self.feed.registry.subscriptions(self.subscriber), [])

    def test_emptyFeedNamesNoNone(self) -> None:
        """
        On a feed whose stream holds nothing yet, a resume is told so in
        words, not with a missing seq or epoch.
        """
        empty = makeFeed(self.clock, maxCount=4)
        empty.markCaughtUp()
        for message, field, text in [
            ({"after": 0}, "error", "invalid after; this feed has no updates yet"),
            (
                {"after": 0, "epoch": "epoch-1"},
                "reason",
                "the feed's stream was recreated and has no updates yet",
            ),
        ]:
            request = {"command": "subscribe", "bugs": [1], **message}
            result = answer(
                json.dumps(request).encode(), False, self.subscriber, empty, self.limits
            )
            reply = json.loads(result.reply)
            self.assertEqual(reply[field], text)

    def test_badCursors(self) -> None:
        for after in ["10", -1, 1.5, True, [1], {"seq": 1}, 2**63]:
            [reply] = self.send({"command": "subscribe", "bugs": [1], "after": after})
            self.assertEqual(reply["error"], INVALID_AFTER, after)
        [reply] = self.send({"command": "subscribe", "bugs": [1], "after": 1, "epoch": 5})
        self.assertEqual(reply["error"], INVALID_EPOCH)
        [reply] = self.send(
            {"command": "subscribe", "bugs": [1], "after": 11, "since": "2014-04-03T00:00:00"}
        )
        self.assertEqual(reply["error"], SINCE_AND_AFTER)

    def test_waitsForTheNodeToCatchUp(self) -> None:
        """
        While the node has not read its stream to the end, a resume waits,
        then replays what the node read meanwhile.
        """
        self.feed.markBehind()
        d = self.answer({"command": "subscribe", "bugs": [1], "after": 12})
        self.assertNoResult(d)
        self.feed.remember(BugUpdate(1, datetime(2014, 4, 3, 12, 2), 20))
        self.feed.markCaughtUp()
        result = self.successResultOf(d)
        self.assertTrue(json.loads(result.reply)["recovered"])
        self.assertEqual([u.seq for u in result.updates], [20])

    def test_waitingTooLongIsNotRecovered(self) -> None:
        self.feed.markBehind()
        d = self.answer({"command": "subscribe", "bugs": [1], "after": 12})
        self.clock.advance(10)
        reply = json.loads(self.successResultOf(d).reply)
        self.assertEqual((reply["recovered"], reply["bugs"]), (False, [1]))
        self.assertIn("still reading its stream", reply["reason"])

    def test_tooManySubscriptions(self) -> None:
        """
        Holding more than C{maxSubscriptions} bugs is refused as a whole;
        bugs already held do not count twice.
        """
        self.send({"command": "subscribe", "bugs": [1, 2, 3, 4]})
        self.assertEqual(self.send({"command": "subscribe", "bugs": [1, 5]})[0]["result"], "ok")
        [reply] = self.send({"command": "subscribe", "bugs": [6]})
        self.assertEqual(reply["error"], "too many subscriptions; at most 5 bugs per connection")
        self.assertEqual(self.feed.registry.heldCount(self.subscriber), 5)

    def test_hello(self) -> None:
        """
        C{hello} tells the epoch, the replayable range and the limits.
        """
        [reply] = self.send({"command": "hello"})
        self.assertEqual(
            reply,
            {
                "command": "hello",
                "result": "ok",
                "version": __version__,
                "epoch": "epoch-1",
                "oldest": 10,
                "latest": 13,
                "limits": self.limits.announce(),
            },
        )
