import sys

if __name__ == "__main__":  # also importable (stubtest, docs) without running the CLI
    try:
        from .cli import main
    except KeyboardInterrupt:  # Ctrl-C while still importing: quietly, as later on
        sys.exit(130)
    sys.exit(main())
