from setuptools import find_packages, setup

setup(
    name="bugzfeed",
    version="0.1.0",
    description="Push notifications of bug changes over WebSockets",
    packages=find_packages(exclude=["tests", "tests.*"]) + ["twisted.plugins"],
    package_data={"bugzfeed": ["amqp0-9-1.xml", "static/*"]},
    python_requires=">=3.11",
    install_requires=[
        "twisted[tls]>=23.10",
        "autobahn>=23.1",
        "txamqp>=0.8.2",
        "txpostgres>=1.7.0",
        "psycopg2-binary>=2.9",
        "attrs>=22.2",
        "zope.interface",
        "prometheus-client>=0.17",
        "sdnotify>=0.3.2",
    ],
    entry_points={"console_scripts": ["bugzfeed-watch = bugzfeed.watch:run"]},
    extras_require={
        "test": ["hypothesis>=6", "mypy>=1.8", "mypy-zope>=1.0", "ruff>=0.4", "selenium>=4.10"],
        # bench/run: baseline B, the server's CPU and memory, profilers.
        "bench": ["websockets>=12", "psutil>=5.9", "py-spy>=0.3", "pyinstrument>=4"],
    },
)
