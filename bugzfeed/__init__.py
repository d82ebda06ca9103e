"""
Bugzfeed: push notifications of bug changes over WebSockets.

The shim (L{bugzfeed.shim}) moves rows of a tracker's C{push_notify} table
to a RabbitMQ exchange; the server (L{bugzfeed.protocol}) pushes them to
subscribed WebSocket clients.
"""

__version__ = "0.1.0"
