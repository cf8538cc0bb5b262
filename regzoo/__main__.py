"""`python -m regzoo ...`: the same command line as the `regzoo` console script."""

import sys

from regzoo.studies.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
