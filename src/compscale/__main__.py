"""``python -m compscale`` (and ``torchrun -m compscale``) run the command-line tool."""

from compscale.cli import main

raise SystemExit(main())
