"""`python -m gateway` runs the sealgate command."""

import sys

from gateway.cli import main

sys.exit(main())
