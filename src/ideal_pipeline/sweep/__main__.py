import sys

from ideal_pipeline.sweep.cli import main

sys.exit(main())
