"""
The twistd plugins: C{twistd bugzfeed} and C{twistd bugzfeed-shim}.
"""

from twisted.application.service import ServiceMaker

bugzfeed = ServiceMaker(
    "bugzfeed", "bugzfeed.tap", "Push bug changes to WebSocket clients.", "bugzfeed"
)
bugzfeedShim = ServiceMaker(
    "bugzfeed-shim",
    "bugzfeed.shimtap",
    "Publish push_notify rows from PostgreSQL to RabbitMQ.",
    "bugzfeed-shim",
)
