import sys

from cellinr.cli import main

sys.exit(main())
