"""``python -m mghft ...`` (also what ``torchrun -m mghft train ...`` runs)."""

from mghft.cli import main

raise SystemExit(main())
