"""``python -m pasa_npu.figures`` (see :func:`pasa_npu.figures.main`)."""

import sys

from . import main

sys.exit(main())
