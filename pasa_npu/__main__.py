"""``python -m pasa_npu`` is ``pasa-verify``."""
from .cli import main

raise SystemExit(main())
