"""``python -m snncka.cli`` (what ``torchrun ... -m snncka.cli train`` runs)."""

from . import main

main()
