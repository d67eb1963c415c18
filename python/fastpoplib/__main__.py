import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while still importing: quietly, as later on
    sys.exit(130)

sys.exit(main())
