"""clarity-agent: the program that runs inside a sandbox for one run of a request.

It talks to Clarity only through the side-API (the job's `apiUrl` and `apiToken`), drives
Claude Code headless in a checkout of the request's repository, and hands the work back as
a git bundle (DESIGN.md "Runs: the agent in a sandbox"). It uses the Python standard
library only and imports nothing from `bot` or `storage`: the sandbox image has python3,
git, node and the Claude Code CLI, and `python3 -m agent` must run there as it is.
"""
