"""``python -m contrastive`` runs the command line."""

from contrastive.cli import main

raise SystemExit(main())
