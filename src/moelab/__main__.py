"""`python -m moelab …` (also what torchrun runs: `torchrun -m moelab train RUN.yaml`)."""

from moelab.cli import main

raise SystemExit(main())
