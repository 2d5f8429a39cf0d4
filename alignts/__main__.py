import sys

from alignts.cli import main

sys.exit(main())
