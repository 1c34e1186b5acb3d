"""``python -m resnetkit.cli`` (torchrun's ``-m resnetkit.cli``) runs the command line."""

import sys

from . import main

sys.exit(main())
