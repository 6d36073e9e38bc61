"""``python -m pasa_npu`` (and ``make demo``) is ``pasa-verify``: without arguments, the reference
script's default case, with a legend of the table's columns and a one-line conclusion."""

from .cli import main

raise SystemExit(main())
