"""
Bugzfeed's tests: unit tests (no network) and integration tests against the
real PostgreSQL, RabbitMQ and twistd processes (L{tests.test_integration}).
"""
