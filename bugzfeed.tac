"""
Run the server with C{twistd -ny bugzfeed.tac}, configured from BUGZFEED_*
environment variables; the same wiring as C{twistd bugzfeed}.
"""

from twisted.application.service import Application

from bugzfeed.tap import Options, makeService

options = Options()
options.parseOptions([])
application = Application("bugzfeed")
makeService(options).setServiceParent(application)
