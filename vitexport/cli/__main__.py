"""``python -m vitexport.cli``: the same as the ``vitexport`` command."""

from vitexport.cli import main

main()
