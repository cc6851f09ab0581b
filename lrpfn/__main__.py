"""`python -m lrpfn`: the command line (see `lrpfn.cli`)."""

from .cli import main

raise SystemExit(main())
