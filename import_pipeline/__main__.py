"""`python -m import_pipeline`: the `import-pipeline` command, without relying on the script being on PATH."""

import sys

from import_pipeline.cli import main

sys.exit(main())
