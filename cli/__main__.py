"""``python -m ringsim.cli …`` runs the command line (the same as the ``ringsim`` script)."""
from ringsim.cli import main

main()
