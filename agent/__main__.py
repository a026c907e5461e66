"""`python3 -m agent …`: the same as the `clarity-agent` command."""

from agent.cli import main

raise SystemExit(main())
