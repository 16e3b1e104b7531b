"""``python -m facecurate`` runs the same CLI as the ``facecurate`` script."""

from facecurate.cli import main

main()
