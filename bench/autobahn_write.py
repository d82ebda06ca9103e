"""
For comparison only: C{twistd bugzfeed} writing updates the way it did
before L{bugzfeed.wire}, through Autobahn's C{sendMessage} once per
subscriber (framed per subscriber, then C{transport.write}, so a reactor
turn and an epoll register and unregister per delivery).

Run as C{autobahn_write.py <twistd arguments>}; C{bench/run --servers
bugzfeed,bugzfeed_autobahn,...} measures it beside the real server, so the
write path's saving is read from one run.  Nothing in the package changes.
"""

from __future__ import annotations

import sys

from bugzfeed.protocol import FeedServerProtocol


def main() -> None:
    # Each connection's outbox takes this method when the connection opens.
    FeedServerProtocol._sendUpdateFrame = FeedServerProtocol._sendToClient  # type: ignore[method-assign]
    from twisted.scripts.twistd import run

    sys.argv = ["twistd"] + sys.argv[1:]
    run()


if __name__ == "__main__":
    main()
