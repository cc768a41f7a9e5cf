"""The test suite, by what a test needs to run:

- unit/     in-process: tiny models the tests build, the engine, parsers, files (seconds each)
- server/   the real web UI server (webui.py) on a free loopback port, spoken to over HTTP
- browser/  headless Chromium (Playwright) against the real server; marked `browser`
- tools/    the command-line tools: launch.py and tools/ (demo model data, training, evaluation)
- support/  helpers the test modules share (servers, tiny models, browser steps); test modules never import each
            other
conftest.py holds the fixtures all of them use (tiny checkpoints, the session's server).
"""
