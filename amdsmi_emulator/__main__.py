"""``python -m amdsmi_emulator``: run the fake amd-smi (see cli.py)."""

import sys

from .cli import main

sys.exit(main())
