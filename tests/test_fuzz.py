"""
Fuzzing the command handler and the wire protocol with hypothesis: every
input gets a reply or a defined close, and nothing raises.
"""

import json
from datetime import datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from bugzfeed.limits import ClientLimits
from bugzfeed.messages import Answer, answer
from bugzfeed.model import BugUpdate
from tests.fakes import RecordingSubscriber, makeFeed

COMMANDS = ["subscribe", "unsubscribe", "subscriptions", "version", "hello"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["1", " 7 ", "2014-04-03T21:13:45", "2014-04-03", "-1", "1e9", ""]),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.text(max_size=10), children, max_size=5),
    ),
    max_leaves=20,
)
requests = st.dictionaries(
    st.sampled_from(["command", "bugs", "since", "after", "epoch", "extra"]) | st.text(max_size=8),
    values,
    max_size=6,
).map(lambda d: d)
commands = st.builds(
    lambda command, rest: {"command": command, **rest},
    st.sampled_from(COMMANDS) | values,
    requests,
)


class FuzzAnswerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(datetime(2014, 4, 4).timestamp())
        self.feed = makeFeed(self.clock)
        for seq in range(5):
            self.feed.receive(BugUpdate(seq + 1, datetime(2014, 4, 3), seq))
        self.feed.markCaughtUp()
        self.limits = ClientLimits(maxSubscriptions=50)

    def check(self, payload: bytes, isBinary: bool = False) -> None:
        subscriber = RecordingSubscriber()
        result: Any = answer(payload, isBinary, subscriber, self.feed, self.limits)
        if isinstance(result, Deferred):
            result = self.successResultOf(result)
        self.assertIsInstance(result, Answer)
        reply = json.loads(result.reply)
        self.assertIn(reply["result"], ("ok", "error"))
        if reply["result"] == "error":
            self.assertIsInstance(reply["error"], str)
            self.assertEqual(result.updates, ())
        self.assertLessEqual(self.feed.registry.heldCount(subscriber), 50)
        self.feed.registry.unsubscribeAll(subscriber)

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(commands)
    def test_anyCommandGetsAReply(self, request: Any) -> None:
        self.check(json.dumps(request).encode())

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=200), st.booleans())
    def test_anyBytesGetAReply(self, payload: bytes, isBinary: bool) -> None:
        self.check(payload, isBinary)

    def test_pathologicalDocuments(self) -> None:
        """
        Deep nesting, huge numbers and non-finite floats are answered too.
        """
        for payload in [
            b"[" * 100000 + b"]" * 100000,
            b'{"command": "subscribe", "bugs": [' + b"9" * 5000 + b"]}",
            b'{"command": "subscribe", "bugs": [1], "after": NaN}',
            b'{"command": "subscribe", "bugs": [1], "after": Infinity}',
            b'{"command": "subscribe", "bugs": [1], "after": 1e400}',
            b'{"command": "subscribe", "bugs": {"a": {"b": {}}}}',
            b'{"command": "subscribe", "bugs": [1], "since": "9999-12-31T23:59:59-23:59"}',
            b'{"command": "hello", "command": "version"}',
            '{"command": "\ud800"}'.encode("utf-8", "surrogatepass"),
        ]:
            self.check(payload)
